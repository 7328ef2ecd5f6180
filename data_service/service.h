// The data service: serves its workers' shares of every global training batch and the padded evaluation
// batches as uint8 crops over MPI, decoding and augmenting ahead of demand on a thread pool with a bounded
// number of batches per worker (docs/data-service.md).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>

#include "core/config.h"
#include "core/status.h"
#include "data_service/augment.h"
#include "data_service/image.h"
#include "data_service/job_layout.h"

namespace alexnet {

// Turns a sample index into the paper's rescaled image (shorter side to `side`, centre square).
// Implementations are thread-safe: the service's threads call load() concurrently.
class SampleProducer {
 public:
  virtual ~SampleProducer() = default;
  virtual int64_t num_train() const = 0;
  virtual int64_t num_val() const = 0;
  virtual int num_classes() const = 0;
  virtual int32_t label(bool val, int64_t i) const = 0;
  virtual const ImageStats& stats() const = 0;
  // out: side x side RGB. A file that cannot be read or decoded is a Status naming it.
  virtual Status load(bool val, int64_t i, int side, Image& out) const = 0;
  virtual std::string name(bool val, int64_t i) const = 0;
};

// The prepared folder (data.prepared, or <data.root>/.prepared): index, ImageStats and sample source.
// Errors name the folder and the missing or damaged file.
std::unique_ptr<SampleProducer> open_prepared_producer(const DataConfig& data);

struct ServiceOptions {
  uint64_t seed = 1;          // train.seed
  int64_t global_batch = 128; // train.batch_size
  int epochs = 90;            // no training batch is prepared ahead beyond the last epoch
  int src_side = 256;
  int crop = 227;
  double lighting_std = 0.1;
  int threads = 0;            // 0: the host's cores shared among its services
  int prefetch = 4;           // batches prepared ahead per worker
  bool strict = false;
  int eval_batch = 0;         // per worker; 0: global_batch / workers
  bool ten_crop = false;
  double timeout_s = 900;     // a served worker silent this long (with nothing owed to it) is an error
  static ServiceOptions from_config(const Config& config);
};

// What the service does to one sample, shared with `alexnet-tool augment-dump` so that the dump is
// exactly what would be sent: load (or deterministically replace a bad file), then the sample's crop.
// Thread-safe.
class SampleMaker {
 public:
  SampleMaker(const SampleProducer& producer, const ServiceOptions& options);
  // Loads sample i into `image` (src_side x src_side), or the next valid one when its file is bad, so
  // batch shapes stay fixed and every service makes the same replacement. Returns the index loaded.
  // In strict mode a bad file is an error naming it.
  int64_t load_or_replace(bool val, int64_t i, Image& image);
  // The augmentation of training sample `used` in `epoch`, or evaluation view `view` of `views` (1 or 10).
  SampleAugment augment(bool val, int64_t epoch, int64_t used, int view, int views) const;
  int64_t bad_files() const;
  int64_t replaced() const { return replaced_.load(); }

 private:
  const SampleProducer& producer_;
  ServiceOptions opt_;
  mutable std::mutex bad_mu_;
  std::set<std::pair<bool, int64_t>> bad_;  // (val, index) of files known to be bad
  std::atomic<int64_t> replaced_{0};
};

struct ServiceStats {
  int64_t train_batches = 0;
  int64_t eval_batches = 0;
  int64_t images = 0;       // images decoded (a ten-crop evaluation image counts once)
  int64_t bad_files = 0;    // distinct files that failed
  int64_t replaced = 0;     // samples served by a replacement image
  int64_t bytes_sent = 0;
  double seconds = 0;
  int threads = 0;
  std::string summary() const;
};

class DataService {
 public:
  // `layout` must be a service's; `producer` must outlive the service.
  DataService(const JobLayout& layout, const SampleProducer& producer, const ServiceOptions& options);
  ~DataService();
  DataService(const DataService&) = delete;
  DataService& operator=(const DataService&) = delete;

  // Serves until every worker it serves has said it is done. Errors (a bad file in strict mode, a worker
  // silent beyond timeout_s, a protocol violation, an exception on a pool thread) are thrown here.
  ServiceStats run();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace alexnet
