// The worker side of the data service: handshake with the rank's service, training batches by
// (epoch, step) with one request kept in flight, evaluation batches, and the normalisation that turns
// the received uint8 crops into the network's float input (docs/data-service.md).
#pragma once

#include <mpi.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "core/config.h"
#include "core/tensor.h"
#include "data_service/augment.h"
#include "data_service/buffer_pool.h"
#include "data_service/job_layout.h"
#include "data_service/wire.h"

namespace alexnet {

// What the handshake says about the data.
struct DataInfo {
  int64_t num_train = 0, num_val = 0;
  int num_classes = 0;
  int crop = 0, src_side = 0;
  int batch = 0;               // training images per worker per step
  int64_t steps_per_epoch = 0;
  int eval_batch = 0;          // validation images per worker per evaluation batch
  int views = 1;               // crops per validation image (10: the paper's ten views)
  int64_t eval_batches = 0;    // evaluation batches per pass
  ImageStats stats;
};

struct TrainBatch {
  int64_t epoch = 0, step = 0;
  Tensor images;                       // [N, 3, crop, crop] float32, normalised (mean subtracted, lighting added);
                                       // undefined when host normalisation is off (set_host_normalisation)
  Tensor labels;                       // [N] int64
  std::vector<int64_t> samples;        // [N] global training-set indices
  std::vector<SampleAugment> augment;  // [N]
  Tensor crops;                        // [N, 3, crop, crop] uint8, as received (a view of the message)
};

struct EvalData {
  int64_t index = 0;
  int views = 1;
  Tensor images;                       // [N * views, 3, crop, crop] float32; image j's views are rows j*views..
                                       // (undefined when host normalisation is off)
  Tensor labels;                       // [N] int64
  std::vector<int64_t> samples;        // [N] validation-set indices
  std::vector<uint8_t> mask;           // [N] 1: counts, 0: padding
  std::vector<SampleAugment> augment;  // [N * views]
  Tensor crops;                        // [N * views, 3, crop, crop] uint8 (a view of the message)
};

class DataClient {
 public:
  // Handshake with this worker's service (layout must be a worker's). Waits at most data.timeout_s.
  DataClient(const JobLayout& layout, const Config& config);
  ~DataClient();
  DataClient(const DataClient&) = delete;
  DataClient& operator=(const DataClient&) = delete;

  const DataInfo& info() const { return info_; }
  // This worker's share of global batch `step` of `epoch` (any (epoch, step): a resume needs nothing else).
  // The following batch is requested at once, so it travels while the caller computes.
  TrainBatch next_train_batch(int64_t epoch, int64_t step);
  // Evaluation batch `index` in [0, info().eval_batches); every worker runs the same number.
  EvalData eval_batch(int64_t index);
  int64_t num_eval_batches() const { return info_.eval_batches; }
  // Lets MPI move the batch in flight now (with a shared-memory transport, the receiver's copy of the
  // message happens while MPI progresses), so a caller whose GPUs are busy can take that copy off the
  // next step's critical path. Never blocks; the batch is then handed out by the next call as usual.
  void progress();
  // Tells the service this worker is done (after draining the request in flight). Call once at the end.
  void shutdown();

  // On (the default): batches carry the normalised float images. Off: only the uint8 crops and their
  // augmentation, for a model that normalises on its GPUs (AlexNet::CropBatch, normalize_crops_cuda).
  void set_host_normalisation(bool on) { host_normalise_ = on; }
  // What normalisation subtracts, as float32 on the host: the mean image [3, side, side] (data.mean:
  // image) or the channel means [3] (data.mean: channel), as normalize_crop uses them.
  Tensor input_mean() const;
  // Receive batches into page-locked host memory (where the CUDA backend is registered), so their crops
  // go to a GPU by DMA with no staging copy (ops::PinnedTransfers). Set before the first batch.
  void set_page_locked_receive(bool on) { page_locked_ = on; }

 private:
  // A request and the buffer its answer is received into. The crops of a batch are a view of that buffer
  // (no copy); it goes back to `buffers_` for a later message when the last tensor viewing it is gone.
  struct Message {
    wire::RequestKind kind = wire::RequestKind::kTrain;
    int64_t a = 0, b = 0;
    std::shared_ptr<Storage> buffer;
    MPI_Request req = MPI_REQUEST_NULL;
    bool arrived = false;  // completed (by progress() or wait()); `bytes` is its size
    int bytes = 0;
    uint8_t* data() const { return static_cast<uint8_t*>(buffer->data()); }
  };
  void post(wire::RequestKind kind, int64_t a, int64_t b);
  void wait(Message& m, const char* what);
  // MPI_Test of m's receive; records its size when it completed.
  bool test(Message& m);
  Message take(wire::RequestKind kind, int64_t a, int64_t b);
  // The crops [count, 3, crop, crop] of a batch message, as a view of its buffer.
  Tensor crops_of(const Message& m, int count) const;
  // Normalises crops [count, 3, crop, crop] into a float tensor.
  Tensor normalise(const uint8_t* msg, int count, const std::vector<SampleAugment>& augment) const;

  const JobLayout& layout_;
  int service_ = -1;
  std::string service_name_;
  double timeout_s_ = 0;
  bool use_mean_image_ = true;
  bool host_normalise_ = true;
  bool page_locked_ = false;
  std::shared_ptr<BufferPool> buffers_;
  DataInfo info_;
  std::optional<Message> pending_;  // the request in flight
  std::optional<Message> stash_;    // a training batch received while the caller turned to evaluation
  bool shut_down_ = false;
};

}  // namespace alexnet
