// Checked CUDA runtime calls: a failure throws alexnet::Error naming the call and CUDA's message.
// For translation units that include cuda_runtime.h (CUDA builds only).
#pragma once

#include <cuda_runtime.h>

#include "core/device.h"
#include "core/error.h"

#define ALEXNET_CUDA_CHECK(expr)                                                                     \
  do {                                                                                               \
    cudaError_t err_ = (expr);                                                                       \
    ALEXNET_CHECK(err_ == cudaSuccess, "CUDA call ", #expr, " failed: ", cudaGetErrorString(err_)); \
  } while (0)

namespace alexnet {

// Whether a cudaEventQuery / cudaStreamQuery result says the work is still running ("not ready", which is
// then cleared so that it does not stay behind as the runtime's last error).
inline bool cuda_still_running(cudaError_t query) {
  if (query != cudaErrorNotReady) return false;
  (void)cudaGetLastError();
  return true;
}

// Blocks until `event` has completed (or all work on `stream` has), counting a host wait (cuda_activity,
// core/device.h) when it had not yet; returns what the synchronisation returns.
inline cudaError_t cuda_wait_event(cudaEvent_t event) {
  if (cuda_still_running(cudaEventQuery(event))) count_cuda_host_wait();
  return cudaEventSynchronize(event);
}
inline cudaError_t cuda_wait_stream(cudaStream_t stream) {
  if (cuda_still_running(cudaStreamQuery(stream))) count_cuda_host_wait();
  return cudaStreamSynchronize(stream);
}

}  // namespace alexnet
