// Checked CUDA runtime calls: a failure throws alexnet::Error naming the call and CUDA's message.
// For translation units that include cuda_runtime.h (CUDA builds only).
#pragma once

#include <cuda_runtime.h>

#include "core/error.h"

#define ALEXNET_CUDA_CHECK(expr)                                                                     \
  do {                                                                                               \
    cudaError_t err_ = (expr);                                                                       \
    ALEXNET_CHECK(err_ == cudaSuccess, "CUDA call ", #expr, " failed: ", cudaGetErrorString(err_)); \
  } while (0)
