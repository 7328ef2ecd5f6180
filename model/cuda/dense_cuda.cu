// Convolution through cuDNN (its legacy convolution API, deprecated in cuDNN 9 and kept behind
// conv2d_*_cuda so that a move to the graph API changes this file only), the FC layers through cuBLAS
// (cublasGemmEx with the precision's compute type), and batch norm as our own kernels with the CPU
// backend's statistics (double accumulation, unbiased running variance). Algorithms are chosen once per
// shape and math (cudnnFind..., deterministic ones first) and cached with their descriptors. Each
// (device, stream) has its own handles, cuDNN workspace, bf16 arena and partial-sum arena (bias gradients
// and batch-norm statistics, channel_sums), grown to the largest need in the first steps and then
// reused: a step allocates nothing.
//
// bf16: convolution operands are rounded to bf16 into the arena and cuDNN accumulates in float32; the
// FC products run on bf16 tensor cores from the float32 tensors (CUBLAS_COMPUTE_32F_FAST_16BF). Weights,
// gradients, activations and the update stay float32 (master weights), so only the products are bf16.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "core/cuda_check.h"
#include "core/error.h"
#include "core/log.h"
#include "model/cuda/kernel_elements.h"
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

// Per-channel float32 vectors [C] of a batch norm, on x's device.
void check_channel_vectors(const char* op, const Tensor& x,
                           std::initializer_list<std::pair<const char*, const Tensor*>> vectors) {
  for (const auto& [name, t] : vectors) {
    check_f32(*t, op, name);
    ALEXNET_ASSERT(t->numel() == x.dim(1) && t->device() == x.device(), "", op, ": ", name, " is ", t->describe(),
                   ", expected [", x.dim(1), "] on ", x.device().str());
  }
}

std::mutex g_mu;
Precision g_precision = Precision::kFloat32;
bool g_deterministic = true;
Bf16ConvLayout g_bf16_layout = Bf16ConvLayout::kFastest;

// Counts the replacements of device memory that captured work may name (cuda_resource_generation).
std::atomic<uint64_t> g_resource_generation{0};

// Device memory grown to the largest request and then reused. Growing waits for `stream` (the only
// user of the old block) before freeing it; after the first steps it never grows again.
struct Arena {
  void* data = nullptr;
  size_t bytes = 0;
  void* ensure(size_t need, CudaStream stream) {
    if (need > bytes) {
      if (data) {
        ALEXNET_CUDA_CHECK(cuda_wait_stream(stream));
        ALEXNET_CUDA_CHECK(cudaFree(data));
      }
      data = nullptr;
      bytes = 0;
      ALEXNET_CUDA_CHECK(cudaMalloc(&data, need));
      count_cuda_device_allocation();
      ++g_resource_generation;
      bytes = need;
    }
    return data;
  }
};

// Per (device, stream): library handles bound to the stream, the cuDNN workspace, the arena of the
// bf16 copies of convolution operands and that of the partial sums of channel_sums. Two towers on one GPU use two streams, so they never share a
// workspace or a handle while both run.
struct StreamContext {
  cudnnHandle_t cudnn = nullptr;
  cublasHandle_t cublas = nullptr;
  Arena workspace, low, sums;
  Arena gemm;  // cuBLAS's workspace, ours rather than its pool's: nothing is allocated inside a captured pass
};

// NVIDIA's recommendation for cuBLAS on Hopper (cuBLAS documentation, cublasSetWorkspace), ample below it.
constexpr size_t kCublasWorkspace = size_t{32} << 20;

std::map<std::pair<int, CudaStream>, std::unique_ptr<StreamContext>> g_contexts;

StreamContext& context(int device, CudaStream stream) {
  std::lock_guard<std::mutex> lock(g_mu);
  auto& slot = g_contexts[{device, stream}];
  if (!slot) {
    auto ctx = std::make_unique<StreamContext>();
    ALEXNET_CUDA_CHECK(cudaSetDevice(device));
    CUDNN_OK(cudnnCreate(&ctx->cudnn));
    count_cuda_device_allocation();
    CUDNN_OK(cudnnSetStream(ctx->cudnn, stream));
    CUBLAS_OK(cublasCreate(&ctx->cublas));
    count_cuda_device_allocation();
    CUBLAS_OK(cublasSetStream(ctx->cublas, stream));
    // After cublasSetStream, which puts the library's default workspace back.
    CUBLAS_OK(cublasSetWorkspace(ctx->cublas, ctx->gemm.ensure(kCublasWorkspace, stream), kCublasWorkspace));
    slot = std::move(ctx);
  }
  return *slot;
}

// ---- convolution ----

// How a convolution computes: float32 (no tensor-core conversion), TF32 tensor cores, or bf16 operands
// with float32 accumulation.
enum class ConvMath { kF32, kTf32, kBf16 };

ConvMath conv_math() {
  switch (g_precision) {
    case Precision::kFloat32: return ConvMath::kF32;
    case Precision::kTf32: return ConvMath::kTf32;
    case Precision::kBf16: return ConvMath::kBf16;
  }
  return ConvMath::kF32;
}

using ConvKey =
    std::tuple<int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, int, int, int, bool, int>;

// One direction's algorithm, chosen once: the algorithm, the workspace it asked for, the math type it
// was timed with (set on the descriptor before each call, so cuDNN runs the kernel it timed; float32
// plans keep CUDNN_FMA_MATH), the operand layout and cuDNN's time for it.
template <class Algo>
struct Choice {
  bool chosen = false;
  Algo algo{};
  size_t ws = 0;
  cudnnMathType_t math = CUDNN_FMA_MATH;
  bool nhwc = false;
  bool deterministic = false;  // cuDNN's word for the algorithm
  float ms = 0;                // cuDNN's time for it
};

// The descriptors of one operand layout: NCHW tensors and a KCRS filter, or (bf16 plans) NHWC tensors
// and a KRSC filter.
struct ConvDescs {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
};

struct ConvPlan {
  ConvMath math = ConvMath::kF32;
  bool deterministic = true;                          // parallel.deterministic when the plan was made
  Bf16ConvLayout layouts = Bf16ConvLayout::kFastest;  // the bf16 layouts the plan may search
  Shape xs, ws;                                       // x and w, and
  std::string shape;                                  // in words, for the plan report
  ConvDescs nchw, nhwc;
  cudnnConvolutionDescriptor_t conv = nullptr;
  bool unsupported = false;  // bf16: cuDNN offered no algorithm for a direction; the layer runs in TF32
  Choice<cudnnConvolutionFwdAlgo_t> fwd;
  Choice<cudnnConvolutionBwdDataAlgo_t> bwd_data;
  Choice<cudnnConvolutionBwdFilterAlgo_t> bwd_filter;
  // bf16, the times the layouts were chosen on (cuDNN's, plus our conversions; backward: filter +
  // data) for the layout taken and the other one (< 0: none there).
  float fwd_ms = -1, fwd_other_ms = -1, bwd_ms = -1, bwd_other_ms = -1;
  const ConvDescs& descs(bool in_nhwc) const { return in_nhwc ? nhwc : nchw; }
  // Whether a bf16 search may try this layout (NCHW only for float data).
  bool allows(bool in_nhwc) const {
    if (math != ConvMath::kBf16) return !in_nhwc;
    return layouts == Bf16ConvLayout::kFastest || (layouts == Bf16ConvLayout::kNhwc) == in_nhwc;
  }
};

// Puts the math type of the direction about to run on the plan's descriptor (one host thread issues
// every convolution, so the shared descriptor is not raced).
void use_math(const ConvPlan& plan, cudnnMathType_t m) { CUDNN_OK(cudnnSetConvolutionMathType(plan.conv, m)); }

// The math type a plan searches with: float32 FMA only (TF32 off); tf32 and bf16 tensor cores.
cudnnMathType_t plan_math(const ConvPlan& plan) {
  return plan.math == ConvMath::kF32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH;
}

// The largest workspace an algorithm search may use.
constexpr size_t kSearchWorkspace = size_t{512} << 20;

// Every plan made, in the order they were made (for the report).
std::map<ConvKey, std::unique_ptr<ConvPlan>> g_plans;
std::vector<const ConvPlan*> g_plan_order;

void make_descs(ConvDescs& d, cudnnTensorFormat_t format, cudnnDataType_t data, int64_t N, int64_t C, int64_t H,
                int64_t W, int64_t K, int64_t Cg, int64_t R, int64_t Ho, int64_t Wo) {
  CUDNN_OK(cudnnCreateTensorDescriptor(&d.x));
  CUDNN_OK(cudnnCreateTensorDescriptor(&d.y));
  CUDNN_OK(cudnnCreateFilterDescriptor(&d.w));
  // The dimensions are given as N, C, H, W whatever the format; the format sets the strides.
  CUDNN_OK(cudnnSetTensor4dDescriptor(d.x, format, data, static_cast<int>(N), static_cast<int>(C), static_cast<int>(H),
                                      static_cast<int>(W)));
  CUDNN_OK(cudnnSetTensor4dDescriptor(d.y, format, data, static_cast<int>(N), static_cast<int>(K),
                                      static_cast<int>(Ho), static_cast<int>(Wo)));
  CUDNN_OK(cudnnSetFilter4dDescriptor(d.w, data, format, static_cast<int>(K), static_cast<int>(Cg),
                                      static_cast<int>(R), static_cast<int>(R)));
}

ConvPlan& conv_plan(const Tensor& x, const Tensor& w, const ConvParams& p, ConvMath math) {
  const int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3), K = w.dim(0), R = w.dim(2);
  std::lock_guard<std::mutex> lock(g_mu);
  const ConvKey key{x.device().index, N, C, H, W, K, R, p.stride, p.pad, p.groups, static_cast<int>(math),
                    g_deterministic, static_cast<int>(g_bf16_layout)};
  auto& slot = g_plans[key];
  if (slot) return *slot;
  auto plan = std::make_unique<ConvPlan>();
  plan->math = math;
  plan->deterministic = g_deterministic;
  plan->layouts = g_bf16_layout;
  plan->xs = x.shape();
  plan->ws = w.shape();
  plan->shape = str_cat("GPU ", x.device().index, " x ", shape_str(x.shape()), " w ", shape_str(w.shape()), " stride ",
                        p.stride, " pad ", p.pad, " groups ", p.groups);
  const cudnnDataType_t data = math == ConvMath::kBf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
  const int64_t Ho = conv_out_size(H, R, p.stride, p.pad), Wo = conv_out_size(W, R, p.stride, p.pad);
  make_descs(plan->nchw, CUDNN_TENSOR_NCHW, data, N, C, H, W, K, w.dim(1), R, Ho, Wo);
  if (math == ConvMath::kBf16) make_descs(plan->nhwc, CUDNN_TENSOR_NHWC, data, N, C, H, W, K, w.dim(1), R, Ho, Wo);
  CUDNN_OK(cudnnCreateConvolutionDescriptor(&plan->conv));
  // Accumulation in float32 for every math.
  CUDNN_OK(cudnnSetConvolution2dDescriptor(plan->conv, p.pad, p.pad, p.stride, p.stride, 1, 1,
                                           CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  CUDNN_OK(cudnnSetConvolutionGroupCount(plan->conv, p.groups));
  CUDNN_OK(cudnnSetConvolutionMathType(plan->conv, plan_math(*plan)));
  slot = std::move(plan);
  g_plan_order.push_back(slot.get());
  return *slot;
}

// From a cudnnFind... result list (sorted fastest first): for a deterministic plan the fastest
// deterministic algorithm when there is one, else (and for any plan) the fastest that works (then
// repeated runs may differ in the last bits); null when none works. A float32 plan takes no result that
// was timed with tensor-core math, and only a bf16 plan takes one that converts its operands (to fp16
// or bf16): a TF32 plan's float data must not lose fp16's range.
template <class Perf>
const Perf* pick(const Perf* perf, int count, const ConvPlan& plan) {
  auto usable = [&](const Perf& r) {
    return r.status == CUDNN_STATUS_SUCCESS &&
           (plan.math != ConvMath::kF32 || r.mathType != CUDNN_TENSOR_OP_MATH) &&
           (plan.math == ConvMath::kBf16 || r.mathType != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION);
  };
  if (plan.deterministic)
    for (int i = 0; i < count; ++i)
      if (usable(perf[i]) && perf[i].determinism == CUDNN_DETERMINISTIC) return &perf[i];
  for (int i = 0; i < count; ++i)
    if (usable(perf[i])) return &perf[i];
  return nullptr;
}

// Records the pick from a search's results into `choice`; false when none is usable.
template <class Perf, class Algo>
bool record(const ConvPlan& plan, const Perf* perf, int count, bool in_nhwc, Choice<Algo>& choice) {
  const Perf* best = pick(perf, count, plan);
  if (!best) return false;
  choice.algo = best->algo;
  choice.ws = best->memory;
  choice.math = plan.math == ConvMath::kF32 ? CUDNN_FMA_MATH : best->mathType;
  choice.nhwc = in_nhwc;
  choice.deterministic = best->determinism == CUDNN_DETERMINISTIC;
  choice.ms = best->time;
  choice.chosen = true;
  return true;
}

// ---- bf16 operands ----

__global__ void to_bf16(const float* a, __nv_bfloat16* b, int64_t n) {
  FOR_EACH(i, n) b[i] = __float2bfloat16_rn(a[i]);
}

__global__ void from_bf16(const __nv_bfloat16* a, float* b, int64_t n) {
  FOR_EACH(i, n) b[i] = __bfloat162float(a[i]);
}

// [B][P][Q] float32 to [B][Q][P] bf16 (P = C, Q = H*W): an NCHW tensor (a KCRS filter) as NHWC (KRSC),
// rounded.
__global__ void to_bf16_transposed(const float* a, __nv_bfloat16* b, int64_t n, int64_t P, int64_t Q) {
  FOR_EACH(i, n) b[i] = __float2bfloat16_rn(a[kernel::transposed_source(i, P, Q)]);
}

// [B][P][Q] bf16 to [B][Q][P] float32 (P = H*W, Q = C): an NHWC result back to NCHW, widened.
__global__ void from_bf16_transposed(const __nv_bfloat16* a, float* b, int64_t n, int64_t P, int64_t Q) {
  FOR_EACH(i, n) b[i] = __bfloat162float(a[kernel::transposed_source(i, P, Q)]);
}

// y = bf16 result + bias (then ReLU), in float32; y NCHW, the result NCHW or NHWC.
__global__ void add_bias_from_bf16(const __nv_bfloat16* yb, float* y, const float* b, int64_t total, int64_t K,
                                   int64_t plane, bool relu, bool nhwc) {
  FOR_EACH(i, total) {
    const float v = __bfloat162float(yb[nhwc ? kernel::transposed_source(i, plane, K) : i]) + b[(i / plane) % K];
    y[i] = relu && v < 0.0f ? 0.0f : v;
  }
}

// Carves bf16 buffers of the given element counts out of a stream's arena (256-byte aligned).
template <size_t M>
std::array<__nv_bfloat16*, M> carve(Arena& arena, CudaStream s, const std::array<int64_t, M>& counts) {
  std::array<size_t, M> offsets{};
  size_t total = 0;
  for (size_t i = 0; i < M; ++i) {
    offsets[i] = total;
    total += (static_cast<size_t>(counts[i]) * sizeof(__nv_bfloat16) + 255) / 256 * 256;
  }
  char* base = static_cast<char*>(arena.ensure(total, s));
  std::array<__nv_bfloat16*, M> out{};
  for (size_t i = 0; i < M; ++i) out[i] = reinterpret_cast<__nv_bfloat16*>(base + offsets[i]);
  return out;
}

// A 4-D float32 tensor [B, P, h, w] (an activation, a gradient or a filter) rounded to bf16 in NCHW
// (KCRS) or NHWC (KRSC) order.
void convert_to_bf16(const Tensor& t, __nv_bfloat16* out, bool nhwc, CudaStream s) {
  if (nhwc)
    to_bf16_transposed<<<blocks_for(t.numel()), kThreads, 0, s>>>(t.data<float>(), out, t.numel(), t.dim(1),
                                                                  t.dim(2) * t.dim(3));
  else
    to_bf16<<<blocks_for(t.numel()), kThreads, 0, s>>>(t.data<float>(), out, t.numel());
}

// The way back: bf16 in the given order, widened into the float32 NCHW (KCRS) tensor t.
void convert_from_bf16(const __nv_bfloat16* in, bool nhwc, Tensor& t, CudaStream s) {
  if (nhwc)
    from_bf16_transposed<<<blocks_for(t.numel()), kThreads, 0, s>>>(in, t.data<float>(), t.numel(),
                                                                    t.dim(2) * t.dim(3), t.dim(1));
  else
    from_bf16<<<blocks_for(t.numel()), kThreads, 0, s>>>(in, t.data<float>(), t.numel());
}

__global__ void add_bias_nchw(float* y, const float* b, int64_t total, int64_t K, int64_t plane, bool relu) {
  FOR_EACH(i, total) {
    const float v = y[i] + b[(i / plane) % K];
    y[i] = relu && v < 0.0f ? 0.0f : v;
  }
}

// ---- per-channel sums: x viewed as [N, C, S], in double and in a fixed order ----
//
// Stage 1 splits each channel's N samples into G groups, one block per (channel, group): its threads
// stride over the group's elements, and a shared-memory tree adds their sums. Stage 2 adds each
// channel's G partial sums in order. The order depends on the shape alone, so every run gives the same
// bits, and G blocks per channel keep the GPU busy where one block per channel would not (a tower's
// conv1 bias gradient has 48 channels). [N, C] data (S = 1: FC layers, 1-D batch norm) is read across
// rows instead, 32 channels to a block, so a warp reads 32 consecutive floats.
constexpr int kSumGroups = 32;

// The terms summed: each adds element e's (of channel c) contribution to M running sums.
struct SumOf {
  const float* x;
  ALEXNET_HD void operator()(int64_t e, int64_t, double* acc) const { acc[0] += x[e]; }
};

// (x - mean)^2 with the channel's mean in double (batch norm's second pass: no E[x^2] - mean^2
// cancellation when |mean| >> std).
struct SquaredDeviation {
  const float* x;
  const double* mean;
  ALEXNET_HD void operator()(int64_t e, int64_t c, double* acc) const {
    const double d = x[e] - mean[c];
    acc[0] += d * d;
  }
};

// dbeta = sum dy; dgamma = sum dy * xhat.
struct BatchNormGradTerms {
  const float *x, *dy, *mean, *invstd;
  ALEXNET_HD void operator()(int64_t e, int64_t c, double* acc) const {
    acc[0] += dy[e];
    acc[1] += static_cast<double>(dy[e]) * (x[e] - mean[c]) * invstd[c];
  }
};

template <class Out, int M>
struct Outputs {
  Out* p[M];
};

template <int M, class Term>
__global__ void channel_partials(Term term, double* part, int64_t N, int64_t C, int64_t S, int G) {
  __shared__ double tree[M][kThreads];
  const int64_t c = blockIdx.x, g = blockIdx.y;
  double acc[M] = {};
  kernel::channel_thread_sums(term, threadIdx.x, blockDim.x, c, g, N, C, S, G, acc);
  for (int m = 0; m < M; ++m) tree[m][threadIdx.x] = acc[m];
  __syncthreads();
  for (int step = blockDim.x / 2; step > 0; step /= 2) {
    if (threadIdx.x < step)
      for (int m = 0; m < M; ++m) tree[m][threadIdx.x] += tree[m][threadIdx.x + step];
    __syncthreads();
  }
  if (threadIdx.x == 0)
    for (int m = 0; m < M; ++m) part[(m * C + c) * G + g] = tree[m][0];
}

// S = 1: a block is 32 channels (lanes) x 8 row lanes; row lane r adds rows n0 + r, n0 + r + 8, ...
static_assert(kThreads == 32 * 8, "column_partials lays a block out as 32 channels x 8 row lanes");
template <int M, class Term>
__global__ void column_partials(Term term, double* part, int64_t N, int64_t C, int G) {
  __shared__ double tree[M][8][33];
  const int lane = threadIdx.x % 32, row = threadIdx.x / 32;
  const int64_t c = blockIdx.x * int64_t{32} + lane, g = blockIdx.y;
  double acc[M] = {};
  kernel::column_thread_sums(term, lane, row, blockIdx.x, g, N, C, G, acc);
  for (int m = 0; m < M; ++m) tree[m][row][lane] = acc[m];
  __syncthreads();
  if (row == 0 && c < C)
    for (int m = 0; m < M; ++m) {
      double s = 0;
      for (int r = 0; r < 8; ++r) s += tree[m][r][lane];
      part[(m * C + c) * G + g] = s;
    }
}

template <int M, class Out>
__global__ void channel_totals(const double* part, Outputs<Out, M> out, int64_t C, int G, double divisor) {
  FOR_EACH(i, M * C) {
    double s = 0;
    for (int g = 0; g < G; ++g) s += part[i * G + g];
    out.p[i / C][i % C] = static_cast<Out>(divisor == 1.0 ? s : s / divisor);
  }
}

// out.p[m][c] = (sum over n, s of term m at (n, c, s)) / divisor, on stream s; the partial sums live
// in the stream's `sums` arena.
template <int M, class Term, class Out>
void channel_sums(StreamContext& ctx, CudaStream s, Term term, int64_t N, int64_t C, int64_t S, double divisor,
                  Outputs<Out, M> out) {
  // The per-thread loops count a group's elements in 32 bits (and step by up to kThreads past the end).
  ALEXNET_ASSERT(N >= 0 && C > 0 && S > 0 && N * S <= int64_t{UINT32_MAX} - kThreads, "channel sums over [", N,
                 ", ", C, ", ", S, "]: out of range");
  const bool columns = S == 1;
  const int G = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(kSumGroups, columns ? N / 8 : N)));
  double* part = static_cast<double*>(ctx.sums.ensure(sizeof(double) * M * C * G, s));
  if (columns)
    column_partials<M><<<dim3(static_cast<unsigned>((C + 31) / 32), G), kThreads, 0, s>>>(term, part, N, C, G);
  else
    channel_partials<M><<<dim3(static_cast<unsigned>(C), G), kThreads, 0, s>>>(term, part, N, C, S, G);
  channel_totals<M, Out><<<blocks_for(M * C), kThreads, 0, s>>>(part, out, C, G, divisor);
}

// ---- batch norm: sums in double (channel_sums) ----

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

cublasComputeType_t gemm_compute() {
  switch (g_precision) {
    case Precision::kFloat32: return CUBLAS_COMPUTE_32F;  // no TF32: the default math mode keeps it off
    case Precision::kTf32: return CUBLAS_COMPUTE_32F_FAST_TF32;
    case Precision::kBf16: return CUBLAS_COMPUTE_32F_FAST_16BF;  // bf16 products, float32 sums and storage
  }
  return CUBLAS_COMPUTE_32F;
}

// Column-major C[m, n] = op(A) op(B) on float32 storage with the precision's compute type.
void gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k,
          const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc) {
  const float one = 1.0f, zero = 0.0f;
  CUBLAS_OK(cublasGemmEx(h, ta, tb, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), &one, A, CUDA_R_32F,
                         static_cast<int>(lda), B, CUDA_R_32F, static_cast<int>(ldb), &zero, C, CUDA_R_32F,
                         static_cast<int>(ldc), gemm_compute(), CUBLAS_GEMM_DEFAULT));
}

// A cudnnFind... status: success, or "not supported" for this data type and shape (the caller falls
// back); anything else is an error, named. cuDNN 9 refines "not supported" (3000) into 3001..3014, and
// only those about the problem mean "no algorithm": 3005..3009 (an incompatible driver or CUDA runtime,
// an architecture mismatch, a missing prerequisite or sub-library) and 3013 (a CUDA-graph API) are a
// broken installation or misuse, which a fallback would hide behind a misleading "no algorithm" later.
//
// optional: a bf16 search, which another layout or TF32 backs (plan_for): a bad parameter there
// (2000..2999: a limit of the bf16 kernels for this shape, e.g. few channels per group) is logged and
// means "no algorithm in this layout"; every other failure is still an error.
bool searched(cudnnStatus_t st, const char* what, bool in_nhwc, bool optional) {
  switch (st) {
    case CUDNN_STATUS_SUCCESS:
      // A search tries algorithms that may fail and leave a CUDA error behind (the runtime's last
      // error); the search succeeded, so it must not be reported by the next launch check.
      (void)cudaGetLastError();
      return true;
    case CUDNN_STATUS_NOT_SUPPORTED:
    case CUDNN_STATUS_NOT_SUPPORTED_GRAPH_PATTERN:
    case CUDNN_STATUS_NOT_SUPPORTED_SHAPE:
    case CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE:
    case CUDNN_STATUS_NOT_SUPPORTED_LAYOUT:
    case CUDNN_STATUS_NOT_SUPPORTED_SHARED_MEMORY_INSUFFICIENT:
    case CUDNN_STATUS_NOT_SUPPORTED_PADDING:
    case CUDNN_STATUS_NOT_SUPPORTED_BAD_LAUNCH_PARAM:
    case CUDNN_STATUS_NOT_SUPPORTED_INVALID_DYNAMIC_SHAPE:
      (void)cudaGetLastError();
      return false;
    default:
      if (optional && static_cast<int>(st) >= 2000 && static_cast<int>(st) < 3000) {
        (void)cudaGetLastError();
        log_warn("cuDNN ", what, " algorithm search with ", in_nhwc ? "NHWC" : "NCHW", " bf16 operands failed: ",
                 cudnnGetErrorString(st), " (status ", static_cast<int>(st),
                 "); the pass takes the other layout, or TF32 where neither has an algorithm");
        return false;
      }
      ALEXNET_FAIL("cuDNN ", what, " algorithm search failed: ", cudnnGetErrorString(st), " (status ",
                   static_cast<int>(st), ")");
  }
}

// One direction searched in one layout on the given operands (cudnnFind... runs every algorithm on
// them): find(descriptors, perf, &count, workspace) makes the call; false when cuDNN has no usable
// algorithm.
template <class Perf, int kMax, class Algo, class Find>
bool search(const ConvPlan& plan, StreamContext& ctx, CudaStream s, bool in_nhwc, const char* what, Find find,
            Choice<Algo>& out) {
  Perf perf[kMax];
  int count = 0;
  // A pass that searched is no pass to capture after: the next may still search (a bf16 fallback to TF32).
  ++g_resource_generation;
  void* ws = ctx.workspace.ensure(kSearchWorkspace, s);
  use_math(plan, plan_math(plan));
  // The operand conversions queued just before: a launch error of theirs is theirs, not the search's
  // (searched() clears what the search leaves behind).
  launched(str_cat(what, " convolution (the operands for the algorithm search)").c_str());
  return searched(find(plan.descs(in_nhwc), perf, &count, ws), what, in_nhwc, plan.math == ConvMath::kBf16) &&
         record(plan, perf, count, in_nhwc, out);
}

bool search_forward(const ConvPlan& plan, StreamContext& ctx, CudaStream s, bool in_nhwc, const void* x,
                    const void* w, void* y, Choice<cudnnConvolutionFwdAlgo_t>& out) {
  constexpr int kMax = CUDNN_CONVOLUTION_FWD_ALGO_COUNT;
  return search<cudnnConvolutionFwdAlgoPerf_t, kMax>(
      plan, ctx, s, in_nhwc, "forward",
      [&](const ConvDescs& d, cudnnConvolutionFwdAlgoPerf_t* perf, int* count, void* ws) {
        return cudnnFindConvolutionForwardAlgorithmEx(ctx.cudnn, d.x, x, d.w, w, plan.conv, d.y, y, kMax, count, perf,
                                                      ws, kSearchWorkspace);
      },
      out);
}

bool search_backward_filter(const ConvPlan& plan, StreamContext& ctx, CudaStream s, bool in_nhwc, const void* x,
                            const void* dy, void* dw, Choice<cudnnConvolutionBwdFilterAlgo_t>& out) {
  constexpr int kMax = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT;
  return search<cudnnConvolutionBwdFilterAlgoPerf_t, kMax>(
      plan, ctx, s, in_nhwc, "backward-filter",
      [&](const ConvDescs& d, cudnnConvolutionBwdFilterAlgoPerf_t* perf, int* count, void* ws) {
        return cudnnFindConvolutionBackwardFilterAlgorithmEx(ctx.cudnn, d.x, x, d.y, dy, plan.conv, d.w, dw, kMax,
                                                             count, perf, ws, kSearchWorkspace);
      },
      out);
}

bool search_backward_data(const ConvPlan& plan, StreamContext& ctx, CudaStream s, bool in_nhwc, const void* w,
                          const void* dy, void* dx, Choice<cudnnConvolutionBwdDataAlgo_t>& out) {
  constexpr int kMax = CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT;
  return search<cudnnConvolutionBwdDataAlgoPerf_t, kMax>(
      plan, ctx, s, in_nhwc, "backward-data",
      [&](const ConvDescs& d, cudnnConvolutionBwdDataAlgoPerf_t* perf, int* count, void* ws) {
        return cudnnFindConvolutionBackwardDataAlgorithmEx(ctx.cudnn, d.w, w, d.y, dy, plan.conv, d.x, dx, kMax, count,
                                                           perf, ws, kSearchWorkspace);
      },
      out);
}

// The plan a convolution runs with: bf16 where cuDNN supports the shape, else TF32 (bf16 mode), or the
// precision's own.
ConvPlan& plan_for(const Tensor& x, const Tensor& w, const ConvParams& p) {
  const ConvMath math = conv_math();
  if (math == ConvMath::kBf16) {
    ConvPlan& low = conv_plan(x, w, p, ConvMath::kBf16);
    if (!low.unsupported) return low;
    return conv_plan(x, w, p, ConvMath::kTf32);
  }
  return conv_plan(x, w, p, math);
}

void conv_forward_float(ConvPlan& plan, StreamContext& ctx, const Tensor& x, const Tensor& w, const Tensor& b,
                        Tensor& y, bool post_relu, CudaStream s) {
  if (!plan.fwd.chosen) {
    launched("conv2d_forward (before the algorithm search)");  // our own kernels queued before it
    ALEXNET_CHECK(search_forward(plan, ctx, s, false, x.data<float>(), w.data<float>(), y.data<float>(), plan.fwd),
                  "cuDNN offers no forward algorithm for the convolution ", x.describe(), " * ", w.describe());
  }
  const float one = 1.0f, zero = 0.0f;
  void* ws = ctx.workspace.ensure(plan.fwd.ws, s);
  use_math(plan, plan.fwd.math);
  CUDNN_OK(cudnnConvolutionForward(ctx.cudnn, &one, plan.nchw.x, x.data<float>(), plan.nchw.w, w.data<float>(),
                                   plan.conv, plan.fwd.algo, ws, ctx.workspace.bytes, &zero, plan.nchw.y,
                                   y.data<float>()));
  add_bias_nchw<<<blocks_for(y.numel()), kThreads, 0, s>>>(y.data<float>(), b.data<float>(), y.numel(), y.dim(1),
                                                           y.dim(2) * y.dim(3), post_relu);
}

// Milliseconds the GPU takes for what `work` queues on stream s (the stream's earlier work excluded).
template <class Work>
float time_on(CudaStream s, Work work) {
  struct Events {
    cudaEvent_t a = nullptr, b = nullptr;
    ~Events() {
      if (a) cudaEventDestroy(a);
      if (b) cudaEventDestroy(b);
    }
  } e;
  ALEXNET_CUDA_CHECK(cudaEventCreate(&e.a));
  ALEXNET_CUDA_CHECK(cudaEventCreate(&e.b));
  ALEXNET_CUDA_CHECK(cudaEventRecord(e.a, s));
  work();
  ALEXNET_CUDA_CHECK(cudaEventRecord(e.b, s));
  ALEXNET_CUDA_CHECK(cuda_wait_event(e.b));
  float ms = 0;
  ALEXNET_CUDA_CHECK(cudaEventElapsedTime(&ms, e.a, e.b));
  return ms;
}

// Which of the two layouts' candidates a bf16 pass keeps (either may have none): under
// parallel.deterministic one whose algorithms are all deterministic before one that is not (pick()
// took a non-deterministic one only where a layout had no other), then the shorter time; NCHW on a tie.
int better_layout(const bool ok[2], const bool det[2], const float ms[2], bool deterministic) {
  if (!ok[0] || !ok[1]) return ok[1] ? 1 : 0;
  if (deterministic && det[0] != det[1]) return det[0] ? 0 : 1;
  return ms[0] <= ms[1] ? 0 : 1;
}

// bf16 forward: operands converted from the float32 tensors into the stream's arena, in the layout the
// plan chose, and a float32 result. The first call searches every layout the plan allows (NCHW and
// NHWC by default) on operands converted into each, and keeps the faster (better_layout): cuDNN's time
// for its algorithm, which includes the transposes cuDNN adds itself for NCHW operands (tensor-core
// kernels work in NHWC), plus the time of our conversions of the operands and of the result in that
// layout, measured after a first untimed run (which also loads the kernels). False: cuDNN has no bf16
// algorithm for this shape (the plan is marked and the caller runs TF32).
bool conv_forward_bf16(ConvPlan& plan, StreamContext& ctx, const Tensor& x, const Tensor& w, const Tensor& b,
                       Tensor& y, bool post_relu, CudaStream s) {
  auto epilogue = [&](const __nv_bfloat16* yb, bool nhwc) {
    add_bias_from_bf16<<<blocks_for(y.numel()), kThreads, 0, s>>>(yb, y.data<float>(), b.data<float>(), y.numel(),
                                                                  y.dim(1), y.dim(2) * y.dim(3), post_relu, nhwc);
  };
  if (!plan.fwd.chosen) {
    launched("conv2d_forward (before the algorithm search)");
    auto buf = carve<6>(ctx.low, s, {x.numel(), w.numel(), y.numel(), x.numel(), w.numel(), y.numel()});
    Choice<cudnnConvolutionFwdAlgo_t> found[2];
    float ms[2] = {0, 0};
    for (int nhwc = 0; nhwc < 2; ++nhwc) {
      if (!plan.allows(nhwc)) continue;
      __nv_bfloat16 *xb = buf[3 * nhwc], *wb = buf[3 * nhwc + 1], *yb = buf[3 * nhwc + 2];
      convert_to_bf16(x, xb, nhwc, s);
      convert_to_bf16(w, wb, nhwc, s);
      if (!search_forward(plan, ctx, s, nhwc, xb, wb, yb, found[nhwc])) continue;
      epilogue(yb, nhwc);  // y is written again by the call itself below
      ms[nhwc] = found[nhwc].ms + time_on(s, [&] {
        convert_to_bf16(x, xb, nhwc, s);
        convert_to_bf16(w, wb, nhwc, s);
        epilogue(yb, nhwc);
      });
      launched("conv2d_forward (the layout search's conversions)");
    }
    const bool ok[2] = {found[0].chosen, found[1].chosen};
    const bool det[2] = {found[0].deterministic, found[1].deterministic};
    const int best = better_layout(ok, det, ms, plan.deterministic);
    if (!ok[best]) {
      plan.unsupported = true;
      return false;
    }
    plan.fwd = found[best];
    plan.fwd_ms = ms[best];
    plan.fwd_other_ms = ok[1 - best] ? ms[1 - best] : -1.0f;
  }
  const bool nhwc = plan.fwd.nhwc;
  const ConvDescs& d = plan.descs(nhwc);
  auto [xb, wb, yb] = carve<3>(ctx.low, s, {x.numel(), w.numel(), y.numel()});
  convert_to_bf16(x, xb, nhwc, s);
  convert_to_bf16(w, wb, nhwc, s);
  const float one = 1.0f, zero = 0.0f;
  void* ws = ctx.workspace.ensure(plan.fwd.ws, s);
  use_math(plan, plan.fwd.math);
  CUDNN_OK(cudnnConvolutionForward(ctx.cudnn, &one, d.x, xb, d.w, wb, plan.conv, plan.fwd.algo, ws,
                                   ctx.workspace.bytes, &zero, d.y, yb));
  epilogue(yb, nhwc);
  return true;
}

void conv_backward_float(ConvPlan& plan, StreamContext& ctx, const Tensor& x, const Tensor& w, const Tensor& dy,
                         Tensor* dx, Tensor& dw, CudaStream s) {
  if (!plan.bwd_filter.chosen || (dx && !plan.bwd_data.chosen))
    launched("conv2d_backward (before the algorithm search)");  // our own kernels queued before it
  if (!plan.bwd_filter.chosen)
    ALEXNET_CHECK(search_backward_filter(plan, ctx, s, false, x.data<float>(), dy.data<float>(), dw.data<float>(),
                                         plan.bwd_filter),
                  "cuDNN offers no backward-filter algorithm for the convolution ", x.describe(), " * ", w.describe());
  if (dx && !plan.bwd_data.chosen)
    ALEXNET_CHECK(search_backward_data(plan, ctx, s, false, w.data<float>(), dy.data<float>(), dx->data<float>(),
                                       plan.bwd_data),
                  "cuDNN offers no backward-data algorithm for the convolution ", x.describe(), " * ", w.describe());
  const float one = 1.0f, zero = 0.0f;
  void* ws = ctx.workspace.ensure(std::max(plan.bwd_filter.ws, dx ? plan.bwd_data.ws : 0), s);
  use_math(plan, plan.bwd_filter.math);
  CUDNN_OK(cudnnConvolutionBackwardFilter(ctx.cudnn, &one, plan.nchw.x, x.data<float>(), plan.nchw.y, dy.data<float>(),
                                          plan.conv, plan.bwd_filter.algo, ws, ctx.workspace.bytes, &zero, plan.nchw.w,
                                          dw.data<float>()));
  if (dx) {
    use_math(plan, plan.bwd_data.math);
    CUDNN_OK(cudnnConvolutionBackwardData(ctx.cudnn, &one, plan.nchw.w, w.data<float>(), plan.nchw.y, dy.data<float>(),
                                          plan.conv, plan.bwd_data.algo, ws, ctx.workspace.bytes, &zero, plan.nchw.x,
                                          dx->data<float>()));
  }
}

// As conv_forward_bf16: the gradients are computed from bf16 operands and widened to float32. Both
// passes of the backward share one layout (x, w and dy are converted once), chosen on the filter plus
// data times with our conversions and widenings. A data gradient asked for only later (the network
// never does: conv1 has none, the others always have one) is searched in the layout the filter
// gradient already runs in.
bool conv_backward_bf16(ConvPlan& plan, StreamContext& ctx, const Tensor& x, const Tensor& w, const Tensor& dy,
                        Tensor* dx, Tensor& dw, CudaStream s) {
  const int64_t nx = x.numel(), nw = w.numel(), ndy = dy.numel(), ndx = dx ? x.numel() : 0;
  auto convert_operands = [&](__nv_bfloat16* xb, __nv_bfloat16* wb, __nv_bfloat16* dyb, bool nhwc) {
    convert_to_bf16(x, xb, nhwc, s);
    convert_to_bf16(w, wb, nhwc, s);
    convert_to_bf16(dy, dyb, nhwc, s);
  };
  auto widen = [&](const __nv_bfloat16* dwb, const __nv_bfloat16* dxb, bool nhwc) {
    if (dwb) convert_from_bf16(dwb, nhwc, dw, s);
    if (dx) convert_from_bf16(dxb, nhwc, *dx, s);
  };
  if (!plan.bwd_filter.chosen || (dx && !plan.bwd_data.chosen)) {
    launched("conv2d_backward (before the algorithm search)");
    auto buf = carve<10>(ctx.low, s, {nx, nw, ndy, nw, ndx, nx, nw, ndy, nw, ndx});
    Choice<cudnnConvolutionBwdFilterAlgo_t> filter[2];
    Choice<cudnnConvolutionBwdDataAlgo_t> data[2];
    bool ok[2] = {false, false}, det[2] = {false, false};
    float ms[2] = {0, 0};
    for (int nhwc = 0; nhwc < 2; ++nhwc) {
      if (!plan.allows(nhwc) || (plan.bwd_filter.chosen && plan.bwd_filter.nhwc != static_cast<bool>(nhwc))) continue;
      __nv_bfloat16 *xb = buf[5 * nhwc], *wb = buf[5 * nhwc + 1], *dyb = buf[5 * nhwc + 2],
                    *dwb = buf[5 * nhwc + 3], *dxb = buf[5 * nhwc + 4];
      convert_operands(xb, wb, dyb, nhwc);
      if (plan.bwd_filter.chosen)
        filter[nhwc] = plan.bwd_filter;
      else if (!search_backward_filter(plan, ctx, s, nhwc, xb, dyb, dwb, filter[nhwc]))
        continue;
      if (dx && !search_backward_data(plan, ctx, s, nhwc, wb, dyb, dxb, data[nhwc])) continue;
      ok[nhwc] = true;
      det[nhwc] = filter[nhwc].deterministic && (!dx || data[nhwc].deterministic);
      // Only what this search adds: with the filter gradient chosen earlier, its operands and dw are
      // already in its time (and dwb holds nothing).
      __nv_bfloat16* const searched_dwb = plan.bwd_filter.chosen ? nullptr : dwb;
      widen(searched_dwb, dxb, nhwc);  // dw and dx are written again by the call itself below
      const float extra = time_on(s, [&] {
        if (searched_dwb) convert_operands(xb, wb, dyb, nhwc);
        widen(searched_dwb, dxb, nhwc);
      });
      launched("conv2d_backward (the layout search's conversions)");
      ms[nhwc] = filter[nhwc].ms + (dx ? data[nhwc].ms : 0.0f) + extra;
    }
    const int best = better_layout(ok, det, ms, plan.deterministic);
    if (!ok[best]) {
      plan.unsupported = true;
      return false;
    }
    plan.bwd_filter = filter[best];
    if (dx) plan.bwd_data = data[best];
    plan.bwd_ms = ms[best];
    plan.bwd_other_ms = ok[1 - best] ? ms[1 - best] : -1.0f;
  }
  const bool nhwc = plan.bwd_filter.nhwc;
  const ConvDescs& d = plan.descs(nhwc);
  auto [xb, wb, dyb, dwb, dxb] = carve<5>(ctx.low, s, {nx, nw, ndy, nw, ndx});
  convert_operands(xb, wb, dyb, nhwc);
  const float one = 1.0f, zero = 0.0f;
  void* ws = ctx.workspace.ensure(std::max(plan.bwd_filter.ws, dx ? plan.bwd_data.ws : 0), s);
  use_math(plan, plan.bwd_filter.math);
  CUDNN_OK(cudnnConvolutionBackwardFilter(ctx.cudnn, &one, d.x, xb, d.y, dyb, plan.conv, plan.bwd_filter.algo, ws,
                                          ctx.workspace.bytes, &zero, d.w, dwb));
  if (dx) {
    use_math(plan, plan.bwd_data.math);
    CUDNN_OK(cudnnConvolutionBackwardData(ctx.cudnn, &one, d.w, wb, d.y, dyb, plan.conv, plan.bwd_data.algo, ws,
                                          ctx.workspace.bytes, &zero, d.x, dxb));
  }
  widen(dwb, dxb, nhwc);
  return true;
}

// "algorithm 1 (cuDNN 0.412 ms)" for the report.
template <class Algo>
std::string describe(const Choice<Algo>& c) {
  return c.chosen ? str_cat("algorithm ", static_cast<int>(c.algo), " (cuDNN ", c.ms, " ms)") : "not searched";
}

// ", NHWC ... 0.45 ms with our conversions (NCHW 0.70 ms)" for a bf16 pass.
std::string layout_times(bool chosen, bool nhwc, float ms, float other_ms) {
  if (!chosen || ms < 0) return "";
  return str_cat(", ", ms, " ms with our conversions",
                 other_ms < 0 ? std::string() : str_cat(" (", nhwc ? "NCHW" : "NHWC", " ", other_ms, " ms)"));
}

}  // namespace

void cuda_release_stream_resources(int device, CudaStream stream) {
  std::unique_ptr<StreamContext> ctx;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    auto it = g_contexts.find({device, stream});
    if (it == g_contexts.end()) return;
    ctx = std::move(it->second);
    g_contexts.erase(it);
  }
  cudaSetDevice(device);
  cudaStreamSynchronize(stream);
  if (ctx->cudnn) cudnnDestroy(ctx->cudnn);
  if (ctx->cublas) cublasDestroy(ctx->cublas);
  if (ctx->workspace.data) cudaFree(ctx->workspace.data);
  if (ctx->low.data) cudaFree(ctx->low.data);
  if (ctx->sums.data) cudaFree(ctx->sums.data);
  if (ctx->gemm.data) cudaFree(ctx->gemm.data);
  ++g_resource_generation;
}

uint64_t cuda_resource_generation() { return g_resource_generation.load(); }

void set_cuda_precision(Precision p) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_precision = p;
  ++g_resource_generation;  // a captured pass ran the old choice
}

void set_cuda_deterministic(bool deterministic) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_deterministic = deterministic;
  ++g_resource_generation;  // a captured pass ran the old choice
}

void set_cuda_bf16_conv_layout(Bf16ConvLayout layout) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_bf16_layout = layout;
  ++g_resource_generation;  // a captured pass ran the old choice
}

ConvPlanReport cuda_conv_plan_report() {
  std::lock_guard<std::mutex> lock(g_mu);
  ConvPlanReport report;
  for (const ConvPlan* p : g_plan_order) {
    ConvPlanInfo info;
    info.x = p->xs;
    info.w = p->ws;
    info.precision = p->math == ConvMath::kBf16   ? Precision::kBf16
                     : p->math == ConvMath::kTf32 ? Precision::kTf32
                                                  : Precision::kFloat32;
    info.layouts = p->layouts;
    info.unsupported = p->unsupported;
    const bool low = p->math == ConvMath::kBf16;
    auto where = [&](bool chosen, bool nhwc) { return low && chosen ? (nhwc ? "NHWC, " : "NCHW, ") : ""; };
    info.text = str_cat(p->shape, ", ", enum_name(info.precision), p->deterministic ? "" : ", fastest algorithms",
                        p->unsupported ? ", no bf16 algorithm (runs in TF32)" : "", ": forward ",
                        where(p->fwd.chosen, p->fwd.nhwc), describe(p->fwd),
                        layout_times(p->fwd.chosen, p->fwd.nhwc, p->fwd_ms, p->fwd_other_ms), "; backward ",
                        where(p->bwd_filter.chosen, p->bwd_filter.nhwc), "filter ", describe(p->bwd_filter),
                        ", data ", describe(p->bwd_data),
                        layout_times(p->bwd_filter.chosen, p->bwd_filter.nhwc, p->bwd_ms, p->bwd_other_ms));
    for (const auto& [chosen, nhwc] :
         {std::pair{p->fwd.chosen, p->fwd.nhwc}, std::pair{p->bwd_filter.chosen, p->bwd_filter.nhwc}})
      if (chosen) {
        ++info.passes;
        if (nhwc) ++info.nhwc_passes;
      }
    info.nondeterministic = (p->fwd.chosen && !p->fwd.deterministic) ||
                            (p->bwd_filter.chosen && !p->bwd_filter.deterministic) ||
                            (p->bwd_data.chosen && !p->bwd_data.deterministic);
    if (low && !p->unsupported) {
      report.bf16_passes += info.passes;
      report.bf16_nhwc_passes += info.nhwc_passes;
    }
    report.plans.push_back(std::move(info));
  }
  return report;
}

namespace {

// x [N, C, H, W], w [K, C / groups, R, R] (square kernels: the plan cache keys on R), y [N, K, Ho, Wo].
bool conv_shapes_match(const Tensor& x, const Tensor& w, const Tensor& y, const ConvParams& p) {
  return y.ndim() == 4 && p.groups >= 1 && w.dim(2) == w.dim(3) && x.dim(1) == w.dim(1) * p.groups &&
         w.dim(0) % p.groups == 0 && y.dim(0) == x.dim(0) && y.dim(1) == w.dim(0) &&
         y.dim(2) == conv_out_size(x.dim(2), w.dim(2), p.stride, p.pad) &&
         y.dim(3) == conv_out_size(x.dim(3), w.dim(3), p.stride, p.pad);
}

}  // namespace

void conv2d_forward_cuda(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y, const ConvParams& p,
                         bool post_relu, CudaStream s) {
  for (const Tensor* t : std::initializer_list<const Tensor*>{&x, &w, &b, &y}) check_f32(*t, "conv2d_forward", "an argument");
  ALEXNET_ASSERT(x.ndim() == 4 && w.ndim() == 4 && b.numel() == w.dim(0) && conv_shapes_match(x, w, y, p),
                 "conv2d_forward: x ", x.describe(), " w ", w.describe(), " b ", b.describe(), " y ", y.describe(),
                 " stride ", p.stride, " pad ", p.pad, " groups ", p.groups);
  ALEXNET_CUDA_CHECK(cudaSetDevice(x.device().index));
  StreamContext& ctx = context(x.device().index, s);
  ConvPlan* plan = &plan_for(x, w, p);
  if (plan->math == ConvMath::kBf16) {
    if (!conv_forward_bf16(*plan, ctx, x, w, b, y, post_relu, s)) plan = &plan_for(x, w, p);
  }
  if (plan->math != ConvMath::kBf16) conv_forward_float(*plan, ctx, x, w, b, y, post_relu, s);
  launched("conv2d_forward");
}

void conv2d_backward_cuda(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor& dw, Tensor& db,
                          const ConvParams& p, CudaStream s) {
  for (const Tensor* t : std::initializer_list<const Tensor*>{&x, &w, &dy, &dw, &db})
    check_f32(*t, "conv2d_backward", "an argument");
  if (dx) {
    check_f32(*dx, "conv2d_backward", "dx");
    ALEXNET_ASSERT(dx->shape() == x.shape(), "conv2d_backward: dx ", dx->describe(), " x ", x.describe());
  }
  ALEXNET_ASSERT(x.ndim() == 4 && w.ndim() == 4 && dw.shape() == w.shape() && db.numel() == w.dim(0) &&
                     conv_shapes_match(x, w, dy, p),
                 "conv2d_backward: x ", x.describe(), " w ", w.describe(), " dw ", dw.describe(), " db ", db.describe(),
                 " dy ", dy.describe(), " stride ", p.stride, " pad ", p.pad, " groups ", p.groups);
  ALEXNET_CUDA_CHECK(cudaSetDevice(x.device().index));
  StreamContext& ctx = context(x.device().index, s);
  ConvPlan* plan = &plan_for(x, w, p);
  if (plan->math == ConvMath::kBf16) {
    if (!conv_backward_bf16(*plan, ctx, x, w, dy, dx, dw, s)) plan = &plan_for(x, w, p);
  }
  if (plan->math != ConvMath::kBf16) conv_backward_float(*plan, ctx, x, w, dy, dx, dw, s);
  channel_sums<1>(ctx, s, SumOf{dy.data<float>()}, dy.dim(0), dy.dim(1), dy.dim(2) * dy.dim(3), 1.0,
                  Outputs<float, 1>{{db.data<float>()}});
  launched("conv2d_backward");
}

void linear_forward_cuda(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y, bool post_relu, CudaStream s) {
  for (const Tensor* t : std::initializer_list<const Tensor*>{&x, &w, &b, &y}) check_f32(*t, "linear_forward", "an argument");
  const int64_t N = x.dim(0), In = x.dim(1), Out = w.dim(0);
  ALEXNET_ASSERT(w.dim(1) == In && y.dim(0) == N && y.dim(1) == Out && b.numel() == Out, "linear_forward: x ",
                 x.describe(), " w ", w.describe(), " y ", y.describe());
  ALEXNET_CUDA_CHECK(cudaSetDevice(x.device().index));
  // cuBLAS is column-major: a row-major [r, c] matrix is its column-major transpose, so y = x w^T
  // (row-major) is y^T = w x^T (column-major), with w^T read from w as [In, Out] and lda In.
  gemm(context(x.device().index, s).cublas, CUBLAS_OP_T, CUBLAS_OP_N, Out, N, In, w.data<float>(), In, x.data<float>(),
       In, y.data<float>(), Out);
  add_bias_rows<<<blocks_for(y.numel()), kThreads, 0, s>>>(y.data<float>(), b.data<float>(), y.numel(), Out, post_relu);
  launched("linear_forward");
}

void linear_backward_cuda(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor& dw, Tensor& db,
                          CudaStream s) {
  for (const Tensor* t : std::initializer_list<const Tensor*>{&x, &w, &dy, &dw, &db})
    check_f32(*t, "linear_backward", "an argument");
  const int64_t N = x.dim(0), In = x.dim(1), Out = w.dim(0);
  ALEXNET_ASSERT(w.dim(1) == In && dy.dim(0) == N && dy.dim(1) == Out && dw.shape() == w.shape() && db.numel() == Out,
                 "linear_backward: x ", x.describe(), " w ", w.describe(), " dy ", dy.describe());
  ALEXNET_CUDA_CHECK(cudaSetDevice(x.device().index));
  StreamContext& ctx = context(x.device().index, s);
  cublasHandle_t h = ctx.cublas;
  if (dx) {  // dx^T = w^T dy^T
    check_f32(*dx, "linear_backward", "dx");
    gemm(h, CUBLAS_OP_N, CUBLAS_OP_N, In, N, Out, w.data<float>(), In, dy.data<float>(), Out, dx->data<float>(), In);
  }
  // dw^T = x^T dy  (column-major In x Out)
  gemm(h, CUBLAS_OP_N, CUBLAS_OP_T, In, Out, N, x.data<float>(), In, dy.data<float>(), Out, dw.data<float>(), In);
  channel_sums<1>(ctx, s, SumOf{dy.data<float>()}, N, Out, 1, 1.0, Outputs<float, 1>{{db.data<float>()}});
  launched("linear_backward");
}

void batchnorm_forward_cuda(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                            Tensor& running_var, bool training, Tensor& y, Tensor& saved_mean, Tensor& saved_invstd,
                            const BatchNormParams& p, Tensor& stats_workspace, CudaStream s) {
  check_f32(x, "batchnorm_forward", "x");
  ALEXNET_ASSERT(x.ndim() == 2 || x.ndim() == 4, "batchnorm_forward: x ", x.describe());
  const int64_t N = x.dim(0), C = x.dim(1), S = x.ndim() == 4 ? x.dim(2) * x.dim(3) : 1;
  check_channel_vectors("batchnorm_forward", x, {{"gamma", &gamma}, {"beta", &beta}, {"running_mean", &running_mean},
                                                 {"running_var", &running_var}});
  check_f32(y, "batchnorm_forward", "y");
  ALEXNET_ASSERT(y.shape() == x.shape() && y.device() == x.device(), "batchnorm_forward: y ", y.describe(), " for x ",
                 x.describe());
  if (training) {
    check_channel_vectors("batchnorm_forward", x, {{"saved_mean", &saved_mean}, {"saved_invstd", &saved_invstd}});
    ALEXNET_ASSERT(N * S > 0 && stats_workspace.device() == x.device(), "batchnorm_forward: stats_workspace ",
                   stats_workspace.describe(), " for x ", x.describe());
  }
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
  // Two passes, as batchnorm_cpu.cc: the mean, then the mean squared deviation from it.
  StreamContext& ctx = context(x.device().index, s);
  const double m = static_cast<double>(N * S);
  channel_sums<1>(ctx, s, SumOf{x.data<float>()}, N, C, S, m, Outputs<double, 1>{{mean}});
  channel_sums<1>(ctx, s, SquaredDeviation{x.data<float>(), mean}, N, C, S, m, Outputs<double, 1>{{var}});
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
  ALEXNET_ASSERT(x.ndim() == 2 || x.ndim() == 4, "batchnorm_backward: x ", x.describe());
  const int64_t N = x.dim(0), C = x.dim(1), S = x.ndim() == 4 ? x.dim(2) * x.dim(3) : 1;
  check_channel_vectors("batchnorm_backward", x, {{"gamma", &gamma}, {"saved_mean", &saved_mean},
                                                  {"saved_invstd", &saved_invstd}, {"dgamma", &dgamma},
                                                  {"dbeta", &dbeta}});
  for (const auto& [name, t] : {std::pair<const char*, const Tensor*>{"dy", &dy}, {"dx", &dx}}) {
    check_f32(*t, "batchnorm_backward", name);
    ALEXNET_ASSERT(t->shape() == x.shape() && t->device() == x.device(), "batchnorm_backward: ", name, " ",
                   t->describe(), " for x ", x.describe());
  }
  ALEXNET_CUDA_CHECK(cudaSetDevice(x.device().index));
  channel_sums<2>(context(x.device().index, s), s,
                  BatchNormGradTerms{x.data<float>(), dy.data<float>(), saved_mean.data<float>(),
                                     saved_invstd.data<float>()},
                  N, C, S, 1.0, Outputs<float, 2>{{dbeta.data<float>(), dgamma.data<float>()}});
  bn_grad_input<<<blocks_for(x.numel()), kThreads, 0, s>>>(x.data<float>(), dy.data<float>(), saved_mean.data<float>(),
                                                           saved_invstd.data<float>(), gamma.data<float>(),
                                                           dgamma.data<float>(), dbeta.data<float>(), dx.data<float>(),
                                                           x.numel(), C, S, static_cast<double>(N * S));
  launched("batchnorm_backward");
}

}  // namespace alexnet
