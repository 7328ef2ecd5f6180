// The GPU precision (and the convolution algorithm and bf16 layout choices) for one scope of a test (CUDA builds only):
// the default is put back when the scope ends, a failed assertion or an exception included, so no test
// runs in a setting another one left behind.
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

// parallel.deterministic for one scope; true (the default) is put back when it ends.
struct DeterministicScope {
  explicit DeterministicScope(bool deterministic) { set_cuda_deterministic(deterministic); }
  ~DeterministicScope() { set_cuda_deterministic(true); }
  DeterministicScope(const DeterministicScope&) = delete;
  DeterministicScope& operator=(const DeterministicScope&) = delete;
};

// The bf16 convolution layout for one scope; kFastest (the default) is put back when it ends.
struct Bf16LayoutScope {
  explicit Bf16LayoutScope(Bf16ConvLayout layout) { set_cuda_bf16_conv_layout(layout); }
  ~Bf16LayoutScope() { set_cuda_bf16_conv_layout(Bf16ConvLayout::kFastest); }
  Bf16LayoutScope(const Bf16LayoutScope&) = delete;
  Bf16LayoutScope& operator=(const Bf16LayoutScope&) = delete;
};

}  // namespace alexnet::testing
