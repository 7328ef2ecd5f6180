// Bucketed, overlapped gradient averaging: gradients are grouped, in the order backward produces them,
// into buckets of about parallel.bucket_mb; a bucket's asynchronous allreduce starts as soon as its last
// tensor is final, so communication runs while backward computes the layers below.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"

namespace alexnet {

// One gradient tensor: data [count] float32 (host memory for the MPI communicator).
struct GradTensor {
  std::string name;
  float* data = nullptr;
  size_t count = 0;
};

// A contiguous run [first, last) of the tensor list.
struct BucketPlan {
  size_t first = 0, last = 0;
  size_t count = 0;         // floats in the bucket
  bool contiguous = false;  // the tensors lie back to back in memory: reduced in place, no copy
};

// Groups tensors in list order: a bucket closes when adding the next tensor would exceed bucket_bytes
// (a tensor larger than bucket_bytes is a bucket of its own). bucket_bytes 0: one bucket for everything.
std::vector<BucketPlan> plan_buckets(const std::vector<GradTensor>& tensors, size_t bucket_bytes);

struct GradBucketOptions {
  size_t bucket_bytes = size_t{25} << 20;  // parallel.bucket_mb
  // true: a bucket's reduction starts in mark_ready once the bucket is complete. false: every bucket is
  // reduced inside wait_all, after backward (the same calls in the same order, so the same bits).
  bool overlap = true;
};

// Per step (between two wait_all calls), seconds of the steady clock.
struct CommTiming {
  double exposed_s = 0;    // inside wait_all: communication the caller waited for
  double in_flight_s = 0;  // from the first reduction's start to the last one's observed completion
  double start_s = 0, end_s = 0;  // steady-clock seconds of that first start and last completion
  double bytes = 0;        // bytes reduced (per rank)
  int reductions = 0;      // allreduce calls
  // Share of the in-flight time that overlapped the caller's compute: 1 - exposed / in_flight.
  double hidden_fraction() const;
};

class GradBuckets {
 public:
  // `tensors` in backward-completion order (AlexNet: fc8, fc7, fc6, conv5 ... conv1, each weight then
  // its bias, for one tower). Collective: the ranks exchange a hash of the layout (names, counts, bucket
  // boundaries, mode) and every rank throws if any rank's differs. `comm` must outlive this object.
  GradBuckets(Communicator& comm, std::vector<GradTensor> tensors, GradBucketOptions options = {});
  ~GradBuckets();
  GradBuckets(const GradBuckets&) = delete;
  GradBuckets& operator=(const GradBuckets&) = delete;

  // Backward calls this when tensor `index` (position in the list) holds its final gradient for the
  // step; any order. Also polls the reductions in flight so the transport progresses them.
  void mark_ready(size_t index);
  // Lets the transport progress the reductions in flight (for long compute between mark_ready calls).
  void progress();
  // Starts whatever has not started (every bucket when overlap is off), waits for all, and leaves the
  // average over ranks in every tensor. Every tensor must have been marked ready. Ends the step.
  void wait_all();

  const std::vector<BucketPlan>& buckets() const { return plan_; }
  const std::vector<GradTensor>& tensors() const { return tensors_; }
  uint64_t layout_hash() const { return hash_; }
  const CommTiming& last_timing() const { return timing_; }  // of the last wait_all

 private:
  using Clock = std::chrono::steady_clock;
  struct Bucket {
    size_t pending = 0;          // tensors not yet marked ready this step
    std::vector<float> staging;  // non-contiguous buckets: the packed copy that is reduced
    std::unique_ptr<CommRequest> request;
    bool started = false, done = false;
  };
  void start(size_t b);
  void poll();
  void finish(size_t b);  // after completion: unpack a staged bucket
  void reset_step();

  Communicator& comm_;
  std::vector<GradTensor> tensors_;
  GradBucketOptions options_;
  std::vector<BucketPlan> plan_;
  std::vector<size_t> bucket_of_;  // per tensor
  std::vector<char> ready_;        // per tensor, this step
  std::vector<Bucket> buckets_;
  uint64_t hash_ = 0;
  bool step_started_ = false;
  Clock::time_point first_start_, last_done_;
  CommTiming timing_, current_;
};

}  // namespace alexnet
