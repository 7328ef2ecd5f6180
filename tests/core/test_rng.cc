// Philox: the published known-answer vectors, and the statistics of the derived draws.
#include <gtest/gtest.h>

#include <cmath>

#include "core/rng.h"

namespace alexnet {
namespace {

TEST(Philox, KnownAnswers) {
  // Random123's kat_vectors for philox4x32_10.
  Philox4 zero = philox4x32(PhiloxKey{0, 0}, PhiloxCounter{0, 0, 0, 0});
  EXPECT_EQ(zero.v[0], 0x6627e8d5u);
  EXPECT_EQ(zero.v[1], 0xe169c58du);
  EXPECT_EQ(zero.v[2], 0xbc57ac4cu);
  EXPECT_EQ(zero.v[3], 0x9b00dbd8u);
  Philox4 ones = philox4x32(PhiloxKey{0xffffffffu, 0xffffffffu},
                            PhiloxCounter{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu});
  EXPECT_EQ(ones.v[0], 0x408f276du);
  EXPECT_EQ(ones.v[1], 0x41c83b0eu);
  EXPECT_EQ(ones.v[2], 0xa20bc7c6u);
  EXPECT_EQ(ones.v[3], 0x6d5451fdu);
  Philox4 pi = philox4x32(PhiloxKey{0xa4093822u, 0x299f31d0u},
                          PhiloxCounter{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u});
  EXPECT_EQ(pi.v[0], 0xd16cfe09u);
  EXPECT_EQ(pi.v[1], 0x94fdccebu);
  EXPECT_EQ(pi.v[2], 0x5001e420u);
  EXPECT_EQ(pi.v[3], 0x24126ea1u);
}

TEST(Philox, KeysSeparatePurposes) {
  PhiloxKey a = make_key(1, RngPurpose::kDropout, 0);
  PhiloxKey b = make_key(1, RngPurpose::kDropout, 1);
  PhiloxKey c = make_key(1, RngPurpose::kCrop, 0);
  PhiloxKey d = make_key(2, RngPurpose::kDropout, 0);
  EXPECT_FALSE(a.k0 == b.k0 && a.k1 == b.k1);
  EXPECT_FALSE(a.k0 == c.k0 && a.k1 == c.k1);
  EXPECT_FALSE(a.k0 == d.k0 && a.k1 == d.k1);
}

TEST(Philox, UniformAndNormalMoments) {
  CounterRng rng(make_key(7, RngPurpose::kTest), 3);
  const int n = 200000;
  double su = 0, su2 = 0, sn = 0, sn2 = 0, sn4 = 0;
  for (int i = 0; i < n; ++i) {
    double u = rng.uniform(i);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    su += u;
    su2 += u * u;
    double z = rng.normal(i);
    sn += z;
    sn2 += z * z;
    sn4 += z * z * z * z;
  }
  EXPECT_NEAR(su / n, 0.5, 0.005);
  EXPECT_NEAR(su2 / n - 0.25, 1.0 / 12, 0.002);
  EXPECT_NEAR(sn / n, 0.0, 0.01);
  EXPECT_NEAR(sn2 / n, 1.0, 0.01);
  EXPECT_NEAR(sn4 / n, 3.0, 0.06);
}

TEST(Philox, SameAddressSameValue) {
  CounterRng a(make_key(5, RngPurpose::kCrop), 42);
  CounterRng b(make_key(5, RngPurpose::kCrop), 42);
  for (uint64_t i = 0; i < 100; ++i) EXPECT_EQ(a.bits(999 - i), b.bits(999 - i));
}

}  // namespace
}  // namespace alexnet
