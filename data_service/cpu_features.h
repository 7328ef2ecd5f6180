// Run-time choice of the AVX2 code paths of the input pipeline (decode, rescale, crop, normalisation).
#pragma once

#include <cstdlib>

namespace alexnet {

#if defined(__x86_64__)
// True when the CPU has AVX2 and ALEXNET_NO_SIMD is unset (ALEXNET_NO_SIMD=1 forces the scalar code,
// which gives the same results; the tests run both).
inline bool have_avx2() {
  static const bool yes = [] {
    __builtin_cpu_init();  // harmless when already done; needed if the first call runs during static init
    return __builtin_cpu_supports("avx2") && std::getenv("ALEXNET_NO_SIMD") == nullptr;
  }();
  return yes;
}
#endif

}  // namespace alexnet
