// Batch norm, 2D ([N, C, H, W]) and 1D ([N, C]): finite-difference gradients for x, gamma and beta
// in training mode, the running-statistic update and eval mode against hand-computed values, and
// float32 against float64.
#include <gtest/gtest.h>

#include <cmath>

#include "model/layers.h"
#include "tests/common/gradcheck.h"

namespace alexnet {
namespace {

using testing::check_gradients;
using testing::dot;
using testing::random_tensor;

// All the tensors of one batch-norm layer.
struct Bn {
  Tensor gamma, beta, running_mean, running_var, saved_mean, saved_invstd;

  Bn(int64_t C, DType dt, uint64_t seed) {
    gamma = random_tensor({C}, seed, 0.5, 1.5, dt);
    beta = random_tensor({C}, seed + 1, -0.5, 0.5, dt);
    running_mean = Tensor::zeros({C}, dt);
    running_var = Tensor::empty({C}, dt);
    running_var.fill(1.0);
    saved_mean = Tensor::empty({C}, dt);
    saved_invstd = Tensor::empty({C}, dt);
  }

  Tensor forward(const Tensor& x, bool training, const BatchNormParams& p = {}) {
    Tensor y = Tensor::empty(x.shape(), x.dtype());
    batchnorm_forward_cpu(x, gamma, beta, running_mean, running_var, training, y, saved_mean,
                          saved_invstd, p);
    return y;
  }
};

double max_abs_diff(const Tensor& a, const Tensor& b) {
  Tensor ad = a.to(DType::kF64), bd = b.to(DType::kF64);
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i)
    m = std::max(m, std::fabs(ad.data<double>()[i] - bd.data<double>()[i]));
  return m;
}

void check_gradients_for(const Shape& shape, uint64_t seed) {
  SCOPED_TRACE(shape_str(shape));
  const int64_t C = shape[1];
  Tensor x = random_tensor(shape, seed, -2.0, 3.0);
  Tensor r = random_tensor(shape, seed + 7);
  Bn bn(C, DType::kF64, seed + 3);
  Tensor y = bn.forward(x, true);
  Tensor dx = Tensor::empty(shape, DType::kF64);
  Tensor dgamma = Tensor::empty({C}, DType::kF64), dbeta = Tensor::empty({C}, DType::kF64);
  batchnorm_backward_cpu(x, bn.gamma, bn.saved_mean, bn.saved_invstd, r, dx, dgamma, dbeta);
  auto loss = [&] { return dot(bn.forward(x, true), r); };
  auto res = check_gradients({x, bn.gamma, bn.beta}, {dx, dgamma, dbeta}, loss);
  EXPECT_LT(res.max_rel_error, 1e-5) << res.worst;
  EXPECT_LT(res.max_abs_error, 1e-7) << res.worst;
}

TEST(BatchNorm, Gradients2d) { check_gradients_for({3, 2, 3, 4}, 101); }
TEST(BatchNorm, Gradients1d) { check_gradients_for({5, 7}, 102); }
TEST(BatchNorm, Gradients2dBatchOne) { check_gradients_for({1, 3, 2, 3}, 103); }

// Feature 0: 1, 2, 3, 4 -> mean 2.5, biased var 1.25, unbiased 5/3.
// Feature 1: 0, 0, 0, 8 -> mean 2, biased var 12, unbiased 16.
TEST(BatchNorm, TrainingStatistics1d) {
  Tensor x = Tensor::from_vector<double>({4, 2}, {1, 0, 2, 0, 3, 0, 4, 8});
  Bn bn(2, DType::kF64, 1);
  bn.gamma = Tensor::from_vector<double>({2}, {2.0, 0.5});
  bn.beta = Tensor::from_vector<double>({2}, {1.0, -1.0});
  bn.running_mean = Tensor::from_vector<double>({2}, {1.0, -1.0});
  bn.running_var = Tensor::from_vector<double>({2}, {2.0, 1.0});
  Tensor y = bn.forward(x, true);
  const double* m = bn.running_mean.data<double>();
  const double* v = bn.running_var.data<double>();
  EXPECT_DOUBLE_EQ(m[0], 0.9 * 1.0 + 0.1 * 2.5);
  EXPECT_DOUBLE_EQ(m[1], 0.9 * -1.0 + 0.1 * 2.0);
  EXPECT_DOUBLE_EQ(v[0], 0.9 * 2.0 + 0.1 * 5.0 / 3.0);
  EXPECT_DOUBLE_EQ(v[1], 0.9 * 1.0 + 0.1 * 16.0);
  EXPECT_DOUBLE_EQ(bn.saved_mean.data<double>()[0], 2.5);
  EXPECT_DOUBLE_EQ(bn.saved_invstd.data<double>()[1], 1.0 / std::sqrt(12.0 + 1e-5));
  const double* yy = y.data<double>();
  EXPECT_NEAR(yy[0], 2.0 * (1 - 2.5) / std::sqrt(1.25 + 1e-5) + 1.0, 1e-14);
  EXPECT_NEAR(yy[6], 2.0 * (4 - 2.5) / std::sqrt(1.25 + 1e-5) + 1.0, 1e-14);
  EXPECT_NEAR(yy[7], 0.5 * (8 - 2) / std::sqrt(12 + 1e-5) - 1.0, 1e-14);
}

// Channel 0 holds 1, 3 (n=0) and 5, 7 (n=1): mean 4, biased var 5, unbiased 20/3.
TEST(BatchNorm, TrainingStatistics2d) {
  Tensor x = Tensor::from_vector<double>({2, 2, 1, 2}, {1, 3, 10, 10, 5, 7, 10, 12});
  Bn bn(2, DType::kF64, 1);
  bn.gamma.fill(1.0);
  bn.beta.fill(0.0);
  Tensor y = bn.forward(x, true);
  EXPECT_DOUBLE_EQ(bn.running_mean.data<double>()[0], 0.4);
  EXPECT_DOUBLE_EQ(bn.running_var.data<double>()[0], 0.9 + 0.1 * 20.0 / 3.0);
  // Channel 1: 10, 10, 10, 12: mean 10.5, biased var 0.75, unbiased 1.
  EXPECT_DOUBLE_EQ(bn.running_mean.data<double>()[1], 1.05);
  EXPECT_DOUBLE_EQ(bn.running_var.data<double>()[1], 1.0);
  EXPECT_NEAR(y.data<double>()[5], (7 - 4) / std::sqrt(5 + 1e-5), 1e-14);
  EXPECT_NEAR(y.data<double>()[7], 1.5 / std::sqrt(0.75 + 1e-5), 1e-14);
  // A second batch moves the running values on from the first.
  bn.forward(x, true);
  EXPECT_DOUBLE_EQ(bn.running_mean.data<double>()[0], 0.9 * 0.4 + 0.4);
}

TEST(BatchNorm, EvalUsesRunningStatistics) {
  Tensor x = Tensor::from_vector<double>({2, 2, 1, 1}, {1, 2, 3, 4});
  Bn bn(2, DType::kF64, 1);
  bn.gamma = Tensor::from_vector<double>({2}, {2.0, 1.0});
  bn.beta = Tensor::from_vector<double>({2}, {0.5, 0.0});
  bn.running_mean = Tensor::from_vector<double>({2}, {1.0, -1.0});
  bn.running_var = Tensor::from_vector<double>({2}, {4.0, 0.25});
  bn.saved_mean.fill(123.0);
  Tensor y = bn.forward(x, false);
  const double* yy = y.data<double>();
  EXPECT_NEAR(yy[0], 2.0 * 0 / std::sqrt(4 + 1e-5) + 0.5, 1e-15);
  EXPECT_NEAR(yy[1], (2.0 + 1.0) / std::sqrt(0.25 + 1e-5), 1e-14);
  EXPECT_NEAR(yy[2], 2.0 * 2.0 / std::sqrt(4 + 1e-5) + 0.5, 1e-14);
  EXPECT_NEAR(yy[3], (4.0 + 1.0) / std::sqrt(0.25 + 1e-5), 1e-14);
  // Eval mode changes neither the running statistics nor the saved ones.
  EXPECT_EQ(bn.running_mean.data<double>()[0], 1.0);
  EXPECT_EQ(bn.running_var.data<double>()[1], 0.25);
  EXPECT_EQ(bn.saved_mean.data<double>()[0], 123.0);
  // 1D eval: the same numbers through [N, C].
  Tensor y1 = bn.forward(x.view({2, 2}), false);
  EXPECT_LT(max_abs_diff(y1.view({2, 2, 1, 1}), y), 1e-15);
}

void check_f32(const Shape& shape, double offset) {
  SCOPED_TRACE(shape_str(shape));
  const int64_t C = shape[1];
  // An offset far from zero checks that float32 keeps its digits when the mean is large.
  Tensor x64 = random_tensor(shape, 201, offset - 1.0, offset + 2.0);
  Tensor dy64 = random_tensor(shape, 202);
  Bn b64(C, DType::kF64, 203), b32(C, DType::kF32, 203);
  b32.gamma = b64.gamma.to(DType::kF32);
  b32.beta = b64.beta.to(DType::kF32);
  // The float64 side sees the rounded input, so only the arithmetic differs.
  Tensor x32 = x64.to(DType::kF32);
  Tensor y64 = b64.forward(x32.to(DType::kF64), true);
  Tensor y32 = b32.forward(x32, true);
  EXPECT_LT(max_abs_diff(y32, y64), 2e-5);
  EXPECT_LT(max_abs_diff(b32.running_mean, b64.running_mean), 1e-6 * (1 + std::fabs(offset)));
  EXPECT_LT(max_abs_diff(b32.running_var, b64.running_var), 1e-6);
  Tensor dx64 = Tensor::empty(shape, DType::kF64), dx32 = Tensor::empty(shape, DType::kF32);
  Tensor dg64 = Tensor::empty({C}, DType::kF64), dg32 = Tensor::empty({C}, DType::kF32);
  Tensor db64 = Tensor::empty({C}, DType::kF64), db32 = Tensor::empty({C}, DType::kF32);
  batchnorm_backward_cpu(x32.to(DType::kF64), b64.gamma, b64.saved_mean, b64.saved_invstd, dy64,
                         dx64, dg64, db64);
  batchnorm_backward_cpu(x32, b32.gamma, b32.saved_mean, b32.saved_invstd, dy64.to(DType::kF32),
                         dx32, dg32, db32);
  EXPECT_LT(max_abs_diff(dx32, dx64), 1e-5);
  // saved_mean is stored as float32: its rounding (|mean| * 6e-8) shifts every xhat of the channel
  // alike, so dgamma's error grows with the offset.
  const double dg_scale = max_abs_diff(dg64, Tensor::zeros({C}, DType::kF64));
  EXPECT_LT(max_abs_diff(dg32, dg64), 2e-7 * (1 + std::fabs(offset)) * dg_scale);
  EXPECT_LT(max_abs_diff(db32, db64), 1e-5);
}

TEST(BatchNorm, Float32MatchesFloat64) {
  check_f32({8, 6, 13, 13}, 0.0);
  check_f32({8, 6, 13, 13}, 100.0);
  check_f32({16, 300}, 0.0);  // crosses a feature block
  check_f32({16, 300}, 100.0);
}

}  // namespace
}  // namespace alexnet
