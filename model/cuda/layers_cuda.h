// CUDA twins of the layer entry functions of model/layers.h: our own kernels for the paper-exact LRN,
// activations, max pooling, dropout with the CPU's counter-based masks, softmax cross-entropy, batch norm
// and the paper's SGD update; cuDNN for convolution and cuBLAS for the FC layers. Same argument lists
// plus a stream; float32 tensors on one CUDA device.
//
// Every call is asynchronous on `stream` (nullptr: the legacy default stream) and allocates nothing
// (CudaPinnedTransfers below grows its pinned blocks on first use), except softmax_xent_forward_cuda,
// which returns the loss and therefore synchronises the stream (the graph uses softmax_xent_rows_cuda
// and reads the rows back later).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/tensor.h"
#include "model/layers.h"

struct CUstream_st;

namespace alexnet {

using CudaStream = CUstream_st*;

void relu_forward_cuda(const Tensor& x, Tensor& y, CudaStream stream);
void relu_backward_cuda(const Tensor& y, const Tensor& dy, Tensor& dx, CudaStream stream);
void tanh_forward_cuda(const Tensor& x, Tensor& y, CudaStream stream);
void tanh_backward_cuda(const Tensor& y, const Tensor& dy, Tensor& dx, CudaStream stream);

// As lrn_forward_cpu / lrn_backward_cpu (across channels) and lrn2d_* (within one channel).
void lrn_forward_cuda(const Tensor& x, Tensor& y, Tensor& scale, const LrnParams& p, CudaStream stream);
void lrn_backward_cuda(const Tensor& x, const Tensor& y, const Tensor& scale, const Tensor& dy, Tensor& dx,
                       const LrnParams& p, CudaStream stream);
void lrn2d_forward_cuda(const Tensor& x, Tensor& y, Tensor& scale, const LrnParams& p, CudaStream stream);
void lrn2d_backward_cuda(const Tensor& x, const Tensor& y, const Tensor& scale, const Tensor& dy, Tensor& dx,
                         const LrnParams& p, CudaStream stream);

// As maxpool_*_cpu: argmax int32 (index in the plane, first maximum in row-major order). The backward
// gathers (each input element sums, in ascending output order like the CPU, the outputs whose argmax it
// is), so it is deterministic and equal to the CPU's sums.
void maxpool_forward_cuda(const Tensor& x, Tensor& y, Tensor& argmax, const PoolParams& p, CudaStream stream);
void maxpool_backward_cuda(const Tensor& dy, const Tensor& argmax, Tensor& dx, const PoolParams& p,
                           CudaStream stream);

// As dropout_forward_cpu with the same keying, so the masks are bit-identical to the CPU's.
// sample_ids: int64 [N] on the device, or an undefined tensor (row r stands for sample r).
void dropout_forward_cuda(const Tensor& x, Tensor& y, Tensor& mask, double p, PhiloxKey key, uint64_t step,
                          const Tensor& sample_ids, int64_t unit_offset, CudaStream stream);
void dropout_backward_cuda(const Tensor& dy, const Tensor& mask, double p, Tensor& dx, CudaStream stream);

// As softmax_xent_*_cpu. row_loss: float64 [N] on the device (workspace); labels int64 [N] on the device.
// Returns the mean loss (copies N doubles to the host and synchronises the stream).
double softmax_xent_forward_cuda(const Tensor& logits, const Tensor& labels, Tensor& probs, Tensor& row_loss,
                                 CudaStream stream);
// The same without waiting: probs and each row's loss (row_loss, float64 [N]: -1 marks a label outside
// [0, K)) are written on `stream`; softmax_xent_mean turns the rows, once on the host, into the mean.
void softmax_xent_rows_cuda(const Tensor& logits, const Tensor& labels, Tensor& probs, Tensor& row_loss,
                            CudaStream stream);
void softmax_xent_backward_cuda(const Tensor& probs, const Tensor& labels, Tensor& dlogits, CudaStream stream);

// The paper's rule: v <- momentum v - weight_decay lr w - lr g; w <- w + v (one fused pass).
void sgd_update_cuda(Tensor& w, const Tensor& g, Tensor& v, double lr, double momentum, double weight_decay,
                     CudaStream stream);
// The same rule over whole arenas w, g, v (float32 [n] on one device) in one launch: element i decays
// when it lies in one of the ranges of `decay` (the conv and FC weights), else not (biases, batch-norm
// parameters, the zero padding between tensors). Each element runs sgd_update_cuda's expression.
struct SgdDecayRanges {
  static constexpr int kMax = 32;
  int count = 0;
  int64_t begin[kMax] = {}, end[kMax] = {};
};
void sgd_update_arena_cuda(Tensor& w, const Tensor& g, Tensor& v, const SgdDecayRanges& decay, double lr,
                           double momentum, double weight_decay, CudaStream stream);

// ---- the input step ----

// The network input from the wire's uint8 crops, on the device, bit for bit what normalize_crop
// (data_service/augment.h) computes on the CPU: out = crop - mean + lighting, the mean image read where the
// crop came from (mirrored with it), or the per-channel mean. crops: uint8 [N, 3, C, C]; placement: int32
// [N, 3] (crop_x, crop_y, flip); lighting: float32 [N, 3]; mean: float32 [3, S, S] (the mean image) or [3]
// (channel means, as float); out: float32 [N, 3, C, C]. All on one device. A crop outside the S x S image
// is caught on the host by the caller (the client checks every placement), not here.
void normalize_crops_cuda(const Tensor& crops, const Tensor& placement, const Tensor& lighting, const Tensor& mean,
                          Tensor& out, CudaStream stream);

// ---- library-backed layers (model/cuda/dense_cuda.cu) ----

// float32 (default): TF32 off in cuDNN and cuBLAS; tf32: TF32 tensor cores; bf16: the products of the
// convolutions and FC layers in bf16 with float32 accumulation, everything else float32 (a convolution
// shape cuDNN has no bf16 algorithm for runs in TF32). Process-wide; set it before the first step.
void set_cuda_precision(Precision precision);
// parallel.deterministic: true (the default) runs each convolution with the fastest cuDNN algorithm
// whose results repeat bit for bit (any algorithm only where none does); false with the fastest of all.
// Process-wide; set it before the first step.
void set_cuda_deterministic(bool deterministic);
// Where bf16 convolution operands are laid out for cuDNN. kFastest (the default): the first call of each
// convolution direction runs cuDNN's search on operands in NCHW (KCRS filters) and in NHWC (KRSC) and
// keeps the layout of the faster algorithm; our converting copy to bf16 writes either order in one
// pass. kNchw, kNhwc: only that layout (tests, benchmarks). Float32 and TF32 operands stay NCHW.
// Process-wide; set it before the first step.
enum class Bf16ConvLayout { kFastest, kNchw, kNhwc };
void set_cuda_bf16_conv_layout(Bf16ConvLayout layout);
// What the convolution plans chose so far, one entry per plan in the order they were made: the shapes,
// the math, the bf16 layouts it could search, whether bf16 fell back to TF32, how many of its passes
// (forward, backward) have an algorithm and how many of those run in NHWC, and a line saying per pass
// the layout, the algorithm and cuDNN's time (bf16: and the time with our conversions in the layout
// taken and in the other one). The totals count the bf16 plans that did not fall back.
struct ConvPlanInfo {
  std::string text;
  Shape x, w;
  Precision precision = Precision::kFloat32;
  Bf16ConvLayout layouts = Bf16ConvLayout::kFastest;
  bool unsupported = false;
  int passes = 0;
  int nhwc_passes = 0;
  bool nondeterministic = false;  // an algorithm of a direction whose results may vary run to run
};
struct ConvPlanReport {
  std::vector<ConvPlanInfo> plans;
  int bf16_passes = 0;
  int bf16_nhwc_passes = 0;
};
ConvPlanReport cuda_conv_plan_report();

// Grows each time the library-backed layers replace device memory that queued work may name (a workspace or
// arena grown, a stream's handles and workspaces made or released) or search cuDNN's algorithms: a CUDA
// graph captured before names memory that may be gone, and must be captured again, and a pass that
// searched is not yet the steady pass to capture.
uint64_t cuda_resource_generation();

// As conv2d_*_cpu (cuDNN; algorithms found once per shape and choice, parallel.deterministic).
void conv2d_forward_cuda(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y, const ConvParams& p,
                         bool post_relu, CudaStream stream);
void conv2d_backward_cuda(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor& dw, Tensor& db,
                          const ConvParams& p, CudaStream stream);
// As linear_*_cpu (cuBLAS SGEMM on the row-major tensors read as column-major transposes).
void linear_forward_cuda(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y, bool post_relu,
                         CudaStream stream);
void linear_backward_cuda(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor& dw, Tensor& db,
                          CudaStream stream);
// As batchnorm_*_cpu. stats_workspace: float64 [2 C] on the device (training only).
void batchnorm_forward_cuda(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                            Tensor& running_var, bool training, Tensor& y, Tensor& saved_mean, Tensor& saved_invstd,
                            const BatchNormParams& p, Tensor& stats_workspace, CudaStream stream);
void batchnorm_backward_cuda(const Tensor& x, const Tensor& gamma, const Tensor& saved_mean,
                             const Tensor& saved_invstd, const Tensor& dy, Tensor& dx, Tensor& dgamma, Tensor& dbeta,
                             CudaStream stream);

// ---- streams and moving activations between the towers ----

// A new stream on CUDA device `device` for one tower's work. It is a blocking stream: work on the
// device's legacy default stream (plain cudaMemcpy, cudaMemset, the tensor allocator's copies) waits for
// it and it waits for that work, so host reads of its results through Tensor copies stay ordered.
CudaStream cuda_create_stream(int device);
void cuda_destroy_stream(int device, CudaStream stream);
// Frees what the library-backed layers keep for (device, stream): handles, workspace, bf16 arena
// (dense_cuda.cu). cuda_destroy_stream calls it.
void cuda_release_stream_resources(int device, CudaStream stream);
// `waiter` (a stream of `waiter_device`, nullptr: its legacy stream) waits on the device, without a host
// synchronisation, for the work queued so far on `producer` (a stream of `producer_device`, nullptr: its
// legacy stream).
void cuda_stream_wait(CudaStream waiter, int waiter_device, CudaStream producer, int producer_device);
// Lets devices a and b read each other's memory (both directions) when the hardware allows; returns
// whether it does. Copies between them work either way (through the host when not).
bool cuda_enable_peer_access(int a, int b);

// Columns [dst_col0, dst_col0 + width) of every row of dst ([N, *]) become (accumulate ? themselves : 0)
// + columns [src_col0, src_col0 + width) of src ([N, *]). float32; src and dst may live on any CUDA device
// or the host (at least one on a device); src_stream / dst_stream are the streams that produce src and
// consume dst (ignored for a host side). Device to device: the copy runs on dst_stream after the work
// queued on src_stream (peer to peer when enabled), and src_stream's later work waits for the copy, so
// neither side synchronises the host. Device to host: returns when the host data is in place.
// Host to device: returns once the host data has been read. staging: float32 [N, width] on dst's device,
// needed when accumulating.
void copy_columns_cuda(const Tensor& src, int64_t src_col0, CudaStream src_stream, Tensor& dst, int64_t dst_col0,
                       CudaStream dst_stream, int64_t width, bool accumulate, Tensor* staging);

// Copies between host tensors and tensors of one CUDA device that do not stall the stream they are queued
// on: each goes through a block of pinned host memory of its own (kept and reused by the next pass's
// copy in the same position), so it runs asynchronously in the stream's order. upload() copies the host
// source into its block at once, so the caller may reuse the source as soon as it returns; a source
// allocated page-locked (Tensor::page_locked(), allocate_host(..., true): the data client's received
// crops) is read by DMA with no staging copy instead, is kept alive by the object until finish(), and
// must not change before then. download()'s destination receives the values in finish(), which waits for every copy
// queued since the last finish().
class CudaPinnedTransfers {
 public:
  explicit CudaPinnedTransfers(int device);
  ~CudaPinnedTransfers();  // waits for the copies in flight before releasing their memory
  CudaPinnedTransfers(const CudaPinnedTransfers&) = delete;
  CudaPinnedTransfers& operator=(const CudaPinnedTransfers&) = delete;

  // src on the host, dst on the device (same shape and dtype); queued on `stream` (of this device).
  void upload(const Tensor& src, Tensor& dst, CudaStream stream);
  // src on the device, dst on the host (same shape and dtype); dst is written by finish().
  void download(const Tensor& src, Tensor& dst, CudaStream stream);
  void finish();
  // How many uploads read a page-locked source in place so far.
  size_t direct_uploads() const { return direct_uploads_; }

 private:
  struct Slot;
  Slot& next_slot(const Tensor& host, const Tensor& device, size_t bytes);
  int device_;
  std::vector<Slot> slots_;
  size_t used_ = 0;  // slots taken since the last finish()
  size_t direct_uploads_ = 0;
};

// Waits for everything queued on CUDA device `device` (cudaDeviceSynchronize) and throws on an error.
void cuda_sync_device(int device, const char* what);

// Waits for the stream and throws an Error naming `what` if a kernel failed.
void cuda_sync_check(CudaStream stream, const char* what);

}  // namespace alexnet
