// CUDA kernels of our own layers (model/cuda/layers_cuda.h): one thread per output element, written to
// match the CPU backend's arithmetic (the same window sums, the same counter-based dropout draws).
#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <initializer_list>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "core/cuda_check.h"
#include "core/error.h"
#include "core/rng.h"
#include "model/cuda/kernel_elements.h"
#include "model/cuda/layers_cuda.h"

namespace alexnet {
namespace {


constexpr int kThreads = 256;

int blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(b < 1 ? 1 : (b > (int64_t{1} << 30) ? (int64_t{1} << 30) : b));
}

// Grid-stride loop over [0, n).
#define ALEXNET_FOR_EACH(i, n) \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); i += static_cast<int64_t>(gridDim.x) * blockDim.x)

void check_f32(const Tensor& t, const char* op, const char* name) {
  ALEXNET_ASSERT(t.device().is_cuda() && t.dtype() == DType::kF32, "", op, ": ", name, " is ", t.describe(),
                 ", expected float32 on a CUDA device");
}

void check_like(const Tensor& t, const Tensor& ref, const char* op, const char* name) {
  check_f32(t, op, name);
  ALEXNET_ASSERT(t.shape() == ref.shape() && t.device() == ref.device(), "", op, ": ", name, " is ", t.describe(),
                 ", expected like ", ref.describe());
}

void launched(const char* op) {
  const cudaError_t err = cudaGetLastError();
  ALEXNET_CHECK(err == cudaSuccess, "", op, ": kernel launch failed: ", cudaGetErrorString(err));
}

// ---- activations ----

__global__ void relu_fwd(const float* x, float* y, int64_t n) {
  ALEXNET_FOR_EACH(i, n) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}
__global__ void relu_bwd(const float* y, const float* dy, float* dx, int64_t n) {
  ALEXNET_FOR_EACH(i, n) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}
__global__ void tanh_fwd(const float* x, float* y, int64_t n) {
  ALEXNET_FOR_EACH(i, n) y[i] = tanhf(x[i]);
}
__global__ void tanh_bwd(const float* y, const float* dy, float* dx, int64_t n) {
  ALEXNET_FOR_EACH(i, n) dx[i] = dy[i] * (1.0f - y[i] * y[i]);
}

// ---- LRN (kernel_elements.h) ----

__global__ void lrn_across_fwd(const float* x, float* y, float* scale, int64_t total, int64_t C, int64_t S,
                               int h, float k, float alpha, float beta) {
  ALEXNET_FOR_EACH(i, total) kernel::lrn_across_fwd(i, x, y, scale, C, S, h, k, alpha, beta);
}

__global__ void lrn_across_bwd(const float* x, const float* y, const float* scale, const float* dy, float* dx,
                               int64_t total, int64_t C, int64_t S, int h, float coef, float beta) {
  ALEXNET_FOR_EACH(i, total) kernel::lrn_across_bwd(i, x, y, scale, dy, dx, C, S, h, coef, beta);
}

__global__ void lrn_2d_fwd(const float* x, float* y, float* scale, int64_t total, int64_t H, int64_t W, int h,
                           float k, float alpha, float beta) {
  ALEXNET_FOR_EACH(i, total) kernel::lrn_2d_fwd(i, x, y, scale, H, W, h, k, alpha, beta);
}

__global__ void lrn_2d_bwd(const float* x, const float* y, const float* scale, const float* dy, float* dx,
                           int64_t total, int64_t H, int64_t W, int h, float coef, float beta) {
  ALEXNET_FOR_EACH(i, total) kernel::lrn_2d_bwd(i, x, y, scale, dy, dx, H, W, h, coef, beta);
}

// ---- max pooling and dropout (kernel_elements.h) ----

__global__ void maxpool_fwd(const float* x, float* y, int32_t* arg, int64_t total, int64_t H, int64_t W,
                            int64_t Ho, int64_t Wo, int size, int stride) {
  ALEXNET_FOR_EACH(i, total) kernel::maxpool_fwd(i, x, y, arg, H, W, Ho, Wo, size, stride);
}

__global__ void maxpool_bwd(const float* dy, const int32_t* arg, float* dx, int64_t total, int64_t H, int64_t W,
                            int64_t Ho, int64_t Wo, int size, int stride) {
  ALEXNET_FOR_EACH(i, total) kernel::maxpool_bwd(i, dy, arg, dx, H, W, Ho, Wo, size, stride);
}

__global__ void dropout_fwd(const float* x, float* y, uint8_t* mask, int64_t N, int64_t U, double p, float scale,
                            PhiloxKey key, uint64_t step, const int64_t* ids, int64_t unit_offset) {
  ALEXNET_FOR_EACH(i, N * U) kernel::dropout_fwd(i, x, y, mask, U, p, scale, key, step, ids, unit_offset);
}

__global__ void dropout_bwd(const float* dy, const uint8_t* mask, float* dx, int64_t n, float scale) {
  ALEXNET_FOR_EACH(i, n) dx[i] = mask[i] ? dy[i] * scale : 0.0f;
}

// ---- softmax cross-entropy: one warp per row (the row sum in double, as on the CPU) ----

// The lanes stride over the row; the maximum and the sum combine across the warp by a butterfly, which
// leaves the same bits in every lane (a + b == b + a exactly) and the same order every run.
__global__ void softmax_fwd(const float* z, const int64_t* labels, float* probs, double* row_loss, int64_t N,
                            int64_t K) {
  const unsigned lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * blockDim.x / 32;
  for (int64_t r = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32; r < N; r += warps) {
    const float* zr = z + r * K;
    float* pr = probs + r * K;
    float mx = -INFINITY;
    for (int64_t j = lane; j < K; j += 32) mx = fmaxf(mx, zr[j]);
    for (int o = 16; o > 0; o /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    double sum = 0;
    for (int64_t j = lane; j < K; j += 32) {
      const double e = exp(static_cast<double>(zr[j]) - mx);
      pr[j] = static_cast<float>(e);
      sum += e;
    }
    for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    const double inv = 1.0 / sum;
    for (int64_t j = lane; j < K; j += 32) pr[j] = static_cast<float>(pr[j] * inv);
    if (lane == 0) {
      const int64_t label = labels[r];
      // A row's loss is >= 0 (log sum >= z_label - max): -1 marks a label outside [0, K), so a NaN (from
      // NaN or infinite logits) passes through to the mean loss, as on the CPU.
      row_loss[r] = (label < 0 || label >= K) ? -1.0 : log(sum) - (static_cast<double>(zr[label]) - mx);
    }
  }
}

__global__ void softmax_bwd(const float* probs, const int64_t* labels, float* d, int64_t N, int64_t K,
                            float inv_n) {
  ALEXNET_FOR_EACH(i, N * K) {
    const int64_t r = i / K, j = i % K;
    d[i] = j == labels[r] ? (probs[i] - 1.0f) * inv_n : probs[i] * inv_n;
  }
}

// ---- SGD (paper §5) ----

__global__ void sgd(float* w, const float* g, float* v, int64_t n, float mom, float decay, float rate) {
  ALEXNET_FOR_EACH(i, n) kernel::sgd_element(i, w, g, v, mom, decay, rate);
}

// An arena at once: the decay of element i is `decay` inside the ranges, 0 outside (as sgd_update_cuda
// is called with weight_decay 0 for those tensors).
__global__ void sgd_arena(float* w, const float* g, float* v, int64_t n, SgdDecayRanges ranges, float mom,
                          float decay, float rate) {
  ALEXNET_FOR_EACH(i, n) {
    const bool decays = kernel::in_ranges(i, ranges.count, ranges.begin, ranges.end);
    kernel::sgd_element(i, w, g, v, mom, decays ? decay : 0.0f, rate);
  }
}

// ---- the input step (kernel_elements.h) ----

__global__ void normalize_image_mean(const uint8_t* crops, const int32_t* place, const float* light, const float* mean,
                                     float* out, int64_t N, int64_t C, int64_t side) {
  ALEXNET_FOR_EACH(i, N * 3 * C * C) kernel::normalize_image_mean(i, crops, place, light, mean, out, C, side);
}

__global__ void normalize_channel_mean(const uint8_t* crops, const float* light, const float* mean, float* out,
                                       int64_t N, int64_t C) {
  ALEXNET_FOR_EACH(i, N * 3 * C * C) kernel::normalize_channel_mean(i, crops, light, mean, out, C);
}

void set_device(const Tensor& t) { ALEXNET_CUDA_CHECK(cudaSetDevice(t.device().index)); }

__global__ void add_columns(float* dst, int64_t dst_w, int64_t dst_col0, const float* src, int64_t width, int64_t N) {
  ALEXNET_FOR_EACH(i, N * width) {
    const int64_t r = i / width, c = i % width;
    dst[r * dst_w + dst_col0 + c] += src[i];
  }
}

}  // namespace

void relu_forward_cuda(const Tensor& x, Tensor& y, CudaStream s) {
  check_f32(x, "relu_forward", "x");
  check_like(y, x, "relu_forward", "y");
  set_device(x);
  relu_fwd<<<blocks_for(x.numel()), kThreads, 0, s>>>(x.data<float>(), y.data<float>(), x.numel());
  launched("relu_forward");
}

void relu_backward_cuda(const Tensor& y, const Tensor& dy, Tensor& dx, CudaStream s) {
  check_f32(y, "relu_backward", "y");
  check_like(dy, y, "relu_backward", "dy");
  check_like(dx, y, "relu_backward", "dx");
  set_device(y);
  relu_bwd<<<blocks_for(y.numel()), kThreads, 0, s>>>(y.data<float>(), dy.data<float>(), dx.data<float>(), y.numel());
  launched("relu_backward");
}

void tanh_forward_cuda(const Tensor& x, Tensor& y, CudaStream s) {
  check_f32(x, "tanh_forward", "x");
  check_like(y, x, "tanh_forward", "y");
  set_device(x);
  tanh_fwd<<<blocks_for(x.numel()), kThreads, 0, s>>>(x.data<float>(), y.data<float>(), x.numel());
  launched("tanh_forward");
}

void tanh_backward_cuda(const Tensor& y, const Tensor& dy, Tensor& dx, CudaStream s) {
  check_f32(y, "tanh_backward", "y");
  check_like(dy, y, "tanh_backward", "dy");
  check_like(dx, y, "tanh_backward", "dx");
  set_device(y);
  tanh_bwd<<<blocks_for(y.numel()), kThreads, 0, s>>>(y.data<float>(), dy.data<float>(), dx.data<float>(), y.numel());
  launched("tanh_backward");
}

namespace {

// The LRN kernels read windows of their inputs while writing their outputs: no output may overlap an
// input or another output, not even in part (as lrn_cpu.cc asserts).
void check_lrn_outputs(const char* op, const Tensor& x, const Tensor& y, const Tensor& scale) {
  ALEXNET_ASSERT(!y.overlaps(x) && !scale.overlaps(x) && !y.overlaps(scale), "", op, ": outputs overlap x or each other");
}
void check_lrn_dx(const char* op, const Tensor& x, const Tensor& y, const Tensor& scale, const Tensor& dy,
                  const Tensor& dx) {
  for (const Tensor* t : {&x, &y, &scale, &dy}) ALEXNET_ASSERT(!dx.overlaps(*t), "", op, ": dx overlaps an input");
}

}  // namespace

void lrn_forward_cuda(const Tensor& x, Tensor& y, Tensor& scale, const LrnParams& p, CudaStream s) {
  check_f32(x, "lrn_forward", "x");
  ALEXNET_ASSERT(x.ndim() == 4 && p.n >= 1, "lrn_forward: x ", x.describe(), " n ", p.n);
  check_like(y, x, "lrn_forward", "y");
  check_like(scale, x, "lrn_forward", "scale");
  check_lrn_outputs("lrn_forward", x, y, scale);
  set_device(x);
  lrn_across_fwd<<<blocks_for(x.numel()), kThreads, 0, s>>>(
      x.data<float>(), y.data<float>(), scale.data<float>(), x.numel(), x.dim(1), x.dim(2) * x.dim(3), p.n / 2,
      static_cast<float>(p.k), static_cast<float>(p.alpha), static_cast<float>(p.beta));
  launched("lrn_forward");
}

void lrn_backward_cuda(const Tensor& x, const Tensor& y, const Tensor& scale, const Tensor& dy, Tensor& dx,
                       const LrnParams& p, CudaStream s) {
  check_f32(x, "lrn_backward", "x");
  ALEXNET_ASSERT(x.ndim() == 4 && p.n >= 1, "lrn_backward: x ", x.describe(), " n ", p.n);
  for (const Tensor* t : std::initializer_list<const Tensor*>{&y, &scale, &dy, &dx}) check_like(*t, x, "lrn_backward", "an argument");
  check_lrn_dx("lrn_backward", x, y, scale, dy, dx);
  set_device(x);
  lrn_across_bwd<<<blocks_for(x.numel()), kThreads, 0, s>>>(
      x.data<float>(), y.data<float>(), scale.data<float>(), dy.data<float>(), dx.data<float>(), x.numel(), x.dim(1),
      x.dim(2) * x.dim(3), p.n / 2, static_cast<float>(2.0 * p.alpha * p.beta), static_cast<float>(p.beta));
  launched("lrn_backward");
}

void lrn2d_forward_cuda(const Tensor& x, Tensor& y, Tensor& scale, const LrnParams& p, CudaStream s) {
  check_f32(x, "lrn2d_forward", "x");
  ALEXNET_ASSERT(x.ndim() == 4 && p.n >= 1, "lrn2d_forward: x ", x.describe(), " n ", p.n);
  check_like(y, x, "lrn2d_forward", "y");
  check_like(scale, x, "lrn2d_forward", "scale");
  check_lrn_outputs("lrn2d_forward", x, y, scale);
  set_device(x);
  lrn_2d_fwd<<<blocks_for(x.numel()), kThreads, 0, s>>>(
      x.data<float>(), y.data<float>(), scale.data<float>(), x.numel(), x.dim(2), x.dim(3), p.n / 2,
      static_cast<float>(p.k), static_cast<float>(p.alpha), static_cast<float>(p.beta));
  launched("lrn2d_forward");
}

void lrn2d_backward_cuda(const Tensor& x, const Tensor& y, const Tensor& scale, const Tensor& dy, Tensor& dx,
                         const LrnParams& p, CudaStream s) {
  check_f32(x, "lrn2d_backward", "x");
  ALEXNET_ASSERT(x.ndim() == 4 && p.n >= 1, "lrn2d_backward: x ", x.describe(), " n ", p.n);
  for (const Tensor* t : std::initializer_list<const Tensor*>{&y, &scale, &dy, &dx}) check_like(*t, x, "lrn2d_backward", "an argument");
  check_lrn_dx("lrn2d_backward", x, y, scale, dy, dx);
  set_device(x);
  lrn_2d_bwd<<<blocks_for(x.numel()), kThreads, 0, s>>>(
      x.data<float>(), y.data<float>(), scale.data<float>(), dy.data<float>(), dx.data<float>(), x.numel(), x.dim(2),
      x.dim(3), p.n / 2, static_cast<float>(2.0 * p.alpha * p.beta), static_cast<float>(p.beta));
  launched("lrn2d_backward");
}

void maxpool_forward_cuda(const Tensor& x, Tensor& y, Tensor& argmax, const PoolParams& p, CudaStream s) {
  check_f32(x, "maxpool_forward", "x");
  ALEXNET_ASSERT(p.size >= 1 && p.stride >= 1 && x.ndim() == 4 && x.dim(2) >= p.size && x.dim(3) >= p.size,
                 "maxpool_forward: x ", x.describe(), " window ", p.size, "/", p.stride);
  const Shape out{x.dim(0), x.dim(1), (x.dim(2) - p.size) / p.stride + 1, (x.dim(3) - p.size) / p.stride + 1};
  check_f32(y, "maxpool_forward", "y");
  ALEXNET_ASSERT(y.shape() == out && argmax.shape() == out && argmax.dtype() == DType::kI32 &&
                     argmax.device() == x.device(),
                 "maxpool_forward: y ", y.describe(), " argmax ", argmax.describe(), " expected ", shape_str(out));
  set_device(x);
  maxpool_fwd<<<blocks_for(y.numel()), kThreads, 0, s>>>(x.data<float>(), y.data<float>(), argmax.data<int32_t>(),
                                                         y.numel(), x.dim(2), x.dim(3), out[2], out[3], p.size,
                                                         p.stride);
  launched("maxpool_forward");
}

void maxpool_backward_cuda(const Tensor& dy, const Tensor& argmax, Tensor& dx, const PoolParams& p, CudaStream s) {
  check_f32(dy, "maxpool_backward", "dy");
  check_f32(dx, "maxpool_backward", "dx");
  ALEXNET_ASSERT(dy.ndim() == 4 && dx.ndim() == 4 && argmax.shape() == dy.shape() &&
                     argmax.dtype() == DType::kI32 && dx.dim(0) == dy.dim(0) && dx.dim(1) == dy.dim(1) &&
                     dy.dim(2) == (dx.dim(2) - p.size) / p.stride + 1 && dy.dim(3) == (dx.dim(3) - p.size) / p.stride + 1 &&
                     argmax.device() == dy.device() && dx.device() == dy.device(),
                 "maxpool_backward: dy ", dy.describe(), " argmax ", argmax.describe(), " dx ", dx.describe(),
                 " window ", p.size, "/", p.stride);
  set_device(dy);
  maxpool_bwd<<<blocks_for(dx.numel()), kThreads, 0, s>>>(dy.data<float>(), argmax.data<int32_t>(), dx.data<float>(),
                                                          dx.numel(), dx.dim(2), dx.dim(3), dy.dim(2), dy.dim(3),
                                                          p.size, p.stride);
  launched("maxpool_backward");
}

void dropout_forward_cuda(const Tensor& x, Tensor& y, Tensor& mask, double p, PhiloxKey key, uint64_t step,
                          const Tensor& sample_ids, int64_t unit_offset, CudaStream s) {
  check_f32(x, "dropout_forward", "x");
  ALEXNET_ASSERT(x.ndim() == 2 && p >= 0 && p < 1 && unit_offset >= 0, "dropout_forward: x ", x.describe(), " p ", p);
  check_like(y, x, "dropout_forward", "y");
  ALEXNET_ASSERT(mask.dtype() == DType::kU8 && mask.shape() == x.shape() && mask.device() == x.device(),
                 "dropout_forward: mask ", mask.describe());
  const int64_t* ids = nullptr;
  if (sample_ids.defined()) {
    ALEXNET_ASSERT(sample_ids.dtype() == DType::kI64 && sample_ids.numel() == x.dim(0) &&
                       sample_ids.device() == x.device(),
                   "dropout_forward: sample_ids ", sample_ids.describe());
    ids = sample_ids.data<int64_t>();
  }
  set_device(x);
  dropout_fwd<<<blocks_for(x.numel()), kThreads, 0, s>>>(x.data<float>(), y.data<float>(), mask.data<uint8_t>(),
                                                         x.dim(0), x.dim(1), p, static_cast<float>(1.0 / (1.0 - p)),
                                                         key, step, ids, unit_offset);
  launched("dropout_forward");
}

void dropout_backward_cuda(const Tensor& dy, const Tensor& mask, double p, Tensor& dx, CudaStream s) {
  check_f32(dy, "dropout_backward", "dy");
  check_like(dx, dy, "dropout_backward", "dx");
  ALEXNET_ASSERT(mask.dtype() == DType::kU8 && mask.shape() == dy.shape() && mask.device() == dy.device() && p >= 0 &&
                     p < 1,
                 "dropout_backward: mask ", mask.describe(), " p ", p);
  set_device(dy);
  dropout_bwd<<<blocks_for(dy.numel()), kThreads, 0, s>>>(dy.data<float>(), mask.data<uint8_t>(), dx.data<float>(),
                                                          dy.numel(), static_cast<float>(1.0 / (1.0 - p)));
  launched("dropout_backward");
}

void normalize_crops_cuda(const Tensor& crops, const Tensor& placement, const Tensor& lighting, const Tensor& mean,
                          Tensor& out, CudaStream s) {
  ALEXNET_ASSERT(crops.device().is_cuda() && crops.dtype() == DType::kU8 && crops.ndim() == 4 && crops.dim(1) == 3 &&
                     crops.dim(2) == crops.dim(3),
                 "normalize_crops: crops ", crops.describe(), ", expected uint8 [N, 3, C, C] on a CUDA device");
  const int64_t N = crops.dim(0), C = crops.dim(2);
  ALEXNET_ASSERT(placement.dtype() == DType::kI32 && placement.shape() == (Shape{N, 3}) &&
                     placement.device() == crops.device(),
                 "normalize_crops: placement ", placement.describe());
  check_f32(lighting, "normalize_crops", "lighting");
  ALEXNET_ASSERT(lighting.shape() == (Shape{N, 3}) && lighting.device() == crops.device(), "normalize_crops: lighting ",
                 lighting.describe());
  check_f32(mean, "normalize_crops", "mean");
  const bool image = mean.ndim() == 3;
  ALEXNET_ASSERT(mean.device() == crops.device() &&
                     (image ? mean.dim(0) == 3 && mean.dim(1) == mean.dim(2) && mean.dim(1) >= C
                            : mean.shape() == Shape{3}),
                 "normalize_crops: mean ", mean.describe());
  check_f32(out, "normalize_crops", "out");
  ALEXNET_ASSERT(out.shape() == crops.shape() && out.device() == crops.device(), "normalize_crops: out ",
                 out.describe());
  set_device(crops);
  if (image)
    normalize_image_mean<<<blocks_for(crops.numel()), kThreads, 0, s>>>(
        crops.data<uint8_t>(), placement.data<int32_t>(), lighting.data<float>(), mean.data<float>(), out.data<float>(),
        N, C, mean.dim(1));
  else
    normalize_channel_mean<<<blocks_for(crops.numel()), kThreads, 0, s>>>(
        crops.data<uint8_t>(), lighting.data<float>(), mean.data<float>(), out.data<float>(), N, C);
  launched("normalize_crops");
}

void softmax_xent_rows_cuda(const Tensor& logits, const Tensor& labels, Tensor& probs, Tensor& row_loss,
                            CudaStream s) {
  check_f32(logits, "softmax_xent_forward", "logits");
  ALEXNET_ASSERT(logits.ndim() == 2 && logits.dim(1) > 0, "softmax_xent_forward: logits ", logits.describe());
  check_like(probs, logits, "softmax_xent_forward", "probs");
  const int64_t N = logits.dim(0), K = logits.dim(1);
  ALEXNET_ASSERT(labels.dtype() == DType::kI64 && labels.numel() == N && labels.device() == logits.device(),
                 "softmax_xent_forward: labels ", labels.describe());
  ALEXNET_ASSERT(row_loss.dtype() == DType::kF64 && row_loss.numel() >= N && row_loss.device() == logits.device(),
                 "softmax_xent_forward: row_loss ", row_loss.describe());
  set_device(logits);
  softmax_fwd<<<blocks_for(N * 32), kThreads, 0, s>>>(logits.data<float>(), labels.data<int64_t>(),
                                                      probs.data<float>(), row_loss.data<double>(), N, K);
  launched("softmax_xent_forward");
}

double softmax_xent_forward_cuda(const Tensor& logits, const Tensor& labels, Tensor& probs, Tensor& row_loss,
                                 CudaStream s) {
  softmax_xent_rows_cuda(logits, labels, probs, row_loss, s);
  const int64_t N = logits.dim(0);
  std::vector<double> host(static_cast<size_t>(N));
  if (N > 0)
    ALEXNET_CUDA_CHECK(cudaMemcpyAsync(host.data(), row_loss.data<double>(), sizeof(double) * N,
                                    cudaMemcpyDeviceToHost, s));
  cuda_sync_check(s, "softmax_xent_forward");
  return softmax_xent_mean(host.data(), N, logits.dim(1));
}

void softmax_xent_backward_cuda(const Tensor& probs, const Tensor& labels, Tensor& dlogits, CudaStream s) {
  check_f32(probs, "softmax_xent_backward", "probs");
  check_like(dlogits, probs, "softmax_xent_backward", "dlogits");
  ALEXNET_ASSERT(probs.ndim() == 2, "softmax_xent_backward: probs ", probs.describe());
  const int64_t N = probs.dim(0), K = probs.dim(1);
  ALEXNET_ASSERT(labels.dtype() == DType::kI64 && labels.numel() == N && labels.device() == probs.device(),
                 "softmax_xent_backward: labels ", labels.describe());
  set_device(probs);
  softmax_bwd<<<blocks_for(N * K), kThreads, 0, s>>>(probs.data<float>(), labels.data<int64_t>(),
                                                     dlogits.data<float>(), N, K, static_cast<float>(1.0 / static_cast<double>(N)));
  launched("softmax_xent_backward");
}

void sgd_update_cuda(Tensor& w, const Tensor& g, Tensor& v, double lr, double momentum, double weight_decay,
                     CudaStream s) {
  check_f32(w, "sgd_update", "w");
  check_like(g, w, "sgd_update", "g");
  check_like(v, w, "sgd_update", "v");
  set_device(w);
  sgd<<<blocks_for(w.numel()), kThreads, 0, s>>>(w.data<float>(), g.data<float>(), v.data<float>(), w.numel(),
                                                 static_cast<float>(momentum), static_cast<float>(weight_decay * lr),
                                                 static_cast<float>(lr));
  launched("sgd_update");
}

void sgd_update_arena_cuda(Tensor& w, const Tensor& g, Tensor& v, const SgdDecayRanges& decay, double lr,
                           double momentum, double weight_decay, CudaStream s) {
  check_f32(w, "sgd_update_arena", "w");
  check_like(g, w, "sgd_update_arena", "g");
  check_like(v, w, "sgd_update_arena", "v");
  ALEXNET_ASSERT(w.ndim() == 1 && decay.count >= 0 && decay.count <= SgdDecayRanges::kMax,
                 "sgd_update_arena: w ", w.describe(), ", ", decay.count, " decay ranges");
  for (int r = 0; r < decay.count; ++r)
    ALEXNET_ASSERT(decay.begin[r] >= 0 && decay.begin[r] <= decay.end[r] && decay.end[r] <= w.numel(),
                   "sgd_update_arena: decay range [", decay.begin[r], ", ", decay.end[r], ") of an arena of ",
                   w.numel());
  set_device(w);
  sgd_arena<<<blocks_for(w.numel()), kThreads, 0, s>>>(w.data<float>(), g.data<float>(), v.data<float>(), w.numel(),
                                                       decay, static_cast<float>(momentum),
                                                       static_cast<float>(weight_decay * lr), static_cast<float>(lr));
  launched("sgd_update_arena");
}

namespace {

std::mutex g_event_mu;
// One reusable event per producer stream: a wait captures the event's state when it is issued, so the
// event can be recorded again at once.
std::map<std::pair<CudaStream, int>, cudaEvent_t> g_events;  // (stream, its device)

cudaEvent_t marker_of(CudaStream producer, int device) {
  std::lock_guard<std::mutex> lock(g_event_mu);
  cudaEvent_t& e = g_events[{producer, device}];
  if (!e) {
    ALEXNET_CUDA_CHECK(cudaSetDevice(device));
    ALEXNET_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  }
  return e;
}

}  // namespace

CudaStream cuda_create_stream(int device) {
  ALEXNET_CUDA_CHECK(cudaSetDevice(device));
  cudaStream_t s = nullptr;
  ALEXNET_CUDA_CHECK(cudaStreamCreate(&s));
  return s;
}

void cuda_destroy_stream(int device, CudaStream s) {
  if (!s) return;
  cudaSetDevice(device);
  cudaStreamSynchronize(s);
  cuda_release_stream_resources(device, s);
  {
    std::lock_guard<std::mutex> lock(g_event_mu);
    auto it = g_events.find({s, device});
    if (it != g_events.end()) {
      cudaEventDestroy(it->second);
      g_events.erase(it);
    }
  }
  cudaStreamDestroy(s);
}

void cuda_stream_wait(CudaStream waiter, int waiter_device, CudaStream producer, int producer_device) {
  if (waiter == producer && waiter_device == producer_device) return;
  cudaEvent_t e = marker_of(producer, producer_device);
  ALEXNET_CUDA_CHECK(cudaSetDevice(producer_device));
  ALEXNET_CUDA_CHECK(cudaEventRecord(e, producer));
  // A null waiter is the legacy stream of its own device: make that device current for the wait.
  ALEXNET_CUDA_CHECK(cudaSetDevice(waiter_device));
  ALEXNET_CUDA_CHECK(cudaStreamWaitEvent(waiter, e, 0));
}

bool cuda_enable_peer_access(int a, int b) {
  if (a == b) return true;
  int ab = 0, ba = 0;
  ALEXNET_CUDA_CHECK(cudaDeviceCanAccessPeer(&ab, a, b));
  ALEXNET_CUDA_CHECK(cudaDeviceCanAccessPeer(&ba, b, a));
  if (!ab || !ba) return false;
  for (auto [from, to] : {std::pair<int, int>{a, b}, std::pair<int, int>{b, a}}) {
    ALEXNET_CUDA_CHECK(cudaSetDevice(from));
    const cudaError_t err = cudaDeviceEnablePeerAccess(to, 0);
    if (err == cudaErrorPeerAccessAlreadyEnabled) {
      cudaGetLastError();  // not an error here; clear it
      continue;
    }
    ALEXNET_CUDA_CHECK(err);
  }
  return true;
}

void copy_columns_cuda(const Tensor& src, int64_t src_col0, CudaStream src_stream, Tensor& dst, int64_t dst_col0,
                       CudaStream dst_stream, int64_t width, bool accumulate, Tensor* staging) {
  ALEXNET_ASSERT(src.dtype() == DType::kF32 && dst.dtype() == DType::kF32 && src.dim(0) == dst.dim(0),
                 "copy_columns: ", src.describe(), " -> ", dst.describe());
  ALEXNET_ASSERT(src.device().is_cuda() || dst.device().is_cuda(), "copy_columns_cuda: both sides on the host");
  const int64_t N = src.dim(0), sw = src.numel() / N, dw = dst.numel() / N;
  ALEXNET_ASSERT(src_col0 + width <= sw && dst_col0 + width <= dw, "copy_columns: columns out of range");
  const size_t row_bytes = static_cast<size_t>(width) * sizeof(float);
  if (!dst.device().is_cuda()) {
    // Device to host: on the producing stream, then the host waits for it.
    ALEXNET_ASSERT(!accumulate, "copy_columns: accumulating into host memory");
    ALEXNET_CUDA_CHECK(cudaSetDevice(src.device().index));
    ALEXNET_CUDA_CHECK(cudaMemcpy2DAsync(dst.data<float>() + dst_col0, dw * sizeof(float), src.data<float>() + src_col0,
                                         sw * sizeof(float), row_bytes, N, cudaMemcpyDefault, src_stream));
    cuda_sync_check(src_stream, "copy_columns (device to host)");
    return;
  }
  const int dev = dst.device().index;
  if (src.device().is_cuda()) cuda_stream_wait(dst_stream, dev, src_stream, src.device().index);
  ALEXNET_CUDA_CHECK(cudaSetDevice(dev));
  float* into = dst.data<float>() + dst_col0;
  size_t into_pitch = dw * sizeof(float);
  if (accumulate) {
    ALEXNET_ASSERT(staging && staging->device() == dst.device() && staging->numel() == N * width &&
                       staging->dtype() == DType::kF32,
                   "copy_columns: accumulating needs staging [N, width] on ", dst.device().str());
    into = staging->data<float>();
    into_pitch = row_bytes;
  }
  if (src.device().is_cuda() && src.device().index != dev) {
    // Between two GPUs: the peer form of a pitched copy, direct where peer access is enabled
    // (cuda_enable_peer_access), staged by the driver where it is not.
    cudaMemcpy3DPeerParms c{};
    c.srcPtr = make_cudaPitchedPtr(const_cast<float*>(src.data<float>() + src_col0), sw * sizeof(float), row_bytes,
                                   static_cast<size_t>(N));
    c.srcDevice = src.device().index;
    c.dstPtr = make_cudaPitchedPtr(into, into_pitch, row_bytes, static_cast<size_t>(N));
    c.dstDevice = dev;
    c.extent = make_cudaExtent(row_bytes, static_cast<size_t>(N), 1);
    ALEXNET_CUDA_CHECK(cudaMemcpy3DPeerAsync(&c, dst_stream));
  } else {
    // Pageable host memory: the call returns once the source is staged, so the host may reuse it.
    // Page-locked memory is read by DMA later: waited for, so the same holds.
    ALEXNET_CUDA_CHECK(cudaMemcpy2DAsync(into, into_pitch, src.data<float>() + src_col0, sw * sizeof(float), row_bytes,
                                         N, cudaMemcpyDefault, dst_stream));
    if (src.page_locked()) cuda_sync_check(dst_stream, "copy_columns (from page-locked host memory)");
  }
  if (accumulate) {
    add_columns<<<blocks_for(N * width), kThreads, 0, dst_stream>>>(dst.data<float>(), dw, dst_col0,
                                                                    staging->data<float>(), width, N);
    launched("copy_columns");
  }
  // The producer's later writes to src wait for this read.
  if (src.device().is_cuda()) cuda_stream_wait(src_stream, src.device().index, dst_stream, dev);
}

// ---- pinned transfers ----

struct CudaPinnedTransfers::Slot {
  void* host = nullptr;  // pinned, `capacity` bytes
  size_t capacity = 0;
  cudaEvent_t done = nullptr;  // recorded after the slot's copy
  Tensor download_to;          // a download's host destination (undefined for an upload)
  Tensor source;               // an upload's page-locked source, read in place (kept until finish())
  size_t bytes = 0;
};

CudaPinnedTransfers::CudaPinnedTransfers(int device) : device_(device) {}

CudaPinnedTransfers::~CudaPinnedTransfers() {
  // Never throws: a copy that failed has no one to report to here, but its memory must outlive it.
  cudaSetDevice(device_);
  for (Slot& slot : slots_) {
    if (slot.done) {
      cudaEventSynchronize(slot.done);
      cudaEventDestroy(slot.done);
    }
    if (slot.host) cudaFreeHost(slot.host);
  }
}

CudaPinnedTransfers::Slot& CudaPinnedTransfers::next_slot(const Tensor& host, const Tensor& device, size_t bytes) {
  ALEXNET_ASSERT(host.device().is_cpu() && device.device() == Device::cuda(device_) && host.shape() == device.shape() &&
                     host.dtype() == device.dtype(),
                 "pinned transfer between ", host.describe(), " and ", device.describe(), " (transfers of GPU ",
                 device_, ")");
  ALEXNET_CUDA_CHECK(cudaSetDevice(device_));
  if (used_ == slots_.size()) slots_.emplace_back();
  Slot& slot = slots_[used_++];
  slot.download_to = Tensor();  // nothing of an earlier pass stays in the slot if a call below fails
  slot.bytes = 0;
  // The slot's copy of an earlier pass must have finished before its memory is written again (or, for
  // a source read in place, released).
  if (slot.done) {
    ALEXNET_CUDA_CHECK(cuda_wait_event(slot.done));
    slot.source = Tensor();
  } else {
    ALEXNET_CUDA_CHECK(cudaEventCreateWithFlags(&slot.done, cudaEventDisableTiming));
  }
  if (slot.capacity < bytes) {
    if (slot.host) ALEXNET_CUDA_CHECK(cudaFreeHost(slot.host));
    slot.host = nullptr;
    slot.capacity = 0;
    ALEXNET_CUDA_CHECK(cudaMallocHost(&slot.host, bytes));
    count_cuda_host_allocation();
    slot.capacity = bytes;
  }
  slot.bytes = bytes;
  return slot;
}

void CudaPinnedTransfers::upload(const Tensor& src, Tensor& dst, CudaStream s) {
  const bool locked = src.page_locked();
  Slot& slot = next_slot(src, dst, locked ? 0 : src.nbytes());
  if (src.nbytes() == 0) return;
  if (locked) {
    slot.source = src;
    slot.bytes = src.nbytes();
    ALEXNET_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), slot.bytes, cudaMemcpyHostToDevice, s));
    ++direct_uploads_;
  } else {
    std::memcpy(slot.host, src.raw_data(), slot.bytes);
    ALEXNET_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), slot.host, slot.bytes, cudaMemcpyHostToDevice, s));
  }
  ALEXNET_CUDA_CHECK(cudaEventRecord(slot.done, s));
}

void CudaPinnedTransfers::download(const Tensor& src, Tensor& dst, CudaStream s) {
  Slot& slot = next_slot(dst, src, src.nbytes());
  if (slot.bytes == 0) return;
  ALEXNET_CUDA_CHECK(cudaMemcpyAsync(slot.host, src.raw_data(), slot.bytes, cudaMemcpyDeviceToHost, s));
  ALEXNET_CUDA_CHECK(cudaEventRecord(slot.done, s));
  slot.download_to = dst;
}

void CudaPinnedTransfers::finish() {
  const size_t used = used_;
  used_ = 0;  // a failed copy below leaves no slot marked in use
  bool waited = false;  // one wait of the host however many copies it waits for (cuda_activity)
  for (size_t i = 0; i < used; ++i) {
    Slot& slot = slots_[i];
    if (slot.bytes == 0) continue;
    if (!waited && cuda_still_running(cudaEventQuery(slot.done))) {
      count_cuda_host_wait();
      waited = true;
    }
    const cudaError_t err = cudaEventSynchronize(slot.done);
    ALEXNET_CHECK(err == cudaSuccess, "a pinned copy on GPU ", device_, " (or the work queued before it): CUDA error: ",
                  cudaGetErrorString(err));
    if (slot.download_to.defined()) {
      std::memcpy(slot.download_to.raw_data(), slot.host, slot.bytes);
      slot.download_to = Tensor();
    }
    slot.source = Tensor();
  }
}

void cuda_sync_device(int device, const char* what) {
  ALEXNET_CUDA_CHECK(cudaSetDevice(device));
  count_cuda_host_wait();
  const cudaError_t err = cudaDeviceSynchronize();
  ALEXNET_CHECK(err == cudaSuccess, "", what, ": CUDA error on GPU ", device, ": ", cudaGetErrorString(err));
}

void cuda_sync_check(CudaStream s, const char* what) {
  const cudaError_t err = cuda_wait_stream(s);
  ALEXNET_CHECK(err == cudaSuccess, "", what, ": CUDA error: ", cudaGetErrorString(err));
}

}  // namespace alexnet
