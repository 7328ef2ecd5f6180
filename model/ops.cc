#include "model/ops.h"

#include <cstring>

#include "core/error.h"
#if ALEXNET_WITH_CUDA
#include "model/cuda/graph_cuda.h"
#include "model/cuda/layers_cuda.h"
#endif

namespace alexnet {
namespace ops {
namespace {

// True for CPU tensors; CUDA tensors need a build with CUDA.
bool on_cpu(const Tensor& t, const char* op) {
  if (t.device().is_cpu()) return true;
#if ALEXNET_WITH_CUDA
  (void)op;
  return false;
#else
  ALEXNET_FAIL(op, ": ", t.describe(), " is on ", t.device().str(), ", and this build has no CUDA backend");
#endif
}

thread_local Stream t_stream = nullptr;

}  // namespace

StreamScope::StreamScope(Stream stream) : previous_(t_stream) { t_stream = stream; }
StreamScope::~StreamScope() { t_stream = previous_; }
Stream current_stream() { return t_stream; }

#if ALEXNET_WITH_CUDA
#define ALEXNET_ON_DEVICE(call) call
#else
#define ALEXNET_ON_DEVICE(call) ALEXNET_FAIL("unreachable: no CUDA backend")
#endif

void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y, const ConvParams& p, bool post_relu) {
  if (on_cpu(x, "conv2d_forward")) return conv2d_forward_cpu(x, w, b, y, p, post_relu);
  ALEXNET_ON_DEVICE(conv2d_forward_cuda(x, w, b, y, p, post_relu, current_stream()));
}

void conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor& dw, Tensor& db,
                     const ConvParams& p) {
  if (on_cpu(x, "conv2d_backward")) return conv2d_backward_cpu(x, w, dy, dx, dw, db, p);
  ALEXNET_ON_DEVICE(conv2d_backward_cuda(x, w, dy, dx, dw, db, p, current_stream()));
}

void linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y, bool post_relu) {
  if (on_cpu(x, "linear_forward")) return linear_forward_cpu(x, w, b, y, post_relu);
  ALEXNET_ON_DEVICE(linear_forward_cuda(x, w, b, y, post_relu, current_stream()));
}

void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor& dw, Tensor& db) {
  if (on_cpu(x, "linear_backward")) return linear_backward_cpu(x, w, dy, dx, dw, db);
  ALEXNET_ON_DEVICE(linear_backward_cuda(x, w, dy, dx, dw, db, current_stream()));
}

void relu_backward(const Tensor& y, const Tensor& dy, Tensor& dx) {
  if (on_cpu(y, "relu_backward")) return relu_backward_cpu(y, dy, dx);
  ALEXNET_ON_DEVICE(relu_backward_cuda(y, dy, dx, current_stream()));
}

void tanh_forward(const Tensor& x, Tensor& y) {
  if (on_cpu(x, "tanh_forward")) return tanh_forward_cpu(x, y);
  ALEXNET_ON_DEVICE(tanh_forward_cuda(x, y, current_stream()));
}

void tanh_backward(const Tensor& y, const Tensor& dy, Tensor& dx) {
  if (on_cpu(y, "tanh_backward")) return tanh_backward_cpu(y, dy, dx);
  ALEXNET_ON_DEVICE(tanh_backward_cuda(y, dy, dx, current_stream()));
}

void lrn_forward(const Tensor& x, Tensor& y, Tensor& scale, const LrnParams& p, bool within) {
  if (on_cpu(x, "lrn_forward")) return within ? lrn2d_forward_cpu(x, y, scale, p) : lrn_forward_cpu(x, y, scale, p);
  ALEXNET_ON_DEVICE(within ? lrn2d_forward_cuda(x, y, scale, p, current_stream()) : lrn_forward_cuda(x, y, scale, p, current_stream()));
}

void lrn_backward(const Tensor& x, const Tensor& y, const Tensor& scale, const Tensor& dy, Tensor& dx,
                  const LrnParams& p, bool within) {
  if (on_cpu(x, "lrn_backward"))
    return within ? lrn2d_backward_cpu(x, y, scale, dy, dx, p) : lrn_backward_cpu(x, y, scale, dy, dx, p);
  ALEXNET_ON_DEVICE(within ? lrn2d_backward_cuda(x, y, scale, dy, dx, p, current_stream())
                           : lrn_backward_cuda(x, y, scale, dy, dx, p, current_stream()));
}

void batchnorm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                       Tensor& running_var, bool training, Tensor& y, Tensor& saved_mean, Tensor& saved_invstd,
                       const BatchNormParams& p, Tensor& stats) {
  if (on_cpu(x, "batchnorm_forward"))
    return batchnorm_forward_cpu(x, gamma, beta, running_mean, running_var, training, y, saved_mean, saved_invstd, p);
  ALEXNET_ON_DEVICE(batchnorm_forward_cuda(x, gamma, beta, running_mean, running_var, training, y, saved_mean,
                                           saved_invstd, p, stats, current_stream()));
}

void batchnorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& saved_mean, const Tensor& saved_invstd,
                        const Tensor& dy, Tensor& dx, Tensor& dgamma, Tensor& dbeta) {
  if (on_cpu(x, "batchnorm_backward"))
    return batchnorm_backward_cpu(x, gamma, saved_mean, saved_invstd, dy, dx, dgamma, dbeta);
  ALEXNET_ON_DEVICE(batchnorm_backward_cuda(x, gamma, saved_mean, saved_invstd, dy, dx, dgamma, dbeta, current_stream()));
}

void maxpool_forward(const Tensor& x, Tensor& y, Tensor& argmax, const PoolParams& p) {
  if (on_cpu(x, "maxpool_forward")) return maxpool_forward_cpu(x, y, argmax, p);
  ALEXNET_ON_DEVICE(maxpool_forward_cuda(x, y, argmax, p, current_stream()));
}

void maxpool_backward(const Tensor& dy, const Tensor& argmax, Tensor& dx, const PoolParams& p) {
  if (on_cpu(dy, "maxpool_backward")) return maxpool_backward_cpu(dy, argmax, dx);
  ALEXNET_ON_DEVICE(maxpool_backward_cuda(dy, argmax, dx, p, current_stream()));
}

void dropout_forward(const Tensor& x, Tensor& y, Tensor& mask, double p, const DropoutArgs& k) {
  if (on_cpu(x, "dropout_forward")) return dropout_forward_cpu(x, y, mask, p, k.keying);
  ALEXNET_ASSERT(k.sample_ids_device, "dropout_forward on ", x.device().str(), " needs the sample ids there");
  ALEXNET_ON_DEVICE(dropout_forward_cuda(x, y, mask, p, k.keying.key, k.keying.step, *k.sample_ids_device,
                                         k.keying.unit_offset, current_stream()));
}

void dropout_backward(const Tensor& dy, const Tensor& mask, double p, Tensor& dx) {
  if (on_cpu(dy, "dropout_backward")) return dropout_backward_cpu(dy, mask, p, dx);
  ALEXNET_ON_DEVICE(dropout_backward_cuda(dy, mask, p, dx, current_stream()));
}

void normalize_crops(const Tensor& crops, const Tensor& placement, const Tensor& lighting, const Tensor& mean,
                     Tensor& out) {
  ALEXNET_CHECK(crops.device().is_cuda(), "normalize_crops: the crops are on ", crops.device().str(),
                "; on the CPU the data client normalises (normalize_crop)");
#if !ALEXNET_WITH_CUDA
  (void)placement;
  (void)lighting;
  (void)mean;
  (void)out;
#endif
  ALEXNET_ON_DEVICE(normalize_crops_cuda(crops, placement, lighting, mean, out, current_stream()));
}

void sgd_update(Tensor& w, const Tensor& g, Tensor& v, double lr, double momentum, double weight_decay) {
  if (on_cpu(w, "sgd_update")) return sgd_update_cpu(w, g, v, lr, momentum, weight_decay);
  ALEXNET_ON_DEVICE(sgd_update_cuda(w, g, v, lr, momentum, weight_decay, current_stream()));
}

void sgd_update_arena(Tensor& w, const Tensor& g, Tensor& v, const std::vector<std::pair<int64_t, int64_t>>& decay,
                      double lr, double momentum, double weight_decay) {
  ALEXNET_ASSERT(w.device().is_cuda(), "sgd_update_arena on ", w.describe(), ": CUDA tensors only");
#if ALEXNET_WITH_CUDA
  SgdDecayRanges ranges;
  ALEXNET_ASSERT(decay.size() <= static_cast<size_t>(SgdDecayRanges::kMax), "sgd_update_arena: ", decay.size(),
                 " decay ranges, at most ", SgdDecayRanges::kMax);
  for (const auto& [begin, end] : decay) {
    ranges.begin[ranges.count] = begin;
    ranges.end[ranges.count] = end;
    ++ranges.count;
  }
  sgd_update_arena_cuda(w, g, v, ranges, lr, momentum, weight_decay, current_stream());
#else
  (void)g, (void)v, (void)decay, (void)lr, (void)momentum, (void)weight_decay;
  ALEXNET_FAIL("unreachable: no CUDA backend");
#endif
}

void softmax_xent_rows(const Tensor& logits, const Tensor& labels, Tensor& probs, Tensor& row_loss) {
  ALEXNET_CHECK(!logits.device().is_cpu(), "softmax_xent_rows: ", logits.describe(),
                " is on the host (the CPU graph calls softmax_xent_forward_cpu)");
  on_cpu(logits, "softmax_xent_rows");  // a CUDA tensor in a build without CUDA: an error naming the op
#if !ALEXNET_WITH_CUDA
  (void)labels;
  (void)probs;
  (void)row_loss;
#endif
  ALEXNET_ON_DEVICE(softmax_xent_rows_cuda(logits, labels, probs, row_loss, current_stream()));
}

void softmax_xent_backward(const Tensor& probs, const Tensor& labels, Tensor& dlogits) {
  if (on_cpu(probs, "softmax_xent_backward")) return softmax_xent_backward_cpu(probs, labels, dlogits);
  ALEXNET_ON_DEVICE(softmax_xent_backward_cuda(probs, labels, dlogits, current_stream()));
}

#if ALEXNET_WITH_CUDA
struct PinnedTransfers::Impl {
  explicit Impl(int device) : transfers(device) {}
  CudaPinnedTransfers transfers;
};
#else
struct PinnedTransfers::Impl {};
#endif

PinnedTransfers::PinnedTransfers(Device device) {
  ALEXNET_CHECK(device.is_cuda(), "pinned transfers: ", device.str(), " is not a CUDA device");
#if ALEXNET_WITH_CUDA
  impl_ = std::make_unique<Impl>(device.index);
#else
  ALEXNET_FAIL("pinned transfers on ", device.str(), ": this build has no CUDA backend");
#endif
}

PinnedTransfers::~PinnedTransfers() = default;

#if ALEXNET_WITH_CUDA
void PinnedTransfers::upload(const Tensor& src, Tensor& dst) { impl_->transfers.upload(src, dst, current_stream()); }
void PinnedTransfers::download(const Tensor& src, Tensor& dst) {
  impl_->transfers.download(src, dst, current_stream());
}
void PinnedTransfers::finish() { impl_->transfers.finish(); }
#else
void PinnedTransfers::upload(const Tensor&, Tensor&) { ALEXNET_FAIL("unreachable: no CUDA backend"); }
void PinnedTransfers::download(const Tensor&, Tensor&) { ALEXNET_FAIL("unreachable: no CUDA backend"); }
void PinnedTransfers::finish() {}
#endif

#if ALEXNET_WITH_CUDA
struct PassGraph::Impl {
  Impl(Stream origin, int device, const std::vector<std::pair<Stream, int>>& others, int marks)
      : graph(origin, device, others, marks) {}
  CudaPassGraph graph;
};

PassGraph::PassGraph(Stream origin, Device origin_device, const std::vector<std::pair<Stream, Device>>& others,
                     int marks_per_stream) {
  ALEXNET_CHECK(origin_device.is_cuda(), "a CUDA graph of a pass on ", origin_device.str());
  std::vector<std::pair<Stream, int>> streams;
  for (const auto& [stream, device] : others) {
    ALEXNET_CHECK(device.is_cuda(), "a CUDA graph of a pass on ", device.str());
    streams.emplace_back(stream, device.index);
  }
  impl_ = std::make_unique<Impl>(origin, origin_device.index, streams, marks_per_stream);
}
void PassGraph::begin() { impl_->graph.begin(); }
int PassGraph::mark(Stream stream) { return impl_->graph.mark(stream); }
bool PassGraph::end(std::string* why) { return impl_->graph.end(why); }
bool PassGraph::abandon() noexcept { return impl_->graph.abandon(); }
void PassGraph::launch() { impl_->graph.launch(); }
void* PassGraph::event(int index) const { return impl_->graph.event(index); }
void PassGraph::wait(int index, Stream stream, Device device) const {
  ALEXNET_CHECK(device.is_cuda(), "a wait for a CUDA graph on ", device.str());
  impl_->graph.wait(index, stream, device.index);
}
size_t PassGraph::nodes() const { return impl_->graph.nodes(); }
uint64_t device_resource_generation() { return cuda_resource_generation(); }
#else
struct PassGraph::Impl {};
PassGraph::PassGraph(Stream, Device origin_device, const std::vector<std::pair<Stream, Device>>&, int) {
  ALEXNET_FAIL("a CUDA graph of a pass on ", origin_device.str(), ": this build has no CUDA backend");
}
void PassGraph::begin() { ALEXNET_FAIL("unreachable: no CUDA backend"); }
int PassGraph::mark(Stream) { ALEXNET_FAIL("unreachable: no CUDA backend"); }
bool PassGraph::end(std::string*) { ALEXNET_FAIL("unreachable: no CUDA backend"); }
bool PassGraph::abandon() noexcept { return true; }
void PassGraph::launch() { ALEXNET_FAIL("unreachable: no CUDA backend"); }
void* PassGraph::event(int) const { ALEXNET_FAIL("unreachable: no CUDA backend"); }
void PassGraph::wait(int, Stream, Device) const { ALEXNET_FAIL("unreachable: no CUDA backend"); }
size_t PassGraph::nodes() const { return 0; }
uint64_t device_resource_generation() { return 0; }
#endif
PassGraph::~PassGraph() = default;

Stream create_stream(Device device) {
  ALEXNET_CHECK(device.is_cuda(), "create_stream: ", device.str(), " is not a CUDA device");
#if ALEXNET_WITH_CUDA
  return cuda_create_stream(device.index);
#else
  ALEXNET_FAIL("create_stream on ", device.str(), ": this build has no CUDA backend");
#endif
}

void destroy_stream(Device device, Stream stream) {
#if ALEXNET_WITH_CUDA
  if (device.is_cuda()) cuda_destroy_stream(device.index, stream);
#else
  (void)device;
  (void)stream;
#endif
}

void wait_for_default_stream(Device device, Stream stream) {
  ALEXNET_CHECK(device.is_cuda(), "wait_for_default_stream: ", device.str(), " is not a CUDA device");
#if ALEXNET_WITH_CUDA
  cuda_stream_wait(stream, device.index, nullptr, device.index);
#else
  (void)stream;
  ALEXNET_FAIL("wait_for_default_stream on ", device.str(), ": this build has no CUDA backend");
#endif
}

void sync_device(Device device, const char* what) {
  if (!device.is_cuda()) return;
#if ALEXNET_WITH_CUDA
  cuda_sync_device(device.index, what);
#else
  ALEXNET_FAIL(what, " on ", device.str(), ": this build has no CUDA backend");
#endif
}

bool enable_peer_access(Device a, Device b) {
  ALEXNET_CHECK(a.is_cuda() && b.is_cuda(), "enable_peer_access: ", a.str(), " and ", b.str());
#if ALEXNET_WITH_CUDA
  return cuda_enable_peer_access(a.index, b.index);
#else
  ALEXNET_FAIL("enable_peer_access: this build has no CUDA backend");
#endif
}

void copy_columns(const Tensor& src, int64_t src_col0, Stream src_stream, Tensor& dst, int64_t dst_col0,
                  Stream dst_stream, int64_t width, bool accumulate, Tensor* staging) {
  const int64_t n = src.dim(0), sw = src.numel() / n, dw = dst.numel() / n;
  ALEXNET_ASSERT(dst.dim(0) == n && src_col0 + width <= sw && dst_col0 + width <= dw, "copy_columns: ",
                 src.describe(), " [", src_col0, ", +", width, ") into ", dst.describe(), " at ", dst_col0);
  if (src.device().is_cpu() && dst.device().is_cpu()) {
    const float* s = src.data<float>();
    float* d = dst.data<float>();
#pragma omp parallel for
    for (int64_t r = 0; r < n; ++r) {
      const float* sr = s + r * sw + src_col0;
      float* dr = d + r * dw + dst_col0;
      if (accumulate) {
        for (int64_t i = 0; i < width; ++i) dr[i] += sr[i];
      } else {
        std::memcpy(dr, sr, width * sizeof(float));
      }
    }
    return;
  }
  on_cpu(src.device().is_cpu() ? dst : src, "copy_columns");
#if !ALEXNET_WITH_CUDA
  (void)src_stream;
  (void)dst_stream;
  (void)staging;
#endif
  ALEXNET_ON_DEVICE(
      copy_columns_cuda(src, src_col0, src_stream, dst, dst_col0, dst_stream, width, accumulate, staging));
}

}  // namespace ops
}  // namespace alexnet
