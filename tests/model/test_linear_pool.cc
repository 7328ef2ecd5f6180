// Linear and max-pool tests: float64 gradient checks, float32 oneDNN against the float64
// reference, and max-pool tie handling (first maximum in row-major order) on hand-built inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.h"
#include "model/layers.h"
#include "tests/common/gradcheck.h"

namespace alexnet {
namespace {

using testing::check_gradients;
using testing::dot;
using testing::random_tensor;

double rel_error(const Tensor& a, const Tensor& b) {
  Tensor a64 = a.dtype() == DType::kF64 ? a : a.to(DType::kF64);
  Tensor b64 = b.dtype() == DType::kF64 ? b : b.to(DType::kF64);
  EXPECT_EQ(a64.shape(), b64.shape());
  double num = 0, den = 0;
  for (int64_t i = 0; i < a64.numel(); ++i) {
    double d = a64.data<double>()[i] - b64.data<double>()[i];
    num += d * d;
    den += b64.data<double>()[i] * b64.data<double>()[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// ---- linear ----

TEST(LinearGradCheck, Float64) {
  Tensor x = random_tensor({3, 7}, 1);
  Tensor w = random_tensor({5, 7}, 2);
  Tensor b = random_tensor({5}, 3);
  Tensor r = random_tensor({3, 5}, 4);
  Tensor y = Tensor::empty({3, 5}, DType::kF64);
  auto loss = [&] {
    linear_forward_cpu(x, w, b, y);
    return dot(y, r);
  };
  Tensor dx = Tensor::empty(x.shape(), DType::kF64);
  Tensor dw = Tensor::empty(w.shape(), DType::kF64);
  Tensor db = Tensor::empty(b.shape(), DType::kF64);
  linear_backward_cpu(x, w, r, &dx, dw, db);
  auto res = check_gradients({x, w, b}, {dx, dw, db}, loss);
  EXPECT_LT(res.max_rel_error, 1e-5) << res.worst;
}

TEST(Linear, HandComputed) {
  Tensor x = Tensor::from_vector<double>({1, 2}, {1, 2});
  Tensor w = Tensor::from_vector<double>({2, 2}, {1, 1, -3, 1});
  Tensor b = Tensor::from_vector<double>({2}, {0.5, 0});
  for (DType dt : {DType::kF64, DType::kF32}) {
    for (bool relu : {false, true}) {
      Tensor y = Tensor::empty({1, 2}, dt);
      linear_forward_cpu(x.to(dt), w.to(dt), b.to(dt), y, relu);
      Tensor y64 = dt == DType::kF64 ? y : y.to(DType::kF64);
      EXPECT_DOUBLE_EQ(y64.data<double>()[0], 3.5);
      EXPECT_DOUBLE_EQ(y64.data<double>()[1], relu ? 0.0 : -1.0);
    }
  }
}

void compare_linear(int64_t n, int64_t in, int64_t out, bool post_relu, bool with_dx) {
  Tensor x = random_tensor({n, in}, 11, -1, 1, DType::kF32);
  Tensor w = random_tensor({out, in}, 12, -0.1, 0.1, DType::kF32);
  Tensor b = random_tensor({out}, 13, -0.5, 0.5, DType::kF32);
  Tensor dy = random_tensor({n, out}, 14, -1, 1, DType::kF32);
  Tensor y = Tensor::empty({n, out}, DType::kF32);
  Tensor dx = Tensor::empty({n, in}, DType::kF32);
  Tensor dw = Tensor::empty({out, in}, DType::kF32);
  Tensor db = Tensor::empty({out}, DType::kF32);
  linear_forward_cpu(x, w, b, y, post_relu);
  linear_backward_cpu(x, w, dy, with_dx ? &dx : nullptr, dw, db);

  Tensor y64 = Tensor::empty({n, out}, DType::kF64);
  Tensor dx64 = Tensor::empty({n, in}, DType::kF64);
  Tensor dw64 = Tensor::empty({out, in}, DType::kF64);
  Tensor db64 = Tensor::empty({out}, DType::kF64);
  Tensor x64 = x.to(DType::kF64), w64 = w.to(DType::kF64);
  linear_forward_cpu(x64, w64, b.to(DType::kF64), y64, post_relu);
  linear_backward_cpu(x64, w64, dy.to(DType::kF64), &dx64, dw64, db64);
  EXPECT_LT(rel_error(y, y64), 1e-5);
  EXPECT_LT(rel_error(dw, dw64), 1e-5);
  EXPECT_LT(rel_error(db, db64), 1e-5);
  if (with_dx) {
    EXPECT_LT(rel_error(dx, dx64), 1e-5);
  }
}

TEST(LinearDnnl, MatchesReference) { compare_linear(8, 300, 70, false, true); }
TEST(LinearDnnl, PostReluNoInputGradient) { compare_linear(5, 129, 33, true, false); }

TEST(Linear, ShapeMismatchIsInternalError) {
  Tensor x = Tensor::zeros({2, 4});
  Tensor w = Tensor::zeros({3, 5});
  Tensor b = Tensor::zeros({3});
  Tensor y = Tensor::empty({2, 3});
  EXPECT_THROW(linear_forward_cpu(x, w, b, y), InternalError);
}

// ---- max pooling ----

// Distinct values 0.01 apart (more than the finite-difference step), in a scrambled order.
Tensor distinct_tensor(const Shape& shape) {
  Tensor t = Tensor::empty(shape, DType::kF64);
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) t.data<double>()[i] = 0.01 * static_cast<double>((i * 37) % n);
  return t;
}

TEST(MaxPoolGradCheck, OverlappingWindows) {
  const PoolParams p{3, 2};
  Tensor x = distinct_tensor({2, 3, 7, 9});  // 7 is coprime with 37
  Tensor y = Tensor::empty({2, 3, 3, 4}, DType::kF64);
  Tensor arg = Tensor::empty({2, 3, 3, 4}, DType::kI32);
  Tensor r = random_tensor({2, 3, 3, 4}, 5);
  auto loss = [&] {
    maxpool_forward_cpu(x, y, arg, p);
    return dot(y, r);
  };
  loss();
  Tensor dx = Tensor::empty(x.shape(), DType::kF64);
  maxpool_backward_cpu(r, arg, dx);
  auto res = check_gradients({x}, {dx}, loss);
  EXPECT_LT(res.max_rel_error, 1e-5) << res.worst;
}

TEST(MaxPoolGradCheck, NonOverlapping) {
  const PoolParams p{2, 2};
  Tensor x = distinct_tensor({1, 2, 5, 6});
  Tensor y = Tensor::empty({1, 2, 2, 3}, DType::kF64);
  Tensor arg = Tensor::empty({1, 2, 2, 3}, DType::kI32);
  Tensor r = random_tensor({1, 2, 2, 3}, 6);
  auto loss = [&] {
    maxpool_forward_cpu(x, y, arg, p);
    return dot(y, r);
  };
  loss();
  Tensor dx = Tensor::empty(x.shape(), DType::kF64);
  maxpool_backward_cpu(r, arg, dx);
  auto res = check_gradients({x}, {dx}, loss);
  EXPECT_LT(res.max_rel_error, 1e-5) << res.worst;
}

// 5x5 plane, windows 3/2 at (0,0), (0,2), (2,0), (2,2).
// Window (0,0) holds 2 at (0,1), (0,2), (1,2) and (2,0): the first in row-major order is (0,1)
// (column-major order would give (2,0)). The 9 at (2,4) is the maximum of two windows.
TEST(MaxPool, TiesGoToFirstMaxAndSharedArgmaxAccumulates) {
  const std::vector<double> plane = {1, 2, 2, 2, 0,  //
                                     0, 0, 2, 0, 0,  //
                                     2, 0, 2, 2, 9,  //
                                     0, 0, 0, 0, 0,  //
                                     0, 0, 0, 0, 0};
  for (DType dt : {DType::kF64, DType::kF32}) {
    Tensor x = Tensor::from_vector<double>({1, 1, 5, 5}, plane).to(dt);
    Tensor y = Tensor::empty({1, 1, 2, 2}, dt);
    Tensor arg = Tensor::empty({1, 1, 2, 2}, DType::kI32);
    maxpool_forward_cpu(x, y, arg, {3, 2});
    const std::vector<int32_t> want_arg = {1, 14, 10, 14};
    const std::vector<double> want_y = {2, 9, 2, 9};
    Tensor y64 = y.to(DType::kF64);
    for (int i = 0; i < 4; ++i) {
      EXPECT_EQ(arg.data<int32_t>()[i], want_arg[i]) << dtype_name(dt) << " output " << i;
      EXPECT_EQ(y64.data<double>()[i], want_y[i]) << dtype_name(dt) << " output " << i;
    }
    Tensor dy = Tensor::from_vector<double>({1, 1, 2, 2}, {1, 2, 3, 4}).to(dt);
    Tensor dx = Tensor::empty({1, 1, 5, 5}, dt);
    dx.fill(7);  // overwritten, not accumulated into
    maxpool_backward_cpu(dy, arg, dx);
    Tensor dx64 = dx.to(DType::kF64);
    for (int i = 0; i < 25; ++i) {
      double want = i == 1 ? 1 : i == 10 ? 3 : i == 14 ? 6 : 0;
      EXPECT_EQ(dx64.data<double>()[i], want) << dtype_name(dt) << " element " << i;
    }
  }
}

// A constant plane: every window's argmax is its top-left corner.
TEST(MaxPool, ConstantPlaneArgmaxIsWindowCorner) {
  Tensor x = Tensor::empty({2, 1, 7, 7}, DType::kF32);
  x.fill(0.5);
  Tensor y = Tensor::empty({2, 1, 3, 3}, DType::kF32);
  Tensor arg = Tensor::empty({2, 1, 3, 3}, DType::kI32);
  maxpool_forward_cpu(x, y, arg, {3, 2});
  for (int n = 0; n < 2; ++n)
    for (int oh = 0; oh < 3; ++oh)
      for (int ow = 0; ow < 3; ++ow) {
        EXPECT_EQ(arg.data<int32_t>()[n * 9 + oh * 3 + ow], 2 * oh * 7 + 2 * ow);
        EXPECT_EQ(y.data<float>()[n * 9 + oh * 3 + ow], 0.5f);
      }
}

// float32 and float64 pick the same maxima on the network's first pooling shape (odd sizes).
TEST(MaxPool, Float32MatchesFloat64) {
  Tensor x64 = random_tensor({2, 5, 55, 55}, 31);
  Tensor x32 = x64.to(DType::kF32);
  Tensor x64r = x32.to(DType::kF64);
  Tensor y32 = Tensor::empty({2, 5, 27, 27}, DType::kF32), y64 = Tensor::empty({2, 5, 27, 27}, DType::kF64);
  Tensor a32 = Tensor::empty({2, 5, 27, 27}, DType::kI32), a64 = Tensor::empty({2, 5, 27, 27}, DType::kI32);
  maxpool_forward_cpu(x32, y32, a32, {3, 2});
  maxpool_forward_cpu(x64r, y64, a64, {3, 2});
  for (int64_t i = 0; i < y32.numel(); ++i) {
    ASSERT_EQ(a32.data<int32_t>()[i], a64.data<int32_t>()[i]) << i;
    ASSERT_EQ(static_cast<double>(y32.data<float>()[i]), y64.data<double>()[i]) << i;
  }
  Tensor dy = random_tensor({2, 5, 27, 27}, 32, -1, 1, DType::kF32);
  Tensor dx32 = Tensor::empty(x32.shape(), DType::kF32), dx64 = Tensor::empty(x32.shape(), DType::kF64);
  maxpool_backward_cpu(dy, a32, dx32);
  maxpool_backward_cpu(dy.to(DType::kF64), a64, dx64);
  EXPECT_LT(rel_error(dx32, dx64), 1e-6);
}

TEST(MaxPool, ShapeMismatchIsInternalError) {
  Tensor x = Tensor::zeros({1, 1, 7, 7});
  Tensor y = Tensor::empty({1, 1, 2, 2});  // should be 3x3
  Tensor arg = Tensor::empty({1, 1, 2, 2}, DType::kI32);
  EXPECT_THROW(maxpool_forward_cpu(x, y, arg, {3, 2}), InternalError);
}

}  // namespace
}  // namespace alexnet
