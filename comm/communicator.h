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
// wait() returns (or test() has returned true). Destroying an unfinished request waits for it.
class CommRequest {
 public:
  virtual ~CommRequest() = default;
  // Polls without blocking (and lets the transport progress); true once the result is in the buffer.
  virtual bool test() = 0;
  // Blocks until the result is in the buffer (averaged for ReduceOp::kAverage).
  virtual void wait() = 0;
};

// Buffers are `float* + count` (float32, contiguous). This build's implementations take host pointers;
// device pointers go to the NCCL implementation of the CUDA backend. Every call is collective over the
// communicator: each rank calls it in the same order with the same count.
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
class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(MPI_Comm comm);
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

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  std::string host_;
};

// Scales data[0, count) by 1/size (a no-op for size 1).
void scale_by_inverse(float* data, size_t count, int size);

}  // namespace alexnet
