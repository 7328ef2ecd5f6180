// Convolution tests: float64 finite-difference gradient checks (groups, stride, padding) and the
// float32 oneDNN path against the float64 reference (groups, post-ReLU, no input gradient).
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "model/layers.h"
#include "tests/common/gradcheck.h"

namespace alexnet {
namespace {

using testing::check_gradients;
using testing::dot;
using testing::random_tensor;

struct ConvCase {
  int64_t n, cin, h, w, cout, k;
  ConvParams p;
};

Shape out_shape(const ConvCase& c) {
  return {c.n, c.cout, conv_out_size(c.h, c.k, c.p.stride, c.p.pad),
          conv_out_size(c.w, c.k, c.p.stride, c.p.pad)};
}

// ||a - b|| / ||b|| with a, b of any float dtype.
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

void gradcheck_conv(const ConvCase& c) {
  Tensor x = random_tensor({c.n, c.cin, c.h, c.w}, 1);
  Tensor w = random_tensor({c.cout, c.cin / c.p.groups, c.k, c.k}, 2);
  Tensor b = random_tensor({c.cout}, 3);
  Tensor r = random_tensor(out_shape(c), 4);
  Tensor y = Tensor::empty(out_shape(c), DType::kF64);
  auto loss = [&] {
    conv2d_forward_cpu(x, w, b, y, c.p);
    return dot(y, r);
  };
  Tensor dx = Tensor::empty(x.shape(), DType::kF64);
  Tensor dw = Tensor::empty(w.shape(), DType::kF64);
  Tensor db = Tensor::empty(b.shape(), DType::kF64);
  conv2d_backward_cpu(x, w, r, &dx, dw, db, c.p);
  auto res = check_gradients({x, w, b}, {dx, dw, db}, loss);
  EXPECT_LT(res.max_rel_error, 1e-5) << res.worst;
}

TEST(Conv2dGradCheck, StridePadding) { gradcheck_conv({2, 3, 7, 8, 4, 3, {2, 1, 1}}); }
TEST(Conv2dGradCheck, GroupsTwo) { gradcheck_conv({2, 4, 6, 5, 6, 3, {1, 1, 2}}); }
TEST(Conv2dGradCheck, GroupsTwoStrideNoPad) { gradcheck_conv({1, 4, 9, 9, 4, 3, {2, 0, 2}}); }
TEST(Conv2dGradCheck, WidePadding) { gradcheck_conv({1, 2, 5, 5, 3, 5, {1, 2, 1}}); }

// A hand-computed 1x1x3x3 case pins down orientation (no kernel flip) and the bias.
TEST(Conv2d, HandComputed) {
  Tensor x = Tensor::from_vector<double>({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9});
  Tensor w = Tensor::from_vector<double>({1, 1, 2, 2}, {1, 0, 0, -1});
  Tensor b = Tensor::from_vector<double>({1}, {0.5});
  for (DType dt : {DType::kF64, DType::kF32}) {
    Tensor y = Tensor::empty({1, 1, 2, 2}, dt);
    conv2d_forward_cpu(x.to(dt), w.to(dt), b.to(dt), y, {});
    Tensor y64 = dt == DType::kF64 ? y : y.to(DType::kF64);
    for (int i = 0; i < 4; ++i) EXPECT_DOUBLE_EQ(y64.data<double>()[i], -3.5) << dtype_name(dt);
  }
}

// Runs both dtypes on the same (float32-representable) inputs and compares everything.
void compare_f32_f64(const ConvCase& c, bool post_relu, bool with_dx) {
  Tensor x = random_tensor({c.n, c.cin, c.h, c.w}, 11, -1, 1, DType::kF32);
  Tensor w = random_tensor({c.cout, c.cin / c.p.groups, c.k, c.k}, 12, -0.2, 0.2, DType::kF32);
  Tensor b = random_tensor({c.cout}, 13, -0.5, 0.5, DType::kF32);
  Tensor dy = random_tensor(out_shape(c), 14, -1, 1, DType::kF32);
  Tensor y = Tensor::empty(out_shape(c), DType::kF32);
  conv2d_forward_cpu(x, w, b, y, c.p, post_relu);
  Tensor dx = Tensor::empty(x.shape(), DType::kF32);
  Tensor dw = Tensor::empty(w.shape(), DType::kF32);
  Tensor db = Tensor::empty(b.shape(), DType::kF32);
  conv2d_backward_cpu(x, w, dy, with_dx ? &dx : nullptr, dw, db, c.p);

  Tensor x64 = x.to(DType::kF64), w64 = w.to(DType::kF64), b64 = b.to(DType::kF64),
         dy64 = dy.to(DType::kF64);
  Tensor y64 = Tensor::empty(out_shape(c), DType::kF64);
  conv2d_forward_cpu(x64, w64, b64, y64, c.p, post_relu);
  Tensor dx64 = Tensor::empty(x.shape(), DType::kF64);
  Tensor dw64 = Tensor::empty(w.shape(), DType::kF64);
  Tensor db64 = Tensor::empty(b.shape(), DType::kF64);
  conv2d_backward_cpu(x64, w64, dy64, &dx64, dw64, db64, c.p);

  EXPECT_LT(rel_error(y, y64), 1e-5);
  EXPECT_LT(rel_error(dw, dw64), 1e-5);
  EXPECT_LT(rel_error(db, db64), 1e-5);
  if (with_dx) {
    EXPECT_LT(rel_error(dx, dx64), 1e-5);
  }
  if (post_relu) {
    int64_t zeros = 0;
    for (int64_t i = 0; i < y.numel(); ++i) {
      ASSERT_GE(y.data<float>()[i], 0.0f);
      zeros += y.data<float>()[i] == 0.0f;
    }
    EXPECT_GT(zeros, 0);  // the ReLU did something
  }
}

TEST(Conv2dDnnl, FirstLayerLike) { compare_f32_f64({2, 3, 35, 35, 16, 11, {4, 0, 1}}, true, false); }
TEST(Conv2dDnnl, GroupsTwoBlockedChannels) {
  compare_f32_f64({3, 64, 13, 13, 64, 5, {1, 2, 2}}, false, true);
}
TEST(Conv2dDnnl, GroupsTwoPostRelu) { compare_f32_f64({2, 32, 9, 9, 48, 3, {1, 1, 2}}, true, true); }
TEST(Conv2dDnnl, OddChannelsGroups) { compare_f32_f64({2, 6, 8, 7, 10, 3, {2, 1, 2}}, false, true); }
TEST(Conv2dDnnl, NoInputGradient) { compare_f32_f64({2, 16, 11, 11, 32, 3, {1, 1, 1}}, false, false); }

// A second call with the same shapes reuses the cached primitive and must see the new weights.
TEST(Conv2dDnnl, CachedPrimitiveSeesNewValues) {
  ConvCase c{1, 16, 6, 6, 16, 3, {1, 1, 1}};
  Tensor x = random_tensor({1, 16, 6, 6}, 21, -1, 1, DType::kF32);
  Tensor w = random_tensor({16, 16, 3, 3}, 22, -1, 1, DType::kF32);
  Tensor b = Tensor::zeros({16}, DType::kF32);
  Tensor y1 = Tensor::empty(out_shape(c), DType::kF32);
  Tensor y2 = Tensor::empty(out_shape(c), DType::kF32);
  conv2d_forward_cpu(x, w, b, y1, c.p);
  for (int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] *= 2;
  conv2d_forward_cpu(x, w, b, y2, c.p);
  for (int64_t i = 0; i < y1.numel(); ++i)
    ASSERT_NEAR(y2.data<float>()[i], 2 * y1.data<float>()[i], 1e-4);
}

TEST(Conv2d, ShapeMismatchIsInternalError) {
  Tensor x = Tensor::zeros({1, 4, 5, 5});
  Tensor w = Tensor::zeros({4, 3, 3, 3});  // Cin/groups should be 4
  Tensor b = Tensor::zeros({4});
  Tensor y = Tensor::empty({1, 4, 3, 3});
  EXPECT_THROW(conv2d_forward_cpu(x, w, b, y, {}), InternalError);
  Tensor w64 = Tensor::zeros({4, 4, 3, 3}, DType::kF64);
  EXPECT_THROW(conv2d_forward_cpu(x, w64, b, y, {}), InternalError);
}

}  // namespace
}  // namespace alexnet
