// Counter-based random numbers: Philox4x32-10 (Salmon et al., "Parallel Random Numbers: As Easy as
// 1, 2, 3", SC 2011). A value depends only on (key, counter), never on thread order or call history,
// so the same draw is made on the CPU and on the GPU. Header-only and usable from CUDA kernels.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define ALEXNET_HD __host__ __device__ __forceinline__
#else
#define ALEXNET_HD inline
#endif

namespace alexnet {

// What a random draw is for; part of the key so that streams of different purposes never coincide.
enum class RngPurpose : uint32_t {
  kInit = 1,
  kDropout = 2,
  kShuffle = 3,
  kCrop = 4,
  kFlip = 5,
  kLighting = 6,
  kSynth = 7,
  kTest = 8,
};

struct PhiloxKey {
  uint32_t k0, k1;
};

struct PhiloxCounter {
  uint32_t c0, c1, c2, c3;
};

struct Philox4 {
  uint32_t v[4];
};

namespace philox_detail {
constexpr uint32_t kMul0 = 0xD2511F53u;
constexpr uint32_t kMul1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u;
constexpr uint32_t kWeyl1 = 0xBB67AE85u;

ALEXNET_HD void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  uint64_t p = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

ALEXNET_HD uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
}  // namespace philox_detail

// Ten rounds of Philox4x32.
ALEXNET_HD Philox4 philox4x32(PhiloxKey key, PhiloxCounter ctr) {
  using namespace philox_detail;
  uint32_t c0 = ctr.c0, c1 = ctr.c1, c2 = ctr.c2, c3 = ctr.c3;
  uint32_t k0 = key.k0, k1 = key.k1;
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(kMul0, c0, hi0, lo0);
    mulhilo(kMul1, c2, hi1, lo1);
    uint32_t n0 = hi1 ^ c1 ^ k0;
    uint32_t n1 = lo1;
    uint32_t n2 = hi0 ^ c3 ^ k1;
    uint32_t n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// Key for (seed, purpose, stream): `stream` separates e.g. the layers that use dropout.
ALEXNET_HD PhiloxKey make_key(uint64_t seed, RngPurpose purpose, uint32_t stream = 0) {
  using namespace philox_detail;
  uint64_t h = splitmix64(seed ^ splitmix64((static_cast<uint64_t>(purpose) << 32) | stream));
  return PhiloxKey{static_cast<uint32_t>(h), static_cast<uint32_t>(h >> 32)};
}

// Uniform in [0, 1) with 24 random bits (exactly representable in float).
ALEXNET_HD float uniform01(uint32_t bits) { return static_cast<float>(bits >> 8) * (1.0f / 16777216.0f); }

// Uniform in (0, 1]: safe under log().
ALEXNET_HD float uniform01_open_low(uint32_t bits) {
  return (static_cast<float>(bits >> 8) + 1.0f) * (1.0f / 16777216.0f);
}

// Two independent standard normals from two uniform draws (Box-Muller), in double for exactness
// across compilers; the draw happens once per image or weight, so the cost does not matter.
ALEXNET_HD void box_muller(uint32_t a, uint32_t b, double& z0, double& z1) {
  double u1 = (static_cast<double>(a >> 8) + 1.0) * (1.0 / 16777216.0);
  double u2 = static_cast<double>(b >> 8) * (1.0 / 16777216.0);
  double r = sqrt(-2.0 * log(u1));
  double theta = 6.283185307179586476925 * u2;
  z0 = r * cos(theta);
  z1 = r * sin(theta);
}

// Random draws addressed by a 64-bit "what" (e.g. a sample index) and a 64-bit element index.
// Element i uses word i%4 of the block at counter (what, i/4).
class CounterRng {
 public:
  ALEXNET_HD CounterRng(PhiloxKey key, uint64_t what) : key_(key), what_(what) {}

  ALEXNET_HD uint32_t bits(uint64_t element) const {
    uint64_t block = element >> 2;
    Philox4 r = philox4x32(key_, PhiloxCounter{static_cast<uint32_t>(block),
                                               static_cast<uint32_t>(block >> 32),
                                               static_cast<uint32_t>(what_),
                                               static_cast<uint32_t>(what_ >> 32)});
    return r.v[element & 3];
  }
  ALEXNET_HD Philox4 block(uint64_t block_index) const {
    return philox4x32(key_, PhiloxCounter{static_cast<uint32_t>(block_index),
                                          static_cast<uint32_t>(block_index >> 32),
                                          static_cast<uint32_t>(what_),
                                          static_cast<uint32_t>(what_ >> 32)});
  }
  ALEXNET_HD float uniform(uint64_t element) const { return uniform01(bits(element)); }
  // Standard normal number `element` (pairs come from one Box-Muller transform).
  ALEXNET_HD double normal(uint64_t element) const {
    Philox4 r = block(element >> 1);
    double z0, z1;
    box_muller(r.v[0], r.v[1], z0, z1);
    return (element & 1) ? z1 : z0;
  }

 private:
  PhiloxKey key_;
  uint64_t what_;
};

}  // namespace alexnet
