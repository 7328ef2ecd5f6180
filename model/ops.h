// The graph's view of the layers: one call per op that runs on the device its tensors live on — the CPU
// entry functions of model/layers.h, or their CUDA twins (model/cuda/layers_cuda.h) in a build with CUDA.
// A CUDA tensor in a build without CUDA is an error naming the op.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/layers.h"

struct CUstream_st;

namespace alexnet {
namespace ops {

// A CUDA stream (nullptr: the legacy default stream of the current device). Opaque outside CUDA code.
using Stream = CUstream_st*;

// While a StreamScope lives, the ops this thread issues on CUDA tensors go to its stream (scopes nest;
// the previous stream comes back at the end). Ops on CPU tensors ignore it.
class StreamScope {
 public:
  explicit StreamScope(Stream stream);
  ~StreamScope();
  StreamScope(const StreamScope&) = delete;
  StreamScope& operator=(const StreamScope&) = delete;

 private:
  Stream previous_;
};
Stream current_stream();

// A stream of its own on a CUDA device (model/cuda/layers_cuda.h: cuda_create_stream); errors in a
// build without CUDA. destroy_stream waits for the stream's work first.
Stream create_stream(Device device);
void destroy_stream(Device device, Stream stream);
// `stream` (of CUDA device `device`) waits for the work issued so far on the device's legacy default
// stream, and so for everything issued before on its blocking streams: what a plain cudaMemcpy is
// ordered after. No host wait.
void wait_for_default_stream(Device device, Stream stream);
// Waits on the host for everything queued on `device` (every stream, NCCL's included) and throws on an
// error naming `what`; nothing for the CPU.
void sync_device(Device device, const char* what);
// Peer access between two CUDA devices where the hardware allows; returns whether it does.
bool enable_peer_access(Device a, Device b);

// Dropout keys as on the CPU; sample_ids_device: int64 [N] on the tensors' device (CUDA only).
struct DropoutArgs {
  DropoutKeying keying;
  const Tensor* sample_ids_device = nullptr;
};

void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y, const ConvParams& p, bool post_relu);
void conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor& dw, Tensor& db,
                     const ConvParams& p);
void linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y, bool post_relu);
void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor& dw, Tensor& db);
void relu_backward(const Tensor& y, const Tensor& dy, Tensor& dx);
void tanh_forward(const Tensor& x, Tensor& y);
void tanh_backward(const Tensor& y, const Tensor& dy, Tensor& dx);
void lrn_forward(const Tensor& x, Tensor& y, Tensor& scale, const LrnParams& p, bool within);
void lrn_backward(const Tensor& x, const Tensor& y, const Tensor& scale, const Tensor& dy, Tensor& dx,
                  const LrnParams& p, bool within);
// stats: float64 [2 C] scratch on a CUDA device (unused on the CPU).
void batchnorm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                       Tensor& running_var, bool training, Tensor& y, Tensor& saved_mean, Tensor& saved_invstd,
                       const BatchNormParams& p, Tensor& stats);
void batchnorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& saved_mean, const Tensor& saved_invstd,
                        const Tensor& dy, Tensor& dx, Tensor& dgamma, Tensor& dbeta);
void maxpool_forward(const Tensor& x, Tensor& y, Tensor& argmax, const PoolParams& p);
void maxpool_backward(const Tensor& dy, const Tensor& argmax, Tensor& dx, const PoolParams& p);
void dropout_forward(const Tensor& x, Tensor& y, Tensor& mask, double p, const DropoutArgs& k);
void dropout_backward(const Tensor& dy, const Tensor& mask, double p, Tensor& dx);
// The input step on a CUDA device (normalize_crops_cuda); CPU tensors are an error (the data client
// normalises on the host there).
void normalize_crops(const Tensor& crops, const Tensor& placement, const Tensor& lighting, const Tensor& mean,
                     Tensor& out);
void sgd_update(Tensor& w, const Tensor& g, Tensor& v, double lr, double momentum, double weight_decay);
// The same over whole arenas of a CUDA device in one launch (sgd_update_arena_cuda): elements in the
// ranges [begin, end) of `decay` get weight_decay, the others none. Errors for CPU tensors (the CPU
// backend updates tensor by tensor).
void sgd_update_arena(Tensor& w, const Tensor& g, Tensor& v, const std::vector<std::pair<int64_t, int64_t>>& decay,
                      double lr, double momentum, double weight_decay);
// Softmax cross-entropy on a CUDA device without waiting for it (softmax_xent_rows_cuda): probs and each
// row's loss (float64 [N]), read back later; the CPU graph calls softmax_xent_forward_cpu. labels: int64 [N]
// on the logits' device.
void softmax_xent_rows(const Tensor& logits, const Tensor& labels, Tensor& probs, Tensor& row_loss);
void softmax_xent_backward(const Tensor& probs, const Tensor& labels, Tensor& dlogits);

// Host <-> CUDA-device copies that do not stall the current stream (CudaPinnedTransfers): upload() has read
// its source when it returns, except a page-locked source (allocate_host(..., true)), which is read by
// DMA in place and must not change before finish(); download()'s destination is written by finish(),
// which waits for every copy queued since the last finish(). One object per device, used from one thread; errors in a build
// without CUDA.
class PinnedTransfers {
 public:
  explicit PinnedTransfers(Device device);
  ~PinnedTransfers();
  PinnedTransfers(const PinnedTransfers&) = delete;
  PinnedTransfers& operator=(const PinnedTransfers&) = delete;
  void upload(const Tensor& src, Tensor& dst);
  void download(const Tensor& src, Tensor& dst);
  void finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A training pass's device work captured once and replayed as one CUDA graph (CudaPassGraph,
// model/cuda/graph_cuda.h, says what each call does); errors in a build without CUDA.
class PassGraph {
 public:
  PassGraph(Stream origin, Device origin_device, const std::vector<std::pair<Stream, Device>>& others,
            int marks_per_stream);
  ~PassGraph();
  PassGraph(const PassGraph&) = delete;
  PassGraph& operator=(const PassGraph&) = delete;
  void begin();
  int mark(Stream stream);
  bool end(std::string* why);
  bool abandon() noexcept;
  void launch();
  void* event(int index) const;
  void wait(int index, Stream stream, Device device) const;
  size_t nodes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};
// How often the CUDA layers have replaced device memory that a captured graph may name
// (cuda_resource_generation); 0 in a build without CUDA.
uint64_t device_resource_generation();

// Columns [dst_col0, dst_col0 + width) of every row of dst ([N, *]) = (accumulate ? dst : 0) + columns
// [src_col0, src_col0 + width) of src ([N, *]); the two may be on different devices. src_stream and
// dst_stream are the streams of the towers that produce src and consume dst (the copy is ordered after
// the first and before the second's later work; see copy_columns_cuda). staging: float32 [N, width] on
// dst's device when accumulating into a CUDA tensor (else unused, may be null).
void copy_columns(const Tensor& src, int64_t src_col0, Stream src_stream, Tensor& dst, int64_t dst_col0,
                  Stream dst_stream, int64_t width, bool accumulate, Tensor* staging);

}  // namespace ops
}  // namespace alexnet
