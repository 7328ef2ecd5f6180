// LRN across channels and within a channel: forward against a direct transcription of the paper's
// formula, finite-difference gradients in float64 (odd and even n, n wider than C, every beta
// path), and float32 against float64.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "model/layers.h"
#include "tests/common/gradcheck.h"

namespace alexnet {
namespace {

using testing::check_gradients;
using testing::dot;
using testing::random_tensor;

// b[i] = a[i] / (k + alpha * sum_{window, clipped} a[j]^2)^beta, summed the slow, obvious way.
Tensor lrn_reference(const Tensor& x, const LrnParams& p, bool within) {
  const int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3), h = p.n / 2;
  Tensor xd = x.to(DType::kF64);
  Tensor y = Tensor::empty(x.shape(), DType::kF64);
  const double* a = xd.data<double>();
  double* b = y.data<double>();
  auto at = [&](int64_t n, int64_t c, int64_t r, int64_t q) {
    return ((n * C + c) * H + r) * W + q;
  };
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t r = 0; r < H; ++r)
        for (int64_t q = 0; q < W; ++q) {
          double sum = 0;
          if (within) {
            for (int64_t rr = std::max<int64_t>(0, r - h); rr <= std::min(H - 1, r + h); ++rr)
              for (int64_t qq = std::max<int64_t>(0, q - h); qq <= std::min(W - 1, q + h); ++qq)
                sum += a[at(n, c, rr, qq)] * a[at(n, c, rr, qq)];
          } else {
            for (int64_t j = std::max<int64_t>(0, c - h); j <= std::min(C - 1, c + h); ++j)
              sum += a[at(n, j, r, q)] * a[at(n, j, r, q)];
          }
          b[at(n, c, r, q)] = a[at(n, c, r, q)] / std::pow(p.k + p.alpha * sum, p.beta);
        }
  return y;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  Tensor ad = a.to(DType::kF64), bd = b.to(DType::kF64);
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i)
    m = std::max(m, std::fabs(ad.data<double>()[i] - bd.data<double>()[i]));
  return m;
}

double max_abs(const Tensor& a) {
  Tensor ad = a.to(DType::kF64);
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::fabs(ad.data<double>()[i]));
  return m;
}

LrnParams params(int n, double k, double alpha, double beta) {
  LrnParams p;
  p.n = n;
  p.k = k;
  p.alpha = alpha;
  p.beta = beta;
  return p;
}

struct Case {
  bool within;
  Shape shape;
  LrnParams p;
};

void forward(const Case& c, const Tensor& x, Tensor& y, Tensor& scale) {
  if (c.within) {
    lrn2d_forward_cpu(x, y, scale, c.p);
  } else {
    lrn_forward_cpu(x, y, scale, c.p);
  }
}

void backward(const Case& c, const Tensor& x, const Tensor& y, const Tensor& scale,
              const Tensor& dy, Tensor& dx) {
  if (c.within) {
    lrn2d_backward_cpu(x, y, scale, dy, dx, c.p);
  } else {
    lrn_backward_cpu(x, y, scale, dy, dx, c.p);
  }
}

std::string describe(const Case& c) {
  return str_cat(c.within ? "lrn2d" : "lrn", " ", shape_str(c.shape), " n=", c.p.n, " k=", c.p.k,
                 " alpha=", c.p.alpha, " beta=", c.p.beta);
}

// Forward matches the formula; backward matches central differences of sum(y * r).
void check_case(const Case& c, uint64_t seed) {
  SCOPED_TRACE(describe(c));
  Tensor x = random_tensor(c.shape, seed, -2.0, 2.0);
  Tensor r = random_tensor(c.shape, seed + 1);
  Tensor y = Tensor::empty(c.shape, DType::kF64), scale = Tensor::empty(c.shape, DType::kF64);
  forward(c, x, y, scale);
  EXPECT_LT(max_abs_diff(y, lrn_reference(x, c.p, c.within)), 1e-13);
  Tensor dx = Tensor::empty(c.shape, DType::kF64);
  backward(c, x, y, scale, r, dx);
  auto loss = [&] {
    Tensor yy = Tensor::empty(c.shape, DType::kF64), ss = Tensor::empty(c.shape, DType::kF64);
    forward(c, x, yy, ss);
    return dot(yy, r);
  };
  auto res = check_gradients({x}, {dx}, loss);
  EXPECT_LT(res.max_rel_error, 1e-5) << res.worst;
  EXPECT_LT(res.max_abs_error, 1e-7) << res.worst;
}

// alpha is large so the cross terms of the gradient matter as much as the diagonal.
TEST(LrnAcross, GradientsOddN) { check_case({false, {2, 7, 3, 4}, params(5, 1.0, 0.3, 0.75)}, 11); }
TEST(LrnAcross, GradientsEvenN2) {
  check_case({false, {2, 6, 3, 3}, params(2, 1.0, 0.3, 0.75)}, 12);
}
TEST(LrnAcross, GradientsEvenN4) {
  check_case({false, {2, 6, 2, 3}, params(4, 2.0, 0.5, 0.75)}, 13);
}
TEST(LrnAcross, GradientsNWiderThanChannels) {
  check_case({false, {2, 3, 3, 3}, params(9, 1.0, 0.3, 0.75)}, 14);
  check_case({false, {1, 4, 2, 3}, params(4, 1.0, 0.3, 0.75)}, 15);
}
TEST(LrnAcross, GradientsEveryBetaPath) {
  for (double beta : {0.5, 1.0, 0.6, 2.0})
    check_case({false, {2, 5, 2, 3}, params(3, 1.5, 0.4, beta)}, 16);
}
TEST(LrnAcross, GradientsNOne) { check_case({false, {2, 4, 2, 2}, params(1, 1.0, 0.5, 0.75)}, 17); }

TEST(Lrn2d, GradientsOddN) { check_case({true, {2, 2, 6, 7}, params(5, 1.0, 0.2, 0.75)}, 21); }
TEST(Lrn2d, GradientsEvenN) {
  check_case({true, {2, 2, 5, 6}, params(2, 1.0, 0.2, 0.75)}, 22);
  check_case({true, {1, 2, 6, 5}, params(4, 2.0, 0.3, 0.75)}, 23);
}
TEST(Lrn2d, GradientsWindowWiderThanPlane) {
  check_case({true, {1, 2, 3, 4}, params(11, 1.0, 0.2, 0.75)}, 24);
}
TEST(Lrn2d, GradientsEveryBetaPath) {
  for (double beta : {0.5, 1.0, 0.6})
    check_case({true, {1, 2, 4, 5}, params(3, 1.5, 0.3, beta)}, 25);
}

// Even n = 2 sums channels c-1..c+1 (three channels), not two.
TEST(LrnAcross, EvenNSumsThreeChannels) {
  Tensor x = Tensor::from_vector<double>({1, 3, 1, 1}, {1.0, 2.0, 3.0});
  Tensor y = Tensor::empty(x.shape(), DType::kF64), s = Tensor::empty(x.shape(), DType::kF64);
  lrn_forward_cpu(x, y, s, params(2, 1.0, 0.1, 1.0));
  EXPECT_DOUBLE_EQ(s.data<double>()[0], 1.0 + 0.1 * (1 + 4));
  EXPECT_DOUBLE_EQ(s.data<double>()[1], 1.0 + 0.1 * (1 + 4 + 9));
  EXPECT_DOUBLE_EQ(s.data<double>()[2], 1.0 + 0.1 * (4 + 9));
  EXPECT_DOUBLE_EQ(y.data<double>()[1], 2.0 / 2.4);
}

// Paper values, 2D window: a corner sees 2x2 values for n = 2 (rows/cols -1..+1, clipped).
TEST(Lrn2d, EvenNWindowIsThreeWide) {
  Tensor x = Tensor::empty({1, 1, 4, 4}, DType::kF64);
  x.fill(1.0);
  Tensor y = Tensor::empty(x.shape(), DType::kF64), s = Tensor::empty(x.shape(), DType::kF64);
  lrn2d_forward_cpu(x, y, s, params(2, 2.0, 1e-4, 0.75));
  EXPECT_DOUBLE_EQ(s.data<double>()[0], 2.0 + 1e-4 * 4);
  EXPECT_DOUBLE_EQ(s.data<double>()[1], 2.0 + 1e-4 * 6);
  EXPECT_DOUBLE_EQ(s.data<double>()[5], 2.0 + 1e-4 * 9);
  EXPECT_NEAR(y.data<double>()[5], std::pow(2.0009, -0.75), 1e-15);
}

// float32 (the model's type) agrees with float64 on shapes that exercise several spatial chunks
// and the parallel path; the paper's parameters and a general beta.
void check_f32(bool within, const Shape& shape, const LrnParams& p) {
  SCOPED_TRACE(str_cat(within ? "lrn2d " : "lrn ", shape_str(shape), " n=", p.n, " beta=", p.beta));
  Case c{within, shape, p};
  Tensor x64 = random_tensor(shape, 31, -3.0, 3.0);
  Tensor dy64 = random_tensor(shape, 32);
  Tensor x32 = x64.to(DType::kF32), dy32 = dy64.to(DType::kF32);
  Tensor y64 = Tensor::empty(shape, DType::kF64), s64 = Tensor::empty(shape, DType::kF64);
  Tensor y32 = Tensor::empty(shape, DType::kF32), s32 = Tensor::empty(shape, DType::kF32);
  forward(c, x64, y64, s64);
  forward(c, x32, y32, s32);
  EXPECT_LT(max_abs_diff(y32, y64), 2e-6 * max_abs(y64));
  EXPECT_LT(max_abs_diff(s32, s64), 2e-6 * max_abs(s64));
  EXPECT_LT(max_abs_diff(y64, lrn_reference(x64, p, within)), 1e-12);
  Tensor dx64 = Tensor::empty(shape, DType::kF64), dx32 = Tensor::empty(shape, DType::kF32);
  backward(c, x64, y64, s64, dy64, dx64);
  backward(c, x32, y32, s32, dy32, dx32);
  EXPECT_LT(max_abs_diff(dx32, dx64), 2e-6 * max_abs(dx64));
}

TEST(LrnAcross, Float32MatchesFloat64) {
  check_f32(false, {3, 16, 40, 30}, params(5, 2.0, 1e-4, 0.75));
  check_f32(false, {2, 12, 9, 11}, params(4, 1.0, 0.05, 0.75));
  check_f32(false, {2, 12, 9, 11}, params(3, 1.0, 0.05, 0.6));
  check_f32(false, {2, 5, 7, 7}, params(2, 1.0, 0.05, 0.5));
}

TEST(Lrn2d, Float32MatchesFloat64) {
  check_f32(true, {2, 16, 27, 27}, params(5, 2.0, 1e-4, 0.75));
  check_f32(true, {2, 3, 13, 9}, params(4, 1.0, 0.02, 0.75));
  check_f32(true, {2, 3, 13, 9}, params(3, 1.0, 0.02, 0.6));
}

}  // namespace
}  // namespace alexnet
