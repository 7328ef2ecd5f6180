// Gradient communication across worker ranks: one interface, `Communicator`, with an MPI implementation
// (CPU buffers) and a world-size-1 `LocalCommunicator`, so single-process code needs no special cases.
// The NCCL implementation (device pointers, one stream) comes with the CUDA backend behind the same calls.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace alexnet {

enum class ReduceOp { kSum, kAverage };  // kAverage: the sum scaled by 1/size()

// An asynchronous reduction in flight. The buffer it was started on must stay alive and untouched until
// wait() returns (or test() has returned true). Destroying an unfinished request waits for it (within
// the communicator's deadline, and not after comm_timed_out(): the process is ending then).
class CommRequest {
 public:
  virtual ~CommRequest() = default;
  // Polls without blocking (and lets the transport progress); true once the result is in the buffer.
  virtual bool test() = 0;
  // Blocks until the result is in the buffer (averaged for ReduceOp::kAverage); throws an Error naming
  // parallel.comm_timeout_s when the communicator's deadline passes first.
  virtual void wait() = 0;
};

// Buffers are `float* + count` (float32, contiguous). This build's implementations take host pointers;
// device pointers go to the NCCL implementation of the CUDA backend. Every call is collective over the
// communicator: each rank calls it in the same order with the same count. The blocking calls throw when a
// peer rank does not join within the communicator's deadline (parallel.comm_timeout_s).
class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "rank 1 of 4 on host n07", for messages.
  virtual std::string describe() const = 0;

  // data: [count] float32, reduced in place.
  virtual void allreduce(float* data, size_t count, ReduceOp op) = 0;
  // Starts the reduction and returns at once; the result is in `data` after the request completes.
  virtual std::unique_ptr<CommRequest> allreduce_async(float* data, size_t count, ReduceOp op) = 0;
  // data: [count] float32; root's values end up on every rank.
  virtual void broadcast(float* data, size_t count, int root) = 0;
  virtual void barrier() = 0;
  // A few doubles (metrics: loss sums, correct counts), reduced in place.
  virtual void allreduce_metrics(double* data, size_t count, ReduceOp op) = 0;
  // Every rank's `values` (the same length on each), concatenated in rank order.
  virtual std::vector<uint64_t> allgather(const std::vector<uint64_t>& values) = 0;
  // True when the float buffers of allreduce/broadcast are device memory (NCCL), not host memory.
  virtual bool device_buffers() const { return false; }
};

// Size 1: reductions and broadcasts leave the data as it is (the average of one copy is itself).
class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string describe() const override;
  void allreduce(float* data, size_t count, ReduceOp op) override;
  std::unique_ptr<CommRequest> allreduce_async(float* data, size_t count, ReduceOp op) override;
  void broadcast(float* data, size_t count, int root) override;
  void barrier() override {}
  void allreduce_metrics(double* data, size_t count, ReduceOp op) override;
  std::vector<uint64_t> allgather(const std::vector<uint64_t>& values) override { return values; }
};

// Over a duplicate of `comm` (collective to construct), so its traffic never mixes with other users of
// `comm`; the duplicate (and `comm` itself, so the duplication can be checked) return errors
// (MPI_ERRORS_RETURN) and each failed call throws an Error naming the call, this rank and its host. MPI must be initialised; calls come from one thread.
//
// Deadline (parallel.comm_timeout_s): every wait for the other ranks (the blocking calls and
// CommRequest::wait) gives up after `timeout_s` seconds and throws an Error naming the call, this rank and
// the key: a peer rank that is alive but never joins would otherwise hold every other rank forever. 0 waits
// forever. After a timeout the operation is still pending in MPI and may write its buffer whenever the peer
// arrives, so the process is meant to end (run_mpi_process logs and calls MPI_Abort): unfinished requests
// no longer wait in their destructors (comm_timed_out), and the buffers of its own that a blocking call
// was using (metrics, allgather) are kept until the process ends. A caller that goes on after a timeout
// calls wait_timed_out() before it reuses or frees the buffer it gave to allreduce or broadcast (and a
// timed-out request's wait() again).
class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(MPI_Comm comm, double timeout_s = 0);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string describe() const override;
  MPI_Comm comm() const { return comm_; }

  void allreduce(float* data, size_t count, ReduceOp op) override;
  std::unique_ptr<CommRequest> allreduce_async(float* data, size_t count, ReduceOp op) override;
  void broadcast(float* data, size_t count, int root) override;
  void barrier() override;
  void allreduce_metrics(double* data, size_t count, ReduceOp op) override;
  std::vector<uint64_t> allgather(const std::vector<uint64_t>& values) override;

  // Throws if rc is not MPI_SUCCESS: "<call> failed on rank 1 of 4 on host n07: <MPI's message>".
  void check(int rc, const char* call) const;

  double timeout_s() const { return timeout_s_; }
  // Completes reqs[0, n) within the deadline (MPI_Waitall when the timeout is 0); past it throws, naming
  // `call` ("MPI_Iallreduce of an allreduce"), and leaves the unfinished requests in `reqs`.
  void wait_all(MPI_Request* reqs, int n, const char* call) const;
  // Completes, without a deadline, the operations of blocking calls whose wait timed out; their buffers
  // hold the results afterwards.
  void wait_timed_out();

 private:
  // The requests of a blocking call whose wait failed, with the buffer of ours they write (may be null).
  struct Pending {
    std::vector<MPI_Request> reqs;
    std::shared_ptr<void> buffer;
  };
  // Waits for a blocking call's requests; if that fails they are kept in pending_ with `buffer`.
  void finish(std::vector<MPI_Request>& reqs, const char* call, std::shared_ptr<void> buffer = nullptr);

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  std::string host_;
  double timeout_s_ = 0;
  std::vector<Pending> pending_;
};

// True once a wait of any communicator of this process has run past parallel.comm_timeout_s. The process
// is then meant to end, and destructors of unfinished requests stop waiting: the peers they would wait
// for are stuck, and waiting while an exception unwinds would keep the process from ending.
bool comm_timed_out();
// Records such a timeout; the communicators call it before they throw.
void note_comm_timeout();

// Scales data[0, count) by 1/size (a no-op for size 1).
void scale_by_inverse(float* data, size_t count, int size);

}  // namespace alexnet
