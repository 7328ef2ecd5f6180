// The Communicator over NCCL for the CUDA backend: float buffers are device memory of one GPU, reductions
// run on the communicator's own stream, bootstrapped over MPI (rank 0's ncclUniqueId is broadcast). Host
// values (metrics, barriers, allgather) go over the MPI communicator it was made from.
#pragma once

#include <mpi.h>

#include <functional>
#include <memory>
#include <string>

#include "comm/communicator.h"

struct CUstream_st;

namespace alexnet {

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `comm`: every rank joins with its GPU `device`. NCCL refuses two ranks of one
  // communicator on the same GPU; the constructor checks that first and names the ranks (message from
  // shared_gpu_conflict, comm/placement.h). `source`: the stream whose work writes the buffers (the
  // tower's stream, AlexNet::stream); nullptr: the device's legacy default stream. `timeout_s`
  // (parallel.comm_timeout_s, 0: none) bounds every wait for the other ranks, here and in the inner
  // MpiCommunicator: the broadcast of the NCCL id (MPI_Ibcast), the communicator's setup (non-blocking,
  // polled), each collective's queueing and completion, and the final flush in the destructor (10 s
  // without a timeout; then the communicator is aborted).
  NcclCommunicator(MPI_Comm comm, int device, CUstream_st* source = nullptr, double timeout_s = 0);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return mpi_->rank(); }
  int size() const override { return mpi_->size(); }
  std::string describe() const override;
  bool device_buffers() const override { return true; }

  // The reductions wait (through an event) for the work already queued on the source stream, where the
  // model computes, and run on this communicator's non-blocking stream, so backward
  // goes on while they travel. A request completes when its event has; while waiting, NCCL's
  // asynchronous error state is polled, and an error aborts the communicator and throws, so a peer that
  // NCCL reports lost (network transports) ends the job instead of hanging it. A rank that dies on the
  // node is mpirun's to see: it ends the whole job. A wait that outlasts the timeout (a peer alive but
  // never joining) aborts the communicator too and throws an Error naming parallel.comm_timeout_s; the
  // time counts from the start of the wait and includes the source stream's work queued before the
  // collective.
  void allreduce(float* data, size_t count, ReduceOp op) override;
  std::unique_ptr<CommRequest> allreduce_async(float* data, size_t count, ReduceOp op) override;
  void broadcast(float* data, size_t count, int root) override;
  void barrier() override { mpi_->barrier(); }
  void allreduce_metrics(double* data, size_t count, ReduceOp op) override { mpi_->allreduce_metrics(data, count, op); }
  std::vector<uint64_t> allgather(const std::vector<uint64_t>& values) override { return mpi_->allgather(values); }

  // Throws (after aborting the communicator) if NCCL reports an asynchronous error, or if the
  // communicator was aborted before.
  void check_async() const;
  // Aborts the communicator and throws: `call` ("ncclAllReduce") did not complete within the timeout.
  [[noreturn]] void fail_timeout(const char* call, double waited_s) const;
  double timeout_s() const { return mpi_->timeout_s(); }
  // ncclCommAbort, once (it frees the communicator; the kernels in flight stop); later calls throw.
  void abort() const;
  bool aborted() const;

 private:
  struct State;
  // Waits until the communicator's state is no longer ncclInProgress (a non-blocking call finishing in the
  // background): returns on ncclSuccess; aborts the communicator and throws on an error, or once
  // parallel.comm_timeout_s has passed (fail_timeout), naming `call`.
  void settle(const char* call) const;
  // Runs `collective` (which enqueues on the communicator's stream) after the work already queued on the
  // source stream; the request, named `call` in errors, completes with it.
  std::unique_ptr<CommRequest> enqueue(const char* call, const std::function<void()>& collective);
  std::unique_ptr<MpiCommunicator> mpi_;
  std::unique_ptr<State> state_;
  int device_ = 0;
  CUstream_st* source_ = nullptr;
};

}  // namespace alexnet
