// Convolution through cuDNN (its legacy convolution API, deprecated in cuDNN 9 and kept behind
// conv2d_*_cuda so that a move to the graph API changes this file only), the FC layers through cuBLAS,
// and batch norm as our own kernels with the CPU backend's statistics (double accumulation, unbiased
// running variance). Algorithms are chosen once per shape (cudnnFind..., deterministic ones only) and
// cached with their descriptors; the cuDNN workspace grows once to the largest need and is reused.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include "core/cuda_check.h"
#include "core/error.h"
#include "model/cuda/layers_cuda.h"

namespace alexnet {
namespace {

#define CUDNN_OK(expr)                                                                                  \
  do {                                                                                                  \
    cudnnStatus_t st_ = (expr);                                                                         \
    ALEXNET_CHECK(st_ == CUDNN_STATUS_SUCCESS, "cuDNN call ", #expr, " failed: ", cudnnGetErrorString(st_)); \
  } while (0)
#define CUBLAS_OK(expr)                                                                   \
  do {                                                                                    \
    cublasStatus_t st_ = (expr);                                                          \
    ALEXNET_CHECK(st_ == CUBLAS_STATUS_SUCCESS, "cuBLAS call ", #expr, " failed: status ", \
                  static_cast<int>(st_));                                                 \
  } while (0)

constexpr int kThreads = 256;
int blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(b < 1 ? 1 : (b > (int64_t{1} << 30) ? (int64_t{1} << 30) : b));
}
#define FOR_EACH(i, n) \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); i += static_cast<int64_t>(gridDim.x) * blockDim.x)

void launched(const char* op) {
  const cudaError_t err = cudaGetLastError();
  ALEXNET_CHECK(err == cudaSuccess, "", op, ": kernel launch failed: ", cudaGetErrorString(err));
}

void check_f32(const Tensor& t, const char* op, const char* name) {
  ALEXNET_ASSERT(t.device().is_cuda() && t.dtype() == DType::kF32, "", op, ": ", name, " is ", t.describe(),
                 ", expected float32 on a CUDA device");
}

std::mutex g_mu;
Precision g_precision = Precision::kFloat32;

// Per device: the library handles and the cuDNN workspace.
struct DeviceContext {
  cudnnHandle_t cudnn = nullptr;
  cublasHandle_t cublas = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  void* ensure_workspace(size_t bytes) {
    if (bytes > workspace_bytes) {
      if (workspace) ALEXNET_CUDA_CHECK(cudaFree(workspace));
      workspace = nullptr;
      ALEXNET_CUDA_CHECK(cudaMalloc(&workspace, bytes));
      workspace_bytes = bytes;
    }
    return workspace;
  }
};

DeviceContext& context(int device) {
  static std::map<int, std::unique_ptr<DeviceContext>> contexts;
  std::lock_guard<std::mutex> lock(g_mu);
  auto& slot = contexts[device];
  if (!slot) {
    slot = std::make_unique<DeviceContext>();
    ALEXNET_CUDA_CHECK(cudaSetDevice(device));
    CUDNN_OK(cudnnCreate(&slot->cudnn));
    CUBLAS_OK(cublasCreate(&slot->cublas));
  }
  return *slot;
}

// ---- convolution ----

using ConvKey = std::tuple<int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, int, int, int>;

struct ConvPlan {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr, bias = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  bool chosen_fwd = false, chosen_bwd = false;
  cudnnConvolutionFwdAlgo_t fwd{};
  cudnnConvolutionBwdDataAlgo_t bwd_data{};
  cudnnConvolutionBwdFilterAlgo_t bwd_filter{};
  size_t fwd_ws = 0, bwd_data_ws = 0, bwd_filter_ws = 0;
};

// The largest workspace an algorithm search may use.
constexpr size_t kSearchWorkspace = size_t{512} << 20;

ConvPlan& conv_plan(const Tensor& x, const Tensor& w, const ConvParams& p) {
  static std::map<ConvKey, std::unique_ptr<ConvPlan>> plans;
  const int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3), K = w.dim(0), R = w.dim(2);
  const ConvKey key{x.device().index, N, C, H, W, K, R, p.stride, p.pad, p.groups, static_cast<int>(g_precision)};
  std::lock_guard<std::mutex> lock(g_mu);
  auto& slot = plans[key];
  if (slot) return *slot;
  auto plan = std::make_unique<ConvPlan>();
  const int64_t Ho = conv_out_size(H, R, p.stride, p.pad), Wo = conv_out_size(W, R, p.stride, p.pad);
  CUDNN_OK(cudnnCreateTensorDescriptor(&plan->x));
  CUDNN_OK(cudnnCreateTensorDescriptor(&plan->y));
  CUDNN_OK(cudnnCreateTensorDescriptor(&plan->bias));
  CUDNN_OK(cudnnCreateFilterDescriptor(&plan->w));
  CUDNN_OK(cudnnCreateConvolutionDescriptor(&plan->conv));
  CUDNN_OK(cudnnSetTensor4dDescriptor(plan->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, static_cast<int>(N),
                                      static_cast<int>(C), static_cast<int>(H), static_cast<int>(W)));
  CUDNN_OK(cudnnSetTensor4dDescriptor(plan->y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, static_cast<int>(N),
                                      static_cast<int>(K), static_cast<int>(Ho), static_cast<int>(Wo)));
  CUDNN_OK(cudnnSetTensor4dDescriptor(plan->bias, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, static_cast<int>(K), 1, 1));
  CUDNN_OK(cudnnSetFilter4dDescriptor(plan->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, static_cast<int>(K),
                                      static_cast<int>(w.dim(1)), static_cast<int>(R), static_cast<int>(w.dim(3))));
  CUDNN_OK(cudnnSetConvolution2dDescriptor(plan->conv, p.pad, p.pad, p.stride, p.stride, 1, 1,
                                           CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  CUDNN_OK(cudnnSetConvolutionGroupCount(plan->conv, p.groups));
  // float32: no tensor-core conversion (TF32 off); tf32: tensor cores allowed.
  CUDNN_OK(cudnnSetConvolutionMathType(plan->conv, g_precision == Precision::kFloat32 ? CUDNN_FMA_MATH
                                                                                         : CUDNN_TENSOR_OP_MATH));
  slot = std::move(plan);
  return *slot;
}

// The fastest deterministic algorithm of a cudnnFind... result list.
template <class Perf>
const Perf& pick(const Perf* perf, int count, const char* what) {
  for (int i = 0; i < count; ++i)
    if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].determinism == CUDNN_DETERMINISTIC) return perf[i];
  ALEXNET_FAIL("cuDNN offers no deterministic ", what, " algorithm for this convolution");
}

__global__ void add_bias_nchw(float* y, const float* b, int64_t total, int64_t K, int64_t plane, bool relu) {
  FOR_EACH(i, total) {
    const float v = y[i] + b[(i / plane) % K];
    y[i] = relu && v < 0.0f ? 0.0f : v;
  }
}

// db[k] = sum over n, h, w of dy: one block per channel, a fixed reduction order.
__global__ void bias_grad_nchw(const float* dy, float* db, int64_t N, int64_t K, int64_t plane) {
  __shared__ double part[kThreads];
  const int64_t k = blockIdx.x;
  double s = 0;
  for (int64_t i = threadIdx.x; i < N * plane; i += blockDim.x) {
    const int64_t n = i / plane, e = i % plane;
    s += dy[(n * K + k) * plane + e];
  }
  part[threadIdx.x] = s;
  __syncthreads();
  for (int step = blockDim.x / 2; step > 0; step /= 2) {
    if (threadIdx.x < step) part[threadIdx.x] += part[threadIdx.x + step];
    __syncthreads();
  }
  if (threadIdx.x == 0) db[k] = static_cast<float>(part[0]);
}

// ---- batch norm: one block per channel; sums in double ----

// x viewed as [N, C, S] (S = H*W, or 1 for [N, C]).
__global__ void bn_stats(const float* x, double* mean, double* var, int64_t N, int64_t C, int64_t S) {
  __shared__ double s1[kThreads], s2[kThreads];
  const int64_t c = blockIdx.x;
  double a = 0, b = 0;
  for (int64_t i = threadIdx.x; i < N * S; i += blockDim.x) {
    const double v = x[((i / S) * C + c) * S + i % S];
    a += v;
    b += v * v;
  }
  s1[threadIdx.x] = a;
  s2[threadIdx.x] = b;
  __syncthreads();
  for (int step = blockDim.x / 2; step > 0; step /= 2) {
    if (threadIdx.x < step) {
      s1[threadIdx.x] += s1[threadIdx.x + step];
      s2[threadIdx.x] += s2[threadIdx.x + step];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const double m = N * S;
    const double mu = s1[0] / m;
    mean[c] = mu;
    var[c] = fmax(s2[0] / m - mu * mu, 0.0);
  }
}

__global__ void bn_finish_stats(const double* mean, const double* var, float* saved_mean, float* saved_invstd,
                                float* rm, float* rv, int64_t C, double count, double eps, double momentum) {
  FOR_EACH(c, C) {
    const double invstd = 1.0 / sqrt(var[c] + eps);
    saved_mean[c] = static_cast<float>(mean[c]);
    saved_invstd[c] = static_cast<float>(invstd);
    const double unbiased = count > 1 ? var[c] * count / (count - 1) : var[c];
    rm[c] = static_cast<float>((1.0 - momentum) * rm[c] + momentum * mean[c]);
    rv[c] = static_cast<float>((1.0 - momentum) * rv[c] + momentum * unbiased);
  }
}

__global__ void bn_apply(const float* x, float* y, const float* mean, const float* invstd, const float* gamma,
                         const float* beta, int64_t total, int64_t C, int64_t S) {
  FOR_EACH(i, total) {
    const int64_t c = (i / S) % C;
    y[i] = (x[i] - mean[c]) * (gamma[c] * invstd[c]) + beta[c];
  }
}

__global__ void bn_apply_running(const float* x, float* y, const float* rm, const float* rv, const float* gamma,
                                 const float* beta, int64_t total, int64_t C, int64_t S, double eps) {
  FOR_EACH(i, total) {
    const int64_t c = (i / S) % C;
    const float a = static_cast<float>(gamma[c] / sqrt(static_cast<double>(rv[c]) + eps));
    y[i] = (x[i] - rm[c]) * a + beta[c];
  }
}

// dbeta = sum dy; dgamma = sum dy * xhat.
__global__ void bn_grad_sums(const float* x, const float* dy, const float* mean, const float* invstd, float* dgamma,
                             float* dbeta, int64_t N, int64_t C, int64_t S) {
  __shared__ double s1[kThreads], s2[kThreads];
  const int64_t c = blockIdx.x;
  double a = 0, b = 0;
  for (int64_t i = threadIdx.x; i < N * S; i += blockDim.x) {
    const int64_t e = ((i / S) * C + c) * S + i % S;
    a += dy[e];
    b += static_cast<double>(dy[e]) * (x[e] - mean[c]) * invstd[c];
  }
  s1[threadIdx.x] = a;
  s2[threadIdx.x] = b;
  __syncthreads();
  for (int step = blockDim.x / 2; step > 0; step /= 2) {
    if (threadIdx.x < step) {
      s1[threadIdx.x] += s1[threadIdx.x + step];
      s2[threadIdx.x] += s2[threadIdx.x + step];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    dbeta[c] = static_cast<float>(s1[0]);
    dgamma[c] = static_cast<float>(s2[0]);
  }
}

// dx = gamma invstd / M (M dy - dbeta - xhat dgamma).
__global__ void bn_grad_input(const float* x, const float* dy, const float* mean, const float* invstd,
                              const float* gamma, const float* dgamma, const float* dbeta, float* dx, int64_t total,
                              int64_t C, int64_t S, double M) {
  FOR_EACH(i, total) {
    const int64_t c = (i / S) % C;
    const double xhat = (static_cast<double>(x[i]) - mean[c]) * invstd[c];
    dx[i] = static_cast<float>(gamma[c] * invstd[c] / M * (M * dy[i] - dbeta[c] - xhat * dgamma[c]));
  }
}

// ---- FC ----

__global__ void add_bias_rows(float* y, const float* b, int64_t total, int64_t out, bool relu) {
  FOR_EACH(i, total) {
    const float v = y[i] + b[i % out];
    y[i] = relu && v < 0.0f ? 0.0f : v;
  }
}

__global__ void column_sums(const float* dy, float* db, int64_t N, int64_t out) {
  FOR_EACH(o, out) {
    double s = 0;
    for (int64_t n = 0; n < N; ++n) s += dy[n * out + o];
    db[o] = static_cast<float>(s);
  }
}

cublasHandle_t blas(const Tensor& t, CudaStream s) {
  DeviceContext& ctx = context(t.device().index);
  CUBLAS_OK(cublasSetStream(ctx.cublas, s));
  CUBLAS_OK(cublasSetMathMode(ctx.cublas, g_precision == Precision::kFloat32 ? CUBLAS_DEFAULT_MATH
                                                                              : CUBLAS_TF32_TENSOR_OP_MATH));
  return ctx.cublas;
}

cudnnHandle_t dnn(const Tensor& t, CudaStream s) {
  DeviceContext& ctx = context(t.device().index);
  CUDNN_OK(cudnnSetStream(ctx.cudnn, s));
  return ctx.cudnn;
}

}  // namespace

void set_cuda_precision(Precision p) {
  ALEXNET_CHECK(p != Precision::kBf16, "precision bf16 is not implemented on the CUDA backend yet");
  std::lock_guard<std::mutex> lock(g_mu);
  g_precision = p;
}

void conv2d_forward_cuda(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y, const ConvParams& p,
                         bool post_relu, CudaStream s) {
  for (const Tensor* t : std::initializer_list<const Tensor*>{&x, &w, &b, &y}) check_f32(*t, "conv2d_forward", "an argument");
  ALEXNET_CUDA_CHECK(cudaSetDevice(x.device().index));
  ConvPlan& plan = conv_plan(x, w, p);
  cudnnHandle_t h = dnn(x, s);
  DeviceContext& ctx = context(x.device().index);
  const float one = 1.0f, zero = 0.0f;
  if (!plan.chosen_fwd) {
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int count = 0;
    void* ws = ctx.ensure_workspace(kSearchWorkspace);
    CUDNN_OK(cudnnFindConvolutionForwardAlgorithmEx(h, plan.x, x.data<float>(), plan.w, w.data<float>(), plan.conv,
                                                    plan.y, y.data<float>(), CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &count,
                                                    perf, ws, kSearchWorkspace));
    const auto& best = pick(perf, count, "forward");
    plan.fwd = best.algo;
    plan.fwd_ws = best.memory;
    plan.chosen_fwd = true;
  }
  void* ws = ctx.ensure_workspace(plan.fwd_ws);
  CUDNN_OK(cudnnConvolutionForward(h, &one, plan.x, x.data<float>(), plan.w, w.data<float>(), plan.conv, plan.fwd, ws,
                                   plan.fwd_ws, &zero, plan.y, y.data<float>()));
  add_bias_nchw<<<blocks_for(y.numel()), kThreads, 0, s>>>(y.data<float>(), b.data<float>(), y.numel(), y.dim(1),
                                                           y.dim(2) * y.dim(3), post_relu);
  launched("conv2d_forward");
}

void conv2d_backward_cuda(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor& dw, Tensor& db,
                          const ConvParams& p, CudaStream s) {
  for (const Tensor* t : std::initializer_list<const Tensor*>{&x, &w, &dy, &dw, &db})
    check_f32(*t, "conv2d_backward", "an argument");
  ALEXNET_CUDA_CHECK(cudaSetDevice(x.device().index));
  ConvPlan& plan = conv_plan(x, w, p);
  cudnnHandle_t h = dnn(x, s);
  DeviceContext& ctx = context(x.device().index);
  const float one = 1.0f, zero = 0.0f;
  if (!plan.chosen_bwd) {
    void* ws = ctx.ensure_workspace(kSearchWorkspace);
    cudnnConvolutionBwdFilterAlgoPerf_t fperf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    int count = 0;
    CUDNN_OK(cudnnFindConvolutionBackwardFilterAlgorithmEx(h, plan.x, x.data<float>(), plan.y, dy.data<float>(), plan.conv,
                                                           plan.w, dw.data<float>(), CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
                                                           &count, fperf, ws, kSearchWorkspace));
    const auto& bf = pick(fperf, count, "backward-filter");
    plan.bwd_filter = bf.algo;
    plan.bwd_filter_ws = bf.memory;
    if (dx) {
      check_f32(*dx, "conv2d_backward", "dx");
      cudnnConvolutionBwdDataAlgoPerf_t dperf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
      CUDNN_OK(cudnnFindConvolutionBackwardDataAlgorithmEx(h, plan.w, w.data<float>(), plan.y, dy.data<float>(), plan.conv,
                                                           plan.x, dx->data<float>(), CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                                                           &count, dperf, ws, kSearchWorkspace));
      const auto& bd = pick(dperf, count, "backward-data");
      plan.bwd_data = bd.algo;
      plan.bwd_data_ws = bd.memory;
    }
    plan.chosen_bwd = true;
  }
  void* ws = ctx.ensure_workspace(std::max(plan.bwd_filter_ws, plan.bwd_data_ws));
  CUDNN_OK(cudnnConvolutionBackwardFilter(h, &one, plan.x, x.data<float>(), plan.y, dy.data<float>(), plan.conv,
                                          plan.bwd_filter, ws, plan.bwd_filter_ws, &zero, plan.w, dw.data<float>()));
  if (dx) {
    ALEXNET_ASSERT(dx->shape() == x.shape(), "conv2d_backward: dx ", dx->describe(), " x ", x.describe());
    CUDNN_OK(cudnnConvolutionBackwardData(h, &one, plan.w, w.data<float>(), plan.y, dy.data<float>(), plan.conv,
                                          plan.bwd_data, ws, plan.bwd_data_ws, &zero, plan.x, dx->data<float>()));
  }
  bias_grad_nchw<<<static_cast<unsigned>(dy.dim(1)), kThreads, 0, s>>>(dy.data<float>(), db.data<float>(), dy.dim(0),
                                                                        dy.dim(1), dy.dim(2) * dy.dim(3));
  launched("conv2d_backward");
}

void linear_forward_cuda(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y, bool post_relu, CudaStream s) {
  for (const Tensor* t : std::initializer_list<const Tensor*>{&x, &w, &b, &y}) check_f32(*t, "linear_forward", "an argument");
  const int64_t N = x.dim(0), In = x.dim(1), Out = w.dim(0);
  ALEXNET_ASSERT(w.dim(1) == In && y.dim(0) == N && y.dim(1) == Out && b.numel() == Out, "linear_forward: x ",
                 x.describe(), " w ", w.describe(), " y ", y.describe());
  ALEXNET_CUDA_CHECK(cudaSetDevice(x.device().index));
  const float one = 1.0f, zero = 0.0f;
  // cuBLAS is column-major: a row-major [r, c] matrix is its column-major transpose, so y = x w^T
  // (row-major) is y^T = w x^T (column-major), with w^T read from w as [In, Out] and lda In.
  CUBLAS_OK(cublasSgemm(blas(x, s), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(Out), static_cast<int>(N),
                        static_cast<int>(In), &one, w.data<float>(), static_cast<int>(In), x.data<float>(),
                        static_cast<int>(In), &zero, y.data<float>(), static_cast<int>(Out)));
  add_bias_rows<<<blocks_for(y.numel()), kThreads, 0, s>>>(y.data<float>(), b.data<float>(), y.numel(), Out, post_relu);
  launched("linear_forward");
}

void linear_backward_cuda(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor& dw, Tensor& db,
                          CudaStream s) {
  for (const Tensor* t : std::initializer_list<const Tensor*>{&x, &w, &dy, &dw, &db})
    check_f32(*t, "linear_backward", "an argument");
  const int64_t N = x.dim(0), In = x.dim(1), Out = w.dim(0);
  ALEXNET_CUDA_CHECK(cudaSetDevice(x.device().index));
  cublasHandle_t h = blas(x, s);
  const float one = 1.0f, zero = 0.0f;
  if (dx) {  // dx^T = w^T dy^T
    check_f32(*dx, "linear_backward", "dx");
    CUBLAS_OK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(In), static_cast<int>(N), static_cast<int>(Out),
                          &one, w.data<float>(), static_cast<int>(In), dy.data<float>(), static_cast<int>(Out), &zero,
                          dx->data<float>(), static_cast<int>(In)));
  }
  // dw^T = x^T dy  (column-major In x Out)
  CUBLAS_OK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, static_cast<int>(In), static_cast<int>(Out), static_cast<int>(N),
                        &one, x.data<float>(), static_cast<int>(In), dy.data<float>(), static_cast<int>(Out), &zero,
                        dw.data<float>(), static_cast<int>(In)));
  column_sums<<<blocks_for(Out), kThreads, 0, s>>>(dy.data<float>(), db.data<float>(), N, Out);
  launched("linear_backward");
}

void batchnorm_forward_cuda(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                            Tensor& running_var, bool training, Tensor& y, Tensor& saved_mean, Tensor& saved_invstd,
                            const BatchNormParams& p, Tensor& stats_workspace, CudaStream s) {
  check_f32(x, "batchnorm_forward", "x");
  ALEXNET_ASSERT(x.ndim() == 2 || x.ndim() == 4, "batchnorm_forward: x ", x.describe());
  const int64_t N = x.dim(0), C = x.dim(1), S = x.ndim() == 4 ? x.dim(2) * x.dim(3) : 1;
  ALEXNET_CUDA_CHECK(cudaSetDevice(x.device().index));
  if (!training) {
    bn_apply_running<<<blocks_for(x.numel()), kThreads, 0, s>>>(x.data<float>(), y.data<float>(),
                                                                running_mean.data<float>(), running_var.data<float>(),
                                                                gamma.data<float>(), beta.data<float>(), x.numel(), C, S,
                                                                p.eps);
    launched("batchnorm_forward");
    return;
  }
  ALEXNET_ASSERT(stats_workspace.dtype() == DType::kF64 && stats_workspace.numel() >= 2 * C,
                 "batchnorm_forward: stats_workspace ", stats_workspace.describe(), ", expected float64 [2 C]");
  double* mean = stats_workspace.data<double>();
  double* var = mean + C;
  bn_stats<<<static_cast<unsigned>(C), kThreads, 0, s>>>(x.data<float>(), mean, var, N, C, S);
  bn_finish_stats<<<blocks_for(C), kThreads, 0, s>>>(mean, var, saved_mean.data<float>(), saved_invstd.data<float>(),
                                                     running_mean.data<float>(), running_var.data<float>(), C,
                                                     static_cast<double>(N * S), p.eps, p.momentum);
  bn_apply<<<blocks_for(x.numel()), kThreads, 0, s>>>(x.data<float>(), y.data<float>(), saved_mean.data<float>(),
                                                      saved_invstd.data<float>(), gamma.data<float>(),
                                                      beta.data<float>(), x.numel(), C, S);
  launched("batchnorm_forward");
}

void batchnorm_backward_cuda(const Tensor& x, const Tensor& gamma, const Tensor& saved_mean,
                             const Tensor& saved_invstd, const Tensor& dy, Tensor& dx, Tensor& dgamma, Tensor& dbeta,
                             CudaStream s) {
  check_f32(x, "batchnorm_backward", "x");
  const int64_t N = x.dim(0), C = x.dim(1), S = x.ndim() == 4 ? x.dim(2) * x.dim(3) : 1;
  ALEXNET_CUDA_CHECK(cudaSetDevice(x.device().index));
  bn_grad_sums<<<static_cast<unsigned>(C), kThreads, 0, s>>>(x.data<float>(), dy.data<float>(), saved_mean.data<float>(),
                                                             saved_invstd.data<float>(), dgamma.data<float>(),
                                                             dbeta.data<float>(), N, C, S);
  bn_grad_input<<<blocks_for(x.numel()), kThreads, 0, s>>>(x.data<float>(), dy.data<float>(), saved_mean.data<float>(),
                                                           saved_invstd.data<float>(), gamma.data<float>(),
                                                           dgamma.data<float>(), dbeta.data<float>(), dx.data<float>(),
                                                           x.numel(), C, S, static_cast<double>(N * S));
  launched("batchnorm_backward");
}

}  // namespace alexnet
