// LocalCommunicator and MpiCommunicator (non-blocking MPI collectives in place, float32 sums, waits with a
// deadline).
#include "comm/communicator.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cmath>
#include <thread>

#include "core/error.h"

namespace alexnet {
namespace {

std::atomic<bool> g_comm_timed_out{false};

// MPI counts are int: larger buffers go in pieces of at most this many elements.
constexpr size_t kMaxChunk = static_cast<size_t>(INT_MAX) / 2;

std::string host_name() {
  char host[256] = {0};
  if (gethostname(host, sizeof(host) - 1) != 0) return "?";
  return host;
}

class DoneRequest final : public CommRequest {
 public:
  bool test() override { return true; }
  void wait() override {}
};

class MpiRequest final : public CommRequest {
 public:
  MpiRequest(const MpiCommunicator& comm, float* data, size_t count, ReduceOp op)
      : comm_(comm), data_(data), count_(count), op_(op) {}
  ~MpiRequest() override {
    // Destructors never throw: an error here has no one to report to, and the buffer must not be
    // released while MPI may still write it, so an unfinished request is waited for (within the deadline),
    // unless a wait has timed out: then the process is ending (comm_timed_out).
    if (done_ || comm_timed_out()) return;
    try {
      comm_.wait_all(reqs_.data(), static_cast<int>(reqs_.size()), "MPI_Iallreduce of a dropped allreduce request");
    } catch (...) {
    }
  }
  void start() {
    for (size_t off = 0; off < count_; off += kMaxChunk) {
      const int n = static_cast<int>(std::min(kMaxChunk, count_ - off));
      reqs_.push_back(MPI_REQUEST_NULL);
      comm_.check(MPI_Iallreduce(MPI_IN_PLACE, data_ + off, n, MPI_FLOAT, MPI_SUM, comm_.comm(), &reqs_.back()),
                  "MPI_Iallreduce");
    }
    done_ = reqs_.empty();
  }
  bool test() override {
    if (done_) return true;
    int flag = 0;
    comm_.check(MPI_Testall(static_cast<int>(reqs_.size()), reqs_.data(), &flag, MPI_STATUSES_IGNORE),
                "MPI_Testall of an allreduce");
    if (flag) finish();
    return done_;
  }
  // After a timeout the request is still pending: a later wait() may complete it.
  void wait() override {
    if (done_) return;
    comm_.wait_all(reqs_.data(), static_cast<int>(reqs_.size()), "MPI_Iallreduce of an asynchronous allreduce");
    finish();
  }

 private:
  void finish() {
    done_ = true;
    if (op_ == ReduceOp::kAverage) scale_by_inverse(data_, count_, comm_.size());
  }
  const MpiCommunicator& comm_;
  float* data_;
  size_t count_;
  ReduceOp op_;
  std::vector<MPI_Request> reqs_;
  bool done_ = false;
};

}  // namespace

bool comm_timed_out() { return g_comm_timed_out.load(); }

void note_comm_timeout() { g_comm_timed_out = true; }

void scale_by_inverse(float* data, size_t count, int size) {
  if (size == 1) return;
  // Multiplying by the float 1/size equals dividing for power-of-two sizes and is within one ulp
  // otherwise; every rank applies the same factor, so replicas stay bitwise equal.
  const float inv = 1.0f / static_cast<float>(size);
  for (size_t i = 0; i < count; ++i) data[i] *= inv;
}

// ---- LocalCommunicator ----

std::string LocalCommunicator::describe() const { return str_cat("rank 0 of 1 (local) on host ", host_name()); }

void LocalCommunicator::allreduce(float* data, size_t count, ReduceOp) {
  ALEXNET_ASSERT(data != nullptr || count == 0, "allreduce of a null buffer");
}

std::unique_ptr<CommRequest> LocalCommunicator::allreduce_async(float* data, size_t count, ReduceOp op) {
  allreduce(data, count, op);
  return std::make_unique<DoneRequest>();
}

void LocalCommunicator::broadcast(float* data, size_t count, int root) {
  ALEXNET_CHECK(root == 0, "broadcast root ", root, " is not a rank of a size-1 communicator");
  ALEXNET_ASSERT(data != nullptr || count == 0, "broadcast of a null buffer");
}

void LocalCommunicator::allreduce_metrics(double*, size_t, ReduceOp) {}

// ---- MpiCommunicator ----

MpiCommunicator::MpiCommunicator(MPI_Comm comm, double timeout_s) : host_(host_name()), timeout_s_(timeout_s) {
  ALEXNET_CHECK(std::isfinite(timeout_s) && timeout_s >= 0, "MpiCommunicator on host ", host_,
                ": parallel.comm_timeout_s must be finite and >= 0, got ", timeout_s);
  int initialized = 0;
  MPI_Initialized(&initialized);
  ALEXNET_CHECK(initialized, "MpiCommunicator on host ", host_, ": MPI is not initialised");
  ALEXNET_CHECK(comm != MPI_COMM_NULL, "MpiCommunicator on host ", host_, ": MPI_COMM_NULL given");
  int world_rank = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  rank_ = world_rank;  // until the duplicate's rank is known, errors name the world rank
  // Errors on `comm` itself must come back as codes too, so the duplication can be checked.
  check(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  check(MPI_Comm_dup(comm, &comm_), "MPI_Comm_dup");
  check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
  check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
}

MpiCommunicator::~MpiCommunicator() {
  // Calls whose wait timed out may still write their buffers until the process ends (it is meant to end
  // after a timeout): ours are left allocated instead of freed under MPI. MPI_Comm_free lets pending
  // operations complete.
  static auto* kept = new std::vector<std::shared_ptr<void>>();  // never freed, by design
  for (Pending& p : pending_)
    if (p.buffer) kept->push_back(std::move(p.buffer));
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

std::string MpiCommunicator::describe() const { return str_cat("rank ", rank_, " of ", size_, " on host ", host_); }

void MpiCommunicator::check(int rc, const char* call) const {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) len = 0;
  ALEXNET_FAIL(call, " failed on ", describe(), ": ", std::string(text, static_cast<size_t>(len)),
               " (error code ", rc, ")");
}

void MpiCommunicator::wait_all(MPI_Request* reqs, int n, const char* call) const {
  if (timeout_s_ == 0) {
    check(MPI_Waitall(n, reqs, MPI_STATUSES_IGNORE), call);
    return;
  }
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  for (;;) {
    int done = 0;
    check(MPI_Testall(n, reqs, &done, MPI_STATUSES_IGNORE), call);
    if (done) return;
    const double waited = std::chrono::duration<double>(Clock::now() - start).count();
    if (waited >= timeout_s_) {
      note_comm_timeout();
      ALEXNET_FAIL("timed out after ", std::round(waited * 1000) / 1000, " s (parallel.comm_timeout_s: ", timeout_s_,
                   ") in ", call, " on ", describe(),
                   ": a peer rank is stuck (alive but not joining) or gone; the operation stays pending, so the "
                   "job must end");
    }
    // A bucket's reduction usually completes within microseconds of the last rank's arrival, so the first
    // millisecond spins; after that the wait naps between polls and leaves the core to the compute threads.
    if (waited > 1e-3) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

void MpiCommunicator::finish(std::vector<MPI_Request>& reqs, const char* call, std::shared_ptr<void> buffer) {
  try {
    wait_all(reqs.data(), static_cast<int>(reqs.size()), call);
  } catch (...) {
    pending_.push_back({std::move(reqs), std::move(buffer)});
    throw;
  }
}

void MpiCommunicator::wait_timed_out() {
  while (!pending_.empty()) {
    std::vector<MPI_Request>& reqs = pending_.front().reqs;
    check(MPI_Waitall(static_cast<int>(reqs.size()), reqs.data(), MPI_STATUSES_IGNORE), "MPI_Waitall of a timed-out call");
    pending_.erase(pending_.begin());
  }
}

void MpiCommunicator::allreduce(float* data, size_t count, ReduceOp op) {
  ALEXNET_ASSERT(data != nullptr || count == 0, "allreduce of a null buffer");
  std::vector<MPI_Request> reqs;
  for (size_t off = 0; off < count; off += kMaxChunk) {
    const int n = static_cast<int>(std::min(kMaxChunk, count - off));
    reqs.push_back(MPI_REQUEST_NULL);
    check(MPI_Iallreduce(MPI_IN_PLACE, data + off, n, MPI_FLOAT, MPI_SUM, comm_, &reqs.back()), "MPI_Iallreduce");
  }
  finish(reqs, "MPI_Iallreduce of an allreduce");
  if (op == ReduceOp::kAverage) scale_by_inverse(data, count, size_);
}

std::unique_ptr<CommRequest> MpiCommunicator::allreduce_async(float* data, size_t count, ReduceOp op) {
  ALEXNET_ASSERT(data != nullptr || count == 0, "allreduce of a null buffer");
  auto req = std::make_unique<MpiRequest>(*this, data, count, op);
  req->start();
  return req;
}

void MpiCommunicator::broadcast(float* data, size_t count, int root) {
  ALEXNET_CHECK(root >= 0 && root < size_, "broadcast root ", root, " is not a rank of ", describe());
  std::vector<MPI_Request> reqs;
  for (size_t off = 0; off < count; off += kMaxChunk) {
    const int n = static_cast<int>(std::min(kMaxChunk, count - off));
    reqs.push_back(MPI_REQUEST_NULL);
    check(MPI_Ibcast(data + off, n, MPI_FLOAT, root, comm_, &reqs.back()), "MPI_Ibcast");
  }
  finish(reqs, "MPI_Ibcast of a broadcast");
}

void MpiCommunicator::barrier() {
  std::vector<MPI_Request> reqs(1, MPI_REQUEST_NULL);
  check(MPI_Ibarrier(comm_, reqs.data()), "MPI_Ibarrier");
  finish(reqs, "MPI_Ibarrier of a barrier");
}

void MpiCommunicator::allreduce_metrics(double* data, size_t count, ReduceOp op) {
  ALEXNET_CHECK(count <= kMaxChunk, "allreduce_metrics of ", count, " values: meant for a few");
  // Reduced in a buffer of ours, which outlives a timeout (the caller's is often on its stack).
  auto sums = std::make_shared<std::vector<double>>(data, data + count);
  std::vector<MPI_Request> reqs(1, MPI_REQUEST_NULL);
  check(MPI_Iallreduce(MPI_IN_PLACE, sums->data(), static_cast<int>(count), MPI_DOUBLE, MPI_SUM, comm_, reqs.data()),
        "MPI_Iallreduce of metrics");
  finish(reqs, "MPI_Iallreduce of metrics", sums);
  for (size_t i = 0; i < count; ++i) data[i] = op == ReduceOp::kAverage ? (*sums)[i] / size_ : (*sums)[i];
}

std::vector<uint64_t> MpiCommunicator::allgather(const std::vector<uint64_t>& values) {
  const size_t n = values.size();
  // In place in a buffer of ours, which outlives a timeout.
  auto all = std::make_shared<std::vector<uint64_t>>(n * static_cast<size_t>(size_));
  std::copy(values.begin(), values.end(), all->begin() + static_cast<ptrdiff_t>(n * static_cast<size_t>(rank_)));
  std::vector<MPI_Request> reqs(1, MPI_REQUEST_NULL);
  check(MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, all->data(), static_cast<int>(n), MPI_UINT64_T, comm_,
                       reqs.data()),
        "MPI_Iallgather");
  finish(reqs, "MPI_Iallgather of an allgather", all);
  return std::move(*all);
}

}  // namespace alexnet
