#include "comm/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <thread>
#include <vector>

#include "comm/placement.h"
#include "core/cuda_check.h"
#include "core/device.h"
#include "core/error.h"

namespace alexnet {
struct NcclCommunicator::State {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  // `ready` is recorded on the source stream before each collective (a wait captures it when issued, so
  // one event serves every collective); `spare` holds completion events of finished requests for reuse,
  // so a step creates none once the first has run.
  cudaEvent_t ready = nullptr;
  std::shared_ptr<std::vector<cudaEvent_t>> spare = std::make_shared<std::vector<cudaEvent_t>>();
  bool aborted = false;  // ncclCommAbort has freed `comm`
  std::string host;
};

// An NCCL call that must succeed; NCCL_QUEUED: one on the non-blocking communicator, where ncclInProgress
// means queued in the background (enqueue then waits for it to settle).
#define NCCL_CALL(expr, in_progress_ok)                                                                       \
  do {                                                                                                         \
    ncclResult_t r_ = (expr);                                                                                  \
    ALEXNET_CHECK(r_ == ncclSuccess || ((in_progress_ok) && r_ == ncclInProgress), "NCCL call ", #expr,         \
                  " failed on ", describe(), ": ", ncclGetErrorString(r_), " (",                                \
                  ncclGetLastError(state_ ? state_->comm : nullptr), ")");                                     \
  } while (0)
#define NCCL_OK(expr) NCCL_CALL(expr, false)
#define NCCL_QUEUED(expr) NCCL_CALL(expr, true)

namespace {

// Polls `comm`'s state while it is ncclInProgress (a non-blocking call finishing in the background), for
// at most limit_s (0: no limit; the time spent in *waited_s); returns the last state, or the failure of
// the query itself.
ncclResult_t poll_state(ncclComm_t comm, double limit_s, double* waited_s) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  for (;;) {
    ncclResult_t async = ncclSuccess;
    const ncclResult_t r = ncclCommGetAsyncError(comm, &async);
    *waited_s = std::chrono::duration<double>(Clock::now() - start).count();
    if (r != ncclSuccess) return r;
    if (async != ncclInProgress || (limit_s > 0 && *waited_s >= limit_s)) return async;
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

class NcclRequest final : public CommRequest {
 public:
  NcclRequest(const NcclCommunicator& owner, const char* call, int device, cudaEvent_t done,
              std::shared_ptr<std::vector<cudaEvent_t>> spare)
      : owner_(owner), call_(call), device_(device), done_(done), spare_(std::move(spare)) {}
  ~NcclRequest() override {
    // After a timeout anywhere in the process the peers are stuck and the process is ending: abort rather
    // than wait (the kernels stop, so nothing writes the buffer any more).
    if (!finished_ && comm_timed_out()) owner_.abort();
    try {
      wait();
    } catch (...) {
      cudaEventDestroy(done_);  // the communicator is aborted: do not reuse the event
      return;
    }
    spare_->push_back(done_);
  }
  bool test() override {
    if (finished_) return true;
    // After an abort the event completes with the aborted kernels, and the buffer holds no result.
    if (owner_.aborted()) owner_.check_async();
    cudaSetDevice(device_);
    const cudaError_t q = cudaEventQuery(done_);
    if (q == cudaSuccess) return finished_ = true;
    ALEXNET_CHECK(q == cudaErrorNotReady, "CUDA event query failed on ", owner_.describe(), ": ", cudaGetErrorString(q));
    // "Not ready" can stay behind as the runtime's last error, and the next kernel launch check (polls
    // run in the middle of backward) would report it as that launch's failure: clear it.
    (void)cudaGetLastError();
    owner_.check_async();
    return false;
  }
  void wait() override {
    using Clock = std::chrono::steady_clock;
    const Clock::time_point start = Clock::now();
    const double timeout_s = owner_.timeout_s();
    bool counted = false;
    while (!test()) {
      if (!counted) count_cuda_host_wait();  // core/device.h: the host blocks on the GPU's reduction
      counted = true;
      const double waited = std::chrono::duration<double>(Clock::now() - start).count();
      if (timeout_s > 0 && waited >= timeout_s) owner_.fail_timeout(call_, waited);
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

 private:
  const NcclCommunicator& owner_;
  const char* call_;
  int device_;
  cudaEvent_t done_;
  std::shared_ptr<std::vector<cudaEvent_t>> spare_;
  bool finished_ = false;
};

}  // namespace

NcclCommunicator::NcclCommunicator(MPI_Comm comm, int device, CUstream_st* source, double timeout_s)
    : mpi_(std::make_unique<MpiCommunicator>(comm, timeout_s)), state_(std::make_unique<State>()), device_(device),
      source_(source) {
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  state_->host = host;
  // Two ranks on one GPU: NCCL would fail (or hang) in ncclCommInitRank; name them instead.
  std::hash<std::string> hasher;
  uint64_t gpu = kGpuIndexOnly | static_cast<uint64_t>(device);
  try {
    gpu = cuda_device_pci_id(device);
  } catch (const Error&) {
    // No usable device: the index still names the conflict, and the setup below fails on its own.
  }
  const std::vector<uint64_t> where = mpi_->allgather({hasher(state_->host), gpu});
  const std::string conflict = shared_gpu_conflict(where);
  ALEXNET_CHECK(conflict.empty(), conflict);
  // Both towers' communicators sit on one GPU when devices_per_rank is 1, and their reductions overlap.
  // NCCL can deadlock when kernels of two communicators on one device run in different orders on
  // different ranks; since 2.26 NCCL_LAUNCH_ORDER_IMPLICIT orders them on the device by the host's
  // issue order, which GradBuckets keeps the same on every rank. Set before the process's first NCCL
  // call (NCCL reads its parameters once); a value from the user's environment stays.
  setenv("NCCL_LAUNCH_ORDER_IMPLICIT", "1", 0);
  // Rank 0's id reaches the others within the timeout (a rank that never gets here must not hang them).
  std::unique_ptr<ncclUniqueId> id(new ncclUniqueId());
  if (rank() == 0) NCCL_OK(ncclGetUniqueId(id.get()));
  MPI_Request request = MPI_REQUEST_NULL;
  mpi_->check(MPI_Ibcast(id.get(), sizeof *id, MPI_BYTE, 0, mpi_->comm(), &request), "MPI_Ibcast of the NCCL id");
  try {
    mpi_->wait_all(&request, 1, "MPI_Ibcast of the NCCL id");
  } catch (...) {
    (void)id.release();  // the unfinished broadcast may still write it: left to the process's end
    throw;
  }
  ALEXNET_CUDA_CHECK(cudaSetDevice(device));
  ALEXNET_CUDA_CHECK(cudaStreamCreateWithFlags(&state_->stream, cudaStreamNonBlocking));
  ALEXNET_CUDA_CHECK(cudaEventCreateWithFlags(&state_->ready, cudaEventDisableTiming));
  // A non-blocking communicator: ncclCommInitRankConfig returns at once and the setup (which waits for
  // every rank to join) goes on in the background, polled here within the timeout, so a rank that never
  // joins ends the job with an error instead of hanging it. Its calls may also return ncclInProgress,
  // which settle() waits out.
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  NCCL_QUEUED(ncclCommInitRankConfig(&state_->comm, size(), *id, rank(), &config));
  settle("ncclCommInitRankConfig (every rank joining the communicator)");
}

void NcclCommunicator::settle(const char* call) const {
  double waited = 0;
  const ncclResult_t r = poll_state(state_->comm, timeout_s(), &waited);
  if (r == ncclSuccess) return;
  if (r == ncclInProgress) fail_timeout(call, waited);
  abort();
  ALEXNET_FAIL("NCCL call ", call, " failed on ", describe(), ": ", ncclGetErrorString(r), " (",
               ncclGetLastError(nullptr), "); the communicator was aborted");
}

NcclCommunicator::~NcclCommunicator() {
  if (!state_) return;
  cudaSetDevice(device_);
  if (state_->comm && !state_->aborted) {
    // Finalize flushes what is still queued (nothing after a completed step) and, on a non-blocking
    // communicator, completes in the background: waited for within the timeout (10 s without one), else
    // (and after a timeout anywhere in the process) the communicator is aborted rather than the process
    // kept from ending.
    ncclResult_t r = ncclInternalError;
    if (!comm_timed_out()) {
      r = ncclCommFinalize(state_->comm);
      double waited = 0;
      const double limit_s = timeout_s() > 0 ? timeout_s() : 10.0;
      if (r == ncclSuccess || r == ncclInProgress) r = poll_state(state_->comm, limit_s, &waited);
    }
    if (r == ncclSuccess) (void)ncclCommDestroy(state_->comm);  // local once finalized
    else ncclCommAbort(state_->comm);
  }
  if (state_->stream) cudaStreamDestroy(state_->stream);
  if (state_->ready) cudaEventDestroy(state_->ready);
  for (cudaEvent_t e : *state_->spare) cudaEventDestroy(e);
  state_->spare->clear();
}

std::string NcclCommunicator::describe() const {
  return str_cat("NCCL rank ", rank(), " of ", size(), " on host ", state_ ? state_->host : "?", " GPU ", device_);
}

bool NcclCommunicator::aborted() const { return state_->aborted; }

void NcclCommunicator::abort() const {
  if (state_->aborted) return;
  ncclCommAbort(state_->comm);
  state_->aborted = true;
}

void NcclCommunicator::check_async() const {
  ALEXNET_CHECK(!state_->aborted, "the NCCL communicator of ", describe(),
                " was aborted after an earlier error or timeout; the job must end");
  ncclResult_t async = ncclSuccess;
  const ncclResult_t r = ncclCommGetAsyncError(state_->comm, &async);
  if (r == ncclSuccess && async == ncclSuccess) return;
  abort();
  ALEXNET_FAIL("NCCL reported an error on ", describe(), ": ", ncclGetErrorString(r != ncclSuccess ? r : async),
               " (a peer may have died); the communicator was aborted");
}

void NcclCommunicator::fail_timeout(const char* call, double waited_s) const {
  // Aborting ends the kernels that wait for the missing peer, so the stream (and this process) can go on
  // to its end.
  note_comm_timeout();
  abort();
  ALEXNET_FAIL("timed out after ", std::round(waited_s * 1000) / 1000, " s (parallel.comm_timeout_s: ", timeout_s(),
               ") in ", call, " on ", describe(),
               ": a peer rank is stuck (alive but not joining) or gone; the communicator was aborted, so the job "
               "must end");
}

std::unique_ptr<CommRequest> NcclCommunicator::enqueue(const char* call, const std::function<void()>& collective) {
  if (state_->aborted) check_async();
  ALEXNET_CUDA_CHECK(cudaSetDevice(device_));
  cudaEvent_t done = nullptr;
  if (state_->spare->empty()) {
    ALEXNET_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  } else {
    done = state_->spare->back();
    state_->spare->pop_back();
  }
  auto request = std::make_unique<NcclRequest>(*this, call, device_, done, state_->spare);
  // The buffers were written on the source stream: wait for that work, not for later work. A replayed
  // training graph names the event inside it where they became final (CudaReadyEventScope, core/device.h).
  if (auto* replayed = static_cast<cudaEvent_t>(cuda_ready_event())) {
    ALEXNET_CUDA_CHECK(cudaStreamWaitEvent(state_->stream, replayed, 0));
  } else {
    ALEXNET_CUDA_CHECK(cudaEventRecord(state_->ready, source_ ? source_ : cudaStreamLegacy));
    ALEXNET_CUDA_CHECK(cudaStreamWaitEvent(state_->stream, state_->ready, 0));
  }
  collective();
  // On the non-blocking communicator the call may still be queueing its kernels (ncclInProgress):
  // nothing else goes to the stream before it has.
  settle(call);
  ALEXNET_CUDA_CHECK(cudaEventRecord(done, state_->stream));
  return request;
}

std::unique_ptr<CommRequest> NcclCommunicator::allreduce_async(float* data, size_t count, ReduceOp op) {
  return enqueue("ncclAllReduce", [&] {
    NCCL_QUEUED(ncclAllReduce(data, data, count, ncclFloat32, op == ReduceOp::kAverage ? ncclAvg : ncclSum,
                              state_->comm, state_->stream));
  });
}

void NcclCommunicator::allreduce(float* data, size_t count, ReduceOp op) { allreduce_async(data, count, op)->wait(); }

void NcclCommunicator::broadcast(float* data, size_t count, int root) {
  enqueue("ncclBroadcast", [&] {
    NCCL_QUEUED(ncclBroadcast(data, data, count, ncclFloat32, root, state_->comm, state_->stream));
  })->wait();
}

}  // namespace alexnet
