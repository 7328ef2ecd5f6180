// ReLU, tanh, dropout, softmax cross-entropy and the SGD update: finite-difference gradients in
// float64, dropout's keyed masks (determinism, independence of the split, keep rate), exact SGD.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "model/layers.h"
#include "tests/common/gradcheck.h"

namespace alexnet {
namespace {

using testing::check_gradients;
using testing::dot;
using testing::random_tensor;

// ---- activations ----

TEST(Relu, ValuesAndGradient) {
  Tensor x = Tensor::from_vector<double>({2, 3}, {-1.5, 0.0, 2.0, 3.5, -0.25, 1e-3});
  Tensor y = Tensor::empty(x.shape(), DType::kF64);
  relu_forward_cpu(x, y);
  EXPECT_EQ(std::vector<double>(y.data<double>(), y.data<double>() + 6),
            (std::vector<double>{0.0, 0.0, 2.0, 3.5, 0.0, 1e-3}));
  // Away from the kink at 0, the analytic gradient matches central differences.
  Tensor xs = random_tensor({4, 9}, 301, 0.1, 1.0);
  Tensor sign = random_tensor({4, 9}, 302);
  for (int64_t i = 0; i < xs.numel(); ++i)
    if (sign.data<double>()[i] < 0) xs.data<double>()[i] *= -1;
  Tensor r = random_tensor(xs.shape(), 303);
  Tensor ys = Tensor::empty(xs.shape(), DType::kF64), dx = Tensor::empty(xs.shape(), DType::kF64);
  relu_forward_cpu(xs, ys);
  relu_backward_cpu(ys, r, dx);
  auto loss = [&] {
    Tensor yy = Tensor::empty(xs.shape(), DType::kF64);
    relu_forward_cpu(xs, yy);
    return dot(yy, r);
  };
  auto res = check_gradients({xs}, {dx}, loss);
  EXPECT_LT(res.max_abs_error, 1e-9) << res.worst;
}

TEST(Relu, InPlaceAndFloat32) {
  Tensor x = random_tensor({3, 1000}, 304, -1.0, 1.0, DType::kF32);
  Tensor ref = Tensor::empty(x.shape(), DType::kF32);
  relu_forward_cpu(x, ref);
  relu_forward_cpu(x, x);  // y may alias x
  for (int64_t i = 0; i < x.numel(); ++i) {
    ASSERT_EQ(x.data<float>()[i], ref.data<float>()[i]);
    ASSERT_GE(x.data<float>()[i], 0.0f);
  }
}

TEST(Tanh, Gradient) {
  Tensor x = random_tensor({3, 11}, 311, -2.0, 2.0);
  Tensor r = random_tensor(x.shape(), 312);
  Tensor y = Tensor::empty(x.shape(), DType::kF64), dx = Tensor::empty(x.shape(), DType::kF64);
  tanh_forward_cpu(x, y);
  EXPECT_DOUBLE_EQ(y.data<double>()[5], std::tanh(x.data<double>()[5]));
  tanh_backward_cpu(y, r, dx);
  auto loss = [&] {
    Tensor yy = Tensor::empty(x.shape(), DType::kF64);
    tanh_forward_cpu(x, yy);
    return dot(yy, r);
  };
  auto res = check_gradients({x}, {dx}, loss);
  EXPECT_LT(res.max_rel_error, 1e-6) << res.worst;
  // In place on the gradient: dx may alias dy.
  Tensor g = r.clone();
  tanh_backward_cpu(y, g, g);
  for (int64_t i = 0; i < g.numel(); ++i) ASSERT_EQ(g.data<double>()[i], dx.data<double>()[i]);
}

// ---- dropout ----

DropoutKeying keying(uint64_t seed, uint64_t step, const std::vector<int64_t>& ids,
                     int64_t offset) {
  DropoutKeying k;
  k.key = make_key(seed, RngPurpose::kDropout, 6);
  k.step = step;
  k.sample_ids = ids.data();
  k.unit_offset = offset;
  return k;
}

std::vector<uint8_t> mask_of(const Tensor& m) {
  return std::vector<uint8_t>(m.data<uint8_t>(), m.data<uint8_t>() + m.numel());
}

TEST(Dropout, FollowsTheKeyingRule) {
  const int64_t N = 3, U = 37;
  std::vector<int64_t> ids = {5, 900, 12};
  DropoutKeying k = keying(42, 7, ids, 3);
  Tensor x = random_tensor({N, U}, 321, 0.5, 1.0);
  Tensor y = Tensor::empty(x.shape(), DType::kF64), m = Tensor::empty(x.shape(), DType::kU8);
  const double p = 0.3;
  dropout_forward_cpu(x, y, m, p, k);
  for (int64_t r = 0; r < N; ++r) {
    CounterRng rng(k.key, (uint64_t{7} << 32) | static_cast<uint64_t>(ids[r]));
    for (int64_t j = 0; j < U; ++j) {
      const bool keep = rng.uniform(static_cast<uint64_t>(3 + j)) >= p;
      const int64_t i = r * U + j;
      ASSERT_EQ(m.data<uint8_t>()[i], keep ? 1 : 0) << "row " << r << " unit " << j;
      ASSERT_EQ(y.data<double>()[i], keep ? x.data<double>()[i] * (1.0 / 0.7) : 0.0);
    }
  }
}

TEST(Dropout, SameKeyingSameMaskAndStepsDiffer) {
  std::vector<int64_t> ids = {0, 1, 2, 3};
  Tensor x = random_tensor({4, 300}, 322, -1.0, 1.0, DType::kF32);
  Tensor y = Tensor::empty(x.shape(), DType::kF32);
  Tensor m1 = Tensor::empty(x.shape(), DType::kU8), m2 = Tensor::empty(x.shape(), DType::kU8);
  Tensor m3 = Tensor::empty(x.shape(), DType::kU8), m4 = Tensor::empty(x.shape(), DType::kU8);
  dropout_forward_cpu(x, y, m1, 0.5, keying(1, 10, ids, 0));
  dropout_forward_cpu(x, y, m2, 0.5, keying(1, 10, ids, 0));
  dropout_forward_cpu(x, y, m3, 0.5, keying(1, 11, ids, 0));
  dropout_forward_cpu(x, y, m4, 0.5, keying(2, 10, ids, 0));
  EXPECT_EQ(mask_of(m1), mask_of(m2));
  EXPECT_NE(mask_of(m1), mask_of(m3));
  EXPECT_NE(mask_of(m1), mask_of(m4));
}

// Rows 2..5 and units 10..29 computed on their own (the graph may hold a shard of the batch, or one
// tower's half of the units) give exactly the same mask as the whole layer.
TEST(Dropout, MaskIndependentOfSplit) {
  const int64_t N = 8, U = 50;
  std::vector<int64_t> ids = {100, 101, 102, 103, 104, 105, 106, 107};
  Tensor x = random_tensor({N, U}, 323);
  Tensor y = Tensor::empty(x.shape(), DType::kF64), m = Tensor::empty(x.shape(), DType::kU8);
  dropout_forward_cpu(x, y, m, 0.5, keying(3, 4, ids, 0));
  const int64_t r0 = 2, r1 = 6, u0 = 10, u1 = 30;
  std::vector<int64_t> part_ids(ids.begin() + r0, ids.begin() + r1);
  Tensor xp = Tensor::empty({r1 - r0, u1 - u0}, DType::kF64);
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t u = u0; u < u1; ++u)
      xp.data<double>()[(r - r0) * (u1 - u0) + (u - u0)] = x.data<double>()[r * U + u];
  Tensor yp = Tensor::empty(xp.shape(), DType::kF64), mp = Tensor::empty(xp.shape(), DType::kU8);
  dropout_forward_cpu(xp, yp, mp, 0.5, keying(3, 4, part_ids, u0));
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t i = (r - r0) * (u1 - u0) + (u - u0);
      ASSERT_EQ(mp.data<uint8_t>()[i], m.data<uint8_t>()[r * U + u]) << r << "," << u;
      ASSERT_EQ(yp.data<double>()[i], y.data<double>()[r * U + u]);
    }
}

TEST(Dropout, KeepFraction) {
  std::vector<int64_t> ids(64);
  for (int64_t i = 0; i < 64; ++i) ids[i] = 1000 + i;
  Tensor x = Tensor::empty({64, 4096}, DType::kF32);
  x.fill(1.0);
  Tensor y = Tensor::empty(x.shape(), DType::kF32), m = Tensor::empty(x.shape(), DType::kU8);
  for (double p : {0.5, 0.2, 0.0}) {
    dropout_forward_cpu(x, y, m, p, keying(9, 1, ids, 0));
    int64_t kept = 0;
    double sum = 0;
    for (int64_t i = 0; i < m.numel(); ++i) {
      kept += m.data<uint8_t>()[i];
      sum += y.data<float>()[i];
    }
    const double n = static_cast<double>(m.numel());
    // 262144 draws: the standard deviation of the fraction is below 0.001.
    EXPECT_NEAR(kept / n, 1.0 - p, 0.005) << "p=" << p;
    EXPECT_NEAR(sum / n, 1.0, 0.01) << "p=" << p;  // inverted dropout keeps the mean
  }
}

TEST(Dropout, GradientWithFixedMask) {
  std::vector<int64_t> ids = {3, 1, 4};
  DropoutKeying k = keying(5, 2, ids, 0);
  Tensor x = random_tensor({3, 20}, 324);
  Tensor r = random_tensor(x.shape(), 325);
  Tensor y = Tensor::empty(x.shape(), DType::kF64), m = Tensor::empty(x.shape(), DType::kU8);
  dropout_forward_cpu(x, y, m, 0.4, k);
  Tensor dx = Tensor::empty(x.shape(), DType::kF64);
  dropout_backward_cpu(r, m, 0.4, dx);
  // The keying fixes the mask, so re-running the forward differentiates y for that mask.
  auto loss = [&] {
    Tensor yy = Tensor::empty(x.shape(), DType::kF64), mm = Tensor::empty(x.shape(), DType::kU8);
    dropout_forward_cpu(x, yy, mm, 0.4, k);
    return dot(yy, r);
  };
  auto res = check_gradients({x}, {dx}, loss);
  EXPECT_LT(res.max_abs_error, 1e-9) << res.worst;
  for (int64_t i = 0; i < dx.numel(); ++i)
    ASSERT_EQ(dx.data<double>()[i], m.data<uint8_t>()[i] ? r.data<double>()[i] / 0.6 : 0.0);
}

// ---- softmax cross-entropy ----

TEST(SoftmaxXent, ValuesAndStability) {
  // Row 0: logits 0, ln 2, ln 3 -> probs 1/6, 2/6, 3/6; label 2 -> loss ln 2.
  // Row 1: huge equal logits -> uniform; label 0 -> loss ln 3.
  Tensor z =
      Tensor::from_vector<double>({2, 3}, {0.0, std::log(2.0), std::log(3.0), 1000, 1000, 1000});
  Tensor labels = Tensor::from_vector<int64_t>({2}, {2, 0});
  Tensor probs = Tensor::empty(z.shape(), DType::kF64);
  const double loss = softmax_xent_forward_cpu(z, labels, probs);
  EXPECT_NEAR(loss, 0.5 * (std::log(2.0) + std::log(3.0)), 1e-15);
  const double* p = probs.data<double>();
  EXPECT_NEAR(p[0], 1.0 / 6, 1e-15);
  EXPECT_NEAR(p[2], 0.5, 1e-15);
  EXPECT_NEAR(p[4], 1.0 / 3, 1e-15);
  // A label whose probability underflows still gives a finite loss.
  Tensor z2 = Tensor::from_vector<float>({1, 2}, {0.0f, 2000.0f});
  Tensor l2 = Tensor::from_vector<int64_t>({1}, {0});
  Tensor p2 = Tensor::empty(z2.shape(), DType::kF32);
  EXPECT_NEAR(softmax_xent_forward_cpu(z2, l2, p2), 2000.0, 1e-9);
  Tensor bad = Tensor::from_vector<int64_t>({2}, {2, 3});
  EXPECT_THROW(softmax_xent_forward_cpu(z, bad, probs), Error);
}

TEST(SoftmaxXent, MeanOfDeviceRows) {
  // The per-row losses a GPU computes: their mean; a NaN row passes (divergence is reported as such), and
  // the -1 that marks a label outside [0, K) is an error naming the row.
  const std::vector<double> rows = {0.5, 1.5, 4.0};
  EXPECT_DOUBLE_EQ(softmax_xent_mean(rows.data(), 3, 10), 2.0);
  EXPECT_EQ(softmax_xent_mean(rows.data(), 0, 10), 0.0);
  const std::vector<double> nan_row = {0.5, std::nan(""), 1.0};
  EXPECT_TRUE(std::isnan(softmax_xent_mean(nan_row.data(), 3, 10)));
  const std::vector<double> bad = {0.5, 1.0, -1.0};
  try {
    softmax_xent_mean(bad.data(), 3, 10);
    FAIL() << "a row marked -1 was averaged";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("row 2 is outside [0, 10)"), std::string::npos) << e.what();
  }
}

TEST(SoftmaxXent, Gradient) {
  Tensor z = random_tensor({4, 7}, 331, -3.0, 3.0);
  Tensor labels = Tensor::from_vector<int64_t>({4}, {0, 6, 3, 3});
  Tensor probs = Tensor::empty(z.shape(), DType::kF64), dz = Tensor::empty(z.shape(), DType::kF64);
  softmax_xent_forward_cpu(z, labels, probs);
  softmax_xent_backward_cpu(probs, labels, dz);
  auto loss = [&] {
    Tensor pp = Tensor::empty(z.shape(), DType::kF64);
    return softmax_xent_forward_cpu(z, labels, pp);
  };
  auto res = check_gradients({z}, {dz}, loss);
  EXPECT_LT(res.max_rel_error, 1e-6) << res.worst;
  EXPECT_LT(res.max_abs_error, 1e-9) << res.worst;
}

TEST(SoftmaxXent, Float32MatchesFloat64) {
  Tensor z = random_tensor({16, 1000}, 332, -10.0, 10.0);
  std::vector<int64_t> lv(16);
  for (int64_t i = 0; i < 16; ++i) lv[i] = (i * 97) % 1000;
  Tensor labels = Tensor::from_vector<int64_t>({16}, lv);
  Tensor z32 = z.to(DType::kF32);
  Tensor p64 = Tensor::empty(z.shape(), DType::kF64), p32 = Tensor::empty(z.shape(), DType::kF32);
  const double l64 = softmax_xent_forward_cpu(z32.to(DType::kF64), labels, p64);
  const double l32 = softmax_xent_forward_cpu(z32, labels, p32);
  EXPECT_NEAR(l32, l64, 1e-6 * l64);
  Tensor d64 = Tensor::empty(z.shape(), DType::kF64), d32 = Tensor::empty(z.shape(), DType::kF32);
  softmax_xent_backward_cpu(p64, labels, d64);
  softmax_xent_backward_cpu(p32, labels, d32);
  for (int64_t i = 0; i < z.numel(); ++i)
    ASSERT_NEAR(d32.data<float>()[i], d64.data<double>()[i], 1e-7);
}

// ---- SGD ----

// v' = 0.5*4 - 0.25*0.5*1 - 0.5*2 = 0.875, w' = 1.875: every step exact in binary.
TEST(Sgd, ExactSmallExample) {
  Tensor w = Tensor::from_vector<float>({3}, {1.0f, -2.0f, 0.0f});
  Tensor g = Tensor::from_vector<float>({3}, {2.0f, 0.5f, -1.0f});
  Tensor v = Tensor::from_vector<float>({3}, {4.0f, 0.0f, 1.0f});
  sgd_update_cpu(w, g, v, /*lr=*/0.5, /*momentum=*/0.5, /*weight_decay=*/0.25);
  // Element 1: v = 0 - 0.125*(-2) - 0.25 = 0;   element 2: v = 0.5 - 0 + 0.5 = 1.
  EXPECT_EQ(v.data<float>()[0], 0.875f);
  EXPECT_EQ(w.data<float>()[0], 1.875f);
  EXPECT_EQ(v.data<float>()[1], 0.0f);
  EXPECT_EQ(w.data<float>()[1], -2.0f);
  EXPECT_EQ(v.data<float>()[2], 1.0f);
  EXPECT_EQ(w.data<float>()[2], 1.0f);
}

// The paper's values over two steps, against the rule written out in double.
TEST(Sgd, PaperRuleTwoSteps) {
  Tensor w = random_tensor({1000}, 341, -0.1, 0.1, DType::kF32);
  Tensor g = random_tensor({1000}, 342, -1.0, 1.0, DType::kF32);
  Tensor v = Tensor::zeros({1000}, DType::kF32);
  std::vector<double> wd(1000), vd(1000, 0.0);
  for (int i = 0; i < 1000; ++i) wd[i] = w.data<float>()[i];
  for (int step = 0; step < 2; ++step) {
    sgd_update_cpu(w, g, v, 0.01, 0.9, 0.0005);
    for (int i = 0; i < 1000; ++i) {
      vd[i] = 0.9 * vd[i] - 0.0005 * 0.01 * wd[i] - 0.01 * g.data<float>()[i];
      wd[i] += vd[i];
    }
  }
  for (int i = 0; i < 1000; ++i) {
    ASSERT_NEAR(v.data<float>()[i], vd[i], 1e-8);
    ASSERT_NEAR(w.data<float>()[i], wd[i], 1e-8);
  }
}

}  // namespace
}  // namespace alexnet
