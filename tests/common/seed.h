// A seed that differs from run to run, printed so that a failure can be replayed: the GPU tests draw
// fresh random inputs every run.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>

namespace alexnet::testing {

inline uint64_t printed_seed() {
  const uint64_t seed = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  std::printf("seed %llu\n", static_cast<unsigned long long>(seed));
  return seed;
}

}  // namespace alexnet::testing
