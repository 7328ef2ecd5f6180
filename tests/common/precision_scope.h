// The GPU precision for one scope of a test (CUDA builds only): float32 is put back when the scope ends,
// a failed assertion or an exception included, so no test runs in a precision another one left behind.
#pragma once

#include "core/config.h"
#include "model/cuda/layers_cuda.h"

namespace alexnet::testing {

struct PrecisionScope {
  explicit PrecisionScope(Precision p) { set_cuda_precision(p); }
  ~PrecisionScope() { set_cuda_precision(Precision::kFloat32); }
  PrecisionScope(const PrecisionScope&) = delete;
  PrecisionScope& operator=(const PrecisionScope&) = delete;
};

}  // namespace alexnet::testing
