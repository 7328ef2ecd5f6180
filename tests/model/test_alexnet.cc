// The two-tower graph: parameter table and count, layer sides, per-tower LRN, initialisation,
// state loading, and that training on a fixed batch lowers the loss.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <cstring>

#include "core/config.h"
#include "model/alexnet.h"
#include "model/layers.h"
#include "tests/common/gradcheck.h"
#include "tests/common/expect.h"

namespace alexnet {
namespace {

using testing::random_tensor;

ModelConfig small_model(NormKind norm = NormKind::kLrn, int classes = 10) {
  ModelConfig m;
  m.num_classes = classes;
  m.input_size = 67;  // sides 15 -> 7 -> 3 -> 1: every layer present, fast
  m.norm = norm;
  return m;
}

Tensor labels_for(int64_t n, int classes) {
  std::vector<int64_t> l(n);
  for (int64_t i = 0; i < n; ++i) l[i] = (i * 7 + 3) % classes;
  return Tensor::from_vector<int64_t>({n}, l);
}

TEST(AlexNetTable, PaperParameterCount) {
  ModelConfig m;  // 1000 classes, LRN
  EXPECT_EQ(alexnet_parameter_count(m), 60965224);
  m.norm = NormKind::kBatchNorm;  // + scale and shift of 96 + 256 channels
  EXPECT_EQ(alexnet_parameter_count(m), 60965224 + 2 * (96 + 256));
  m.num_classes = 10;
  m.norm = NormKind::kLrn;
  EXPECT_EQ(alexnet_parameter_count(m), 60965224 - 990 * 4097);
}

TEST(AlexNetTable, MergedShapesFollowLayoutV1) {
  ModelConfig m;
  m.norm = NormKind::kBatchNorm;
  std::map<std::string, Shape> want = {
      {"conv1/weight", {96, 3, 11, 11}}, {"conv1/bias", {96}},
      {"conv2/weight", {256, 48, 5, 5}}, {"conv2/bias", {256}},
      {"conv3/weight", {384, 256, 3, 3}}, {"conv3/bias", {384}},
      {"conv4/weight", {384, 192, 3, 3}}, {"conv4/bias", {384}},
      {"conv5/weight", {256, 192, 3, 3}}, {"conv5/bias", {256}},
      {"fc6/weight", {4096, 9216}}, {"fc6/bias", {4096}},
      {"fc7/weight", {4096, 4096}}, {"fc7/bias", {4096}},
      {"fc8/weight", {1000, 4096}}, {"fc8/bias", {1000}},
      {"norm1/weight", {96}}, {"norm1/bias", {96}}, {"norm1/running_mean", {96}}, {"norm1/running_var", {96}},
      {"norm2/weight", {256}}, {"norm2/bias", {256}}, {"norm2/running_mean", {256}}, {"norm2/running_var", {256}},
  };
  auto table = alexnet_param_table(m);
  ASSERT_EQ(table.size(), want.size());
  for (const ParamInfo& p : table) {
    ASSERT_TRUE(want.count(p.name)) << p.name;
    EXPECT_EQ(p.merged, want[p.name]) << p.name;
    EXPECT_EQ(p.split * 2, p.merged[0]) << p.name;  // towers own equal halves
    const bool conv_or_fc = p.name.starts_with("conv") || p.name.starts_with("fc");
    EXPECT_EQ(p.decay, conv_or_fc && p.name.ends_with("/weight"))
        << p.name;
    EXPECT_EQ(p.trainable, !p.name.ends_with("running_mean") && !p.name.ends_with("running_var"));
  }
  EXPECT_EQ(table.front().name, "fc8/weight");  // backward-completion order
}

TEST(AlexNetShapes, PaperSidesAndTheNonOverlappingAblation) {
  ModelConfig m;
  NetShapes s = alexnet_shapes(m);
  EXPECT_EQ(s.conv1, 55);
  EXPECT_EQ(s.pool1, 27);
  EXPECT_EQ(s.pool2, 13);
  EXPECT_EQ(s.pool5, 6);
  EXPECT_EQ(s.fc6_in, 9216);
  m.pool = {2, 2};
  s = alexnet_shapes(m);
  EXPECT_EQ(s.pool1, 27);
  EXPECT_EQ(s.pool5, 6);
  m.input_size = 30;
  try {
    alexnet_shapes(m);
    FAIL() << "input 40 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.input_size"), std::string::npos) << e.what();
  }
}

// The paper's LRN is per tower: tower 0's normalised maps must not depend on tower 1's conv1 maps.
TEST(AlexNetGraph, LrnWindowStaysInsideItsTower) {
  for (NormKind norm : {NormKind::kLrn, NormKind::kLrn2d}) {
    ModelConfig m = small_model(norm);
    m.lrn.alpha = 0.5;  // strong normalisation, so a leak would be large
    AlexNet net(m);
    net.init_paper(3);
    Tensor x = random_tensor({2, 3, 67, 67}, 11, -1, 1, DType::kF32);
    net.infer(x);
    Tensor before = net.activation(0, "n1").clone();
    // Blow up tower 1's conv1 maps (channels 48..95 of the merged layer).
    auto state = net.state();
    Tensor& w = state["conv1/weight"];
    for (int64_t i = 48 * 3 * 11 * 11; i < w.numel(); ++i) w.data<float>()[i] *= 100.0f;
    for (int64_t c = 48; c < 96; ++c) state["conv1/bias"].data<float>()[c] = 5.0f;
    net.load_state(state, "test");
    net.infer(x);
    Tensor after = net.activation(0, "n1");
    for (int64_t i = 0; i < before.numel(); ++i)
      ASSERT_EQ(before.data<float>()[i], after.data<float>()[i]) << "element " << i;
    if (norm != NormKind::kLrn) continue;
    // The check above can fail: an LRN over all 96 channels changes tower 0's last channel.
    Tensor both = Tensor::empty({2, 96, 15, 15});
    for (int64_t s = 0; s < 2; ++s)
      for (int t = 0; t < 2; ++t)
        std::copy_n(net.activation(t, "a1").data<float>() + s * 48 * 225, 48 * 225,
                    both.data<float>() + (s * 96 + t * 48) * 225);
    Tensor y = Tensor::empty(both.shape()), scale = Tensor::empty(both.shape());
    lrn_forward_cpu(both, y, scale, {m.lrn.k, m.lrn.n, m.lrn.alpha, m.lrn.beta});
    double diff = 0;
    for (int64_t i = 47 * 225; i < 48 * 225; ++i) diff += std::fabs(y.data<float>()[i] - after.data<float>()[i]);
    EXPECT_GT(diff, 1e-3) << "the test input does not exercise the tower boundary";
  }
}

TEST(AlexNetInit, PaperValuesAndDeterminism) {
  ModelConfig m = small_model(NormKind::kBatchNorm);
  AlexNet a(m), b(m);
  a.init_paper(7);
  b.init_paper(7);
  auto sa = a.state(), sb = b.state();
  for (const auto& [name, t] : sa)
    ASSERT_EQ(0, std::memcmp(t.data<float>(), sb[name].data<float>(), t.nbytes())) << name;
  b.init_paper(8);
  EXPECT_NE(0, std::memcmp(sa["fc7/weight"].data<float>(), b.state()["fc7/weight"].data<float>(), 64));
  // Weights ~ N(0, 0.01^2).
  const Tensor& w = sa["fc7/weight"];
  double s1 = 0, s2 = 0;
  for (int64_t i = 0; i < w.numel(); ++i) {
    s1 += w.data<float>()[i];
    s2 += static_cast<double>(w.data<float>()[i]) * w.data<float>()[i];
  }
  const double mean = s1 / w.numel(), sd = std::sqrt(s2 / w.numel() - mean * mean);
  EXPECT_LT(std::fabs(mean), 1e-4);
  EXPECT_NEAR(sd, 0.01, 1e-4);
  // Biases: 1 in conv2, conv4, conv5, fc6, fc7; 0 in conv1, conv3, fc8. BN: scale 1, shift 0.
  std::map<std::string, float> bias = {{"conv1", 0}, {"conv2", 1}, {"conv3", 0}, {"conv4", 1},
                                       {"conv5", 1}, {"fc6", 1},   {"fc7", 1},   {"fc8", 0}};
  for (const auto& [layer, v] : bias) {
    const Tensor& t = sa[layer + "/bias"];
    for (int64_t i = 0; i < t.numel(); ++i) ASSERT_EQ(t.data<float>()[i], v) << layer;
  }
  EXPECT_EQ(sa["norm1/weight"].data<float>()[5], 1.0f);
  EXPECT_EQ(sa["norm2/bias"].data<float>()[5], 0.0f);
  EXPECT_EQ(sa["norm2/running_var"].data<float>()[200], 1.0f);
}

TEST(AlexNetState, LoadRejectsMissingUnexpectedAndMisshapen) {
  ModelConfig m = small_model();
  AlexNet net(m);
  auto state = net.state();
  auto expect_error = [&](std::map<std::string, Tensor> s, const std::string& needle) {
    try {
      net.load_state(s, "W.h5");
      ADD_FAILURE() << "accepted; wanted an error with " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("W.h5"), std::string::npos) << e.what();
    }
  };
  auto s1 = state;
  s1.erase("conv3/bias");
  expect_error(s1, "conv3/bias");
  auto s2 = state;
  s2["fc8/weight"] = Tensor::zeros({11, 4096});
  expect_error(s2, "fc8/weight");
  auto s3 = state;
  s3["norm1/weight"] = Tensor::zeros({96});
  expect_error(s3, "norm1/weight");
  net.load_state(state, "W.h5");
}

// Placement must not matter: state() of a freshly loaded net equals what was loaded.
TEST(AlexNetState, RoundTripIsExact) {
  AlexNet a(small_model(NormKind::kBatchNorm)), b(small_model(NormKind::kBatchNorm));
  a.init_paper(21);
  b.load_state(a.state(), "a");
  auto sa = a.state(), sb = b.state();
  for (const auto& [name, t] : sa) ASSERT_EQ(0, std::memcmp(t.data<float>(), sb[name].data<float>(), t.nbytes()));
}

// Every trainable tensor starts on a 256-byte boundary of its arena, whatever the class count (10
// classes give fc8 a 5-float bias per tower), and the arena padding stays zero through passes and
// steps, so reducing it with its tensor changes nothing.
TEST(AlexNetArena, TensorsStartAlignedAndPaddingStaysZero) {
  for (int classes : {10, 14, 1000}) {
    AlexNet net(small_model(NormKind::kBatchNorm, classes));
    net.init_paper(3);
    Tensor x = random_tensor({4, 3, 67, 67}, 9, -2, 2, DType::kF32);
    PassOptions opt;
    net.train_pass(x, labels_for(4, classes), opt);
    net.sgd_step(0.01, 0.9, 0.0005);
    net.train_pass(x, labels_for(4, classes), opt);
    for (int t = 0; t < kTowers; ++t) {
      const Tensor grads = net.grad_arena(t);
      const float* g = grads.data<float>();
      const float* first = nullptr;
      int64_t off = 0;
      for (size_t i = 0; i < net.table().size(); ++i) {
        const ParamInfo& p = net.table()[i];
        if (!p.trainable) continue;
        const float* w = net.tower_tensor(t, i).data<float>();
        if (!first) first = w;
        EXPECT_EQ((w - first) * sizeof(float) % 256, 0u) << p.name << " of tower " << t << ", " << classes << " classes";
        EXPECT_EQ(w - first, off) << p.name;
        const int64_t n = shape_numel(p.tower_shape(t));
        for (int64_t k = off + n; k < off + AlexNet::arena_slot(n); ++k) {
          ASSERT_EQ(g[k], 0.0f) << "gradient padding after " << p.name << " of tower " << t;
          ASSERT_EQ(first[k], 0.0f) << "parameter padding after " << p.name << " of tower " << t;
        }
        off += AlexNet::arena_slot(n);
      }
      EXPECT_EQ(off, grads.numel());
    }
  }
}

// A few steps on one fixed batch must lower the loss (every configuration of the graph).
TEST(AlexNetTrain, LossFallsOnAFixedBatch) {
  for (NormKind norm : {NormKind::kLrn, NormKind::kLrn2d, NormKind::kBatchNorm, NormKind::kNone}) {
    for (Activation act : {Activation::kRelu, Activation::kTanh}) {
      ModelConfig m = small_model(norm);
      m.activation = act;
      m.dropout = 0.5;
      AlexNet net(m);
      net.init_paper(1);
      Tensor x = random_tensor({8, 3, 67, 67}, 5, -2, 2, DType::kF32);
      Tensor y = labels_for(8, 10);
      PassOptions opt;
      opt.dropout = false;
      double first = net.train_pass(x, y, opt);
      EXPECT_NEAR(first, std::log(10.0), 1.0) << "small init: nearly uniform predictions";
      double last = first;
      // Saturated tanh units (biases of 1) feed fc8 4096 coherent inputs: the paper's rate
      // overshoots on a single repeated batch, so tanh takes a tenth of it.
      for (int step = 0; step < 12; ++step) {
        net.sgd_step(act == Activation::kTanh ? 0.001 : 0.01, 0.9, 0.0005);
        last = net.train_pass(x, y, opt);
        ASSERT_TRUE(std::isfinite(last));
      }
      EXPECT_LT(last, first - 0.05) << enum_name(norm) << " " << enum_name(act);
      // With dropout on, two passes at the same step draw the same mask; another step differs.
      opt.dropout = true;
      opt.step = 3;
      double d1 = net.train_pass(x, y, opt), d2 = net.train_pass(x, y, opt);
      opt.step = 4;
      double d3 = net.train_pass(x, y, opt);
      EXPECT_EQ(d1, d2);
      EXPECT_NE(d1, d3);
    }
  }
}

TEST(AlexNetBatch, BadBatchesAreNamed) {
  AlexNet net(small_model());
  PassOptions opt;
  try {
    net.train_pass(Tensor::zeros({2, 3, 64, 64}), labels_for(2, 10), opt);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[N, 3, 67, 67]"), std::string::npos) << e.what();
  }
  try {
    net.train_pass(Tensor::zeros({2, 3, 67, 67}), Tensor::from_vector<int64_t>({2}, {0, 10}), opt);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("label 10"), std::string::npos) << e.what();
  }
}

// The uint8 input path (CropBatch) belongs to CUDA towers; on the CPU the data client normalises, and the
// model says so instead of computing anything. Bad means and bad batches are named.
TEST(AlexNetCrops, RefusedOnCpuTowersAndValidated) {
  ModelConfig m = small_model();
  AlexNet net(m);
  const int64_t s = m.input_size, n = 2;
  using testing::error_of;
  EXPECT_NE(error_of([&] { net.set_input_mean(Tensor::zeros({3, s - 1, s - 1}, DType::kF32)); }).find("side >= "),
            std::string::npos);
  EXPECT_NE(error_of([&] { net.set_input_mean(Tensor::zeros({4}, DType::kF32)); }).find("float32 [3, side, side]"),
            std::string::npos);
  net.set_input_mean(Tensor::zeros({3, s + 8, s + 8}, DType::kF32));
  CropBatch b;
  b.crops = Tensor::zeros({n, 3, s, s}, DType::kU8);
  b.placement = Tensor::zeros({n, 3}, DType::kI32);
  b.lighting = Tensor::zeros({n, 3}, DType::kF32);
  Tensor labels = Tensor::zeros({n}, DType::kI64);
  const std::string cpu = error_of([&] { net.train_pass(b, labels, PassOptions{}); });
  EXPECT_NE(cpu.find("tower 0 is on cpu"), std::string::npos) << cpu;
  EXPECT_NE(cpu.find("the data client normalises"), std::string::npos) << cpu;
  CropBatch wrong = b;
  wrong.crops = Tensor::zeros({n, 3, s, s}, DType::kF32);
  EXPECT_NE(error_of([&] { net.infer(wrong); }).find("crops must be uint8"), std::string::npos);
  wrong = b;
  wrong.lighting = Tensor::zeros({n + 1, 3}, DType::kF32);
  EXPECT_NE(error_of([&] { net.infer(wrong); }).find("lighting must be float32 [2, 3]"), std::string::npos);
}

}  // namespace
}  // namespace alexnet
