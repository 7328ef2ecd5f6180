// Values for checking reductions across ranks: each rank fills its buffer with values that every rank
// can compute for every other rank, so each can check the reduced result on its own.
#pragma once

#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace alexnet {

// Uniform in [-1, 1), keyed by (seed, rank, i).
inline float keyed_value(uint64_t seed, int rank, size_t i) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull ^ (static_cast<uint64_t>(rank) << 40) ^ i;
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return static_cast<float>(static_cast<double>(x >> 40) / static_cast<double>(1ull << 23) - 1.0);
}

// Integers and halves: every partial sum over up to 4 ranks is exact in float32.
inline float exact_value(int rank, size_t i) {
  return static_cast<float>((rank + 1) * static_cast<int>(i % 97)) * 0.5f - 20.0f;
}

inline float exact_sum(int ranks, size_t i) {
  float s = 0;
  for (int r = 0; r < ranks; ++r) s += exact_value(r, i);
  return s;
}

// The sum of |exact_value(r, i)| over the ranks: the scale of the rounding error of a reduction.
inline double exact_magnitude(int ranks, size_t i) {
  double m = 0;
  for (int r = 0; r < ranks; ++r) m += std::fabs(exact_value(r, i));
  return m;
}

// Gradient tensor sizes shaped like one tower's list in backward order (weight, bias; uneven sizes so
// bucket boundaries fall inside and between tensors).
inline const std::vector<size_t>& grad_sizes() {
  static const std::vector<size_t> sizes = {5003, 17, 40000, 64, 9000, 64, 120000, 128, 3000, 96, 2500, 48};
  return sizes;
}

// Checks got[0, n) against the float64 average over `ranks` ranks of keyed_value(seed, r, offset + i),
// within 4 float32 roundings of the summed magnitudes; reports the first five misses, returns their count.
inline size_t expect_keyed_average(const float* got, size_t n, uint64_t seed, int ranks, size_t offset = 0) {
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    double sum = 0, mag = 0;
    for (int r = 0; r < ranks; ++r) {
      const double v = keyed_value(seed, r, offset + i);
      sum += v;
      mag += std::fabs(v);
    }
    const double ref = sum / ranks, tol = 4 * FLT_EPSILON * mag / ranks + 1e-30;
    if (!(std::fabs(got[i] - ref) <= tol) && bad++ < 5)
      ADD_FAILURE() << "element " << offset + i << ": got " << got[i] << ", float64 reference " << ref;
  }
  return bad;
}

}  // namespace alexnet
