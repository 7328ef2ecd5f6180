// LocalCommunicator and MpiCommunicator (MPI_Allreduce / MPI_Iallreduce in place, float32 sums).
#include "comm/communicator.h"

#include <unistd.h>

#include <algorithm>
#include <climits>

#include "core/error.h"

namespace alexnet {
namespace {

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
    // released while MPI may still write it.
    if (!done_) MPI_Waitall(static_cast<int>(reqs_.size()), reqs_.data(), MPI_STATUSES_IGNORE);
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
  void wait() override {
    if (done_) return;
    comm_.check(MPI_Waitall(static_cast<int>(reqs_.size()), reqs_.data(), MPI_STATUSES_IGNORE),
                "MPI_Waitall of an allreduce");
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

MpiCommunicator::MpiCommunicator(MPI_Comm comm) : host_(host_name()) {
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

void MpiCommunicator::allreduce(float* data, size_t count, ReduceOp op) {
  ALEXNET_ASSERT(data != nullptr || count == 0, "allreduce of a null buffer");
  for (size_t off = 0; off < count; off += kMaxChunk) {
    const int n = static_cast<int>(std::min(kMaxChunk, count - off));
    check(MPI_Allreduce(MPI_IN_PLACE, data + off, n, MPI_FLOAT, MPI_SUM, comm_), "MPI_Allreduce");
  }
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
  for (size_t off = 0; off < count; off += kMaxChunk) {
    const int n = static_cast<int>(std::min(kMaxChunk, count - off));
    check(MPI_Bcast(data + off, n, MPI_FLOAT, root, comm_), "MPI_Bcast");
  }
}

void MpiCommunicator::barrier() { check(MPI_Barrier(comm_), "MPI_Barrier"); }

void MpiCommunicator::allreduce_metrics(double* data, size_t count, ReduceOp op) {
  ALEXNET_CHECK(count <= kMaxChunk, "allreduce_metrics of ", count, " values: meant for a few");
  check(MPI_Allreduce(MPI_IN_PLACE, data, static_cast<int>(count), MPI_DOUBLE, MPI_SUM, comm_),
        "MPI_Allreduce of metrics");
  if (op == ReduceOp::kAverage)
    for (size_t i = 0; i < count; ++i) data[i] /= size_;
}

std::vector<uint64_t> MpiCommunicator::allgather(const std::vector<uint64_t>& values) {
  std::vector<uint64_t> all(values.size() * static_cast<size_t>(size_));
  check(MPI_Allgather(values.data(), static_cast<int>(values.size()), MPI_UINT64_T, all.data(),
                      static_cast<int>(values.size()), MPI_UINT64_T, comm_),
        "MPI_Allgather");
  return all;
}

}  // namespace alexnet
