// CUDA graphs of the training pass (parallel.cuda_graphs) against the same passes issued stream by stream:
// two models with the same weights, one replaying a captured graph, must agree bit for bit on every loss,
// logits, gradient, weight and inference output, and call on_grad_ready for the same tensors in the same
// order; a replayed step allocates nothing and waits once. Label gpu: skips without a device.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "core/device.h"
#include "core/rng.h"
#include "model/alexnet.h"
#include "tests/common/gradcheck.h"
#include "tests/common/precision_scope.h"

namespace alexnet {
namespace {

using testing::PrecisionScope;

uint64_t printed_seed() {
  const uint64_t seed = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  std::printf("seed %llu\n", static_cast<unsigned long long>(seed));
  return seed;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() && std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

// The names of the tensors whose entries differ in any bit ("" when none).
std::string differing(const std::map<std::string, Tensor>& a, const std::map<std::string, Tensor>& b) {
  std::string out;
  for (const auto& [name, t] : a)
    if (!b.count(name) || !same_bits(t, b.at(name))) out += name + " ";
  return out;
}

struct Batch {
  Tensor images, labels;
  CropBatch crops;
  std::vector<int64_t> ids;
};

Batch make_batch(int64_t n, int64_t side, uint64_t seed) {
  Batch b;
  b.images = testing::random_tensor({n, 3, side, side}, seed, -100, 100).to(DType::kF32);
  std::vector<int64_t> lab(n);
  for (int64_t i = 0; i < n; ++i) lab[i] = (static_cast<int64_t>(seed % 10) + 3 * i) % 10;
  b.labels = Tensor::from_vector<int64_t>({n}, lab);
  b.crops.crops = Tensor::empty({n, 3, side, side}, DType::kU8);
  const CounterRng pix(make_key(seed, RngPurpose::kLighting), 3);
  for (int64_t i = 0; i < b.crops.crops.numel(); ++i)
    b.crops.crops.data<uint8_t>()[i] = static_cast<uint8_t>(pix.bits(static_cast<uint64_t>(i)) & 0xff);
  b.crops.placement = Tensor::zeros({n, 3}, DType::kI32);
  for (int64_t i = 0; i < n; ++i) b.crops.placement.data<int32_t>()[3 * i + 2] = static_cast<int32_t>(i % 2);
  b.crops.lighting = testing::random_tensor({n, 3}, seed + 1, -5, 5).to(DType::kF32);
  b.ids.resize(n);
  return b;
}

struct Case {
  const char* name;
  NormKind norm;
  Precision precision;
};

class AlexNetCudaGraphs : public ::testing::TestWithParam<Case> {};

// Steps of several kinds in one run: images, then crops (a new input kind: captured again), a different
// batch size (stream by stream, then captured), an inference pass in between, and back; each step with
// new sample ids and step number, so a graph that kept the first step's dropout masks would differ.
TEST_P(AlexNetCudaGraphs, ReplaysAreTheStreamPassesBitForBit) {
  const int gpus = cuda_device_count();
  if (gpus == 0) GTEST_SKIP() << "no CUDA device: " << device_summary();
  const Case c = GetParam();
  const PrecisionScope scope(c.precision);
  const uint64_t seed = printed_seed();
  ModelConfig cfg;
  cfg.num_classes = 10;
  cfg.input_size = 99;
  cfg.norm = c.norm;
  std::vector<std::array<Device, kTowers>> placements = {{Device::cuda(0), Device::cuda(0)}};
  if (gpus >= 2) placements.push_back({Device::cuda(0), Device::cuda(1)});
  const Tensor mean = Tensor::from_vector<float>({3}, {123.68f, 116.78f, 103.94f});
  Batch b8 = make_batch(8, 99, seed), b5 = make_batch(5, 99, seed + 7);
  enum class Input { kImages, kCrops };
  struct Step {
    Batch* batch;
    Input input;
  };
  const std::vector<Step> plan = {{&b8, Input::kImages}, {&b8, Input::kImages}, {&b8, Input::kImages},
                                  {&b8, Input::kImages}, {&b8, Input::kImages}, {&b8, Input::kCrops},
                                  {&b8, Input::kCrops},  {&b8, Input::kCrops},  {&b8, Input::kCrops},
                                  {&b5, Input::kImages}, {&b5, Input::kImages}, {&b5, Input::kImages},
                                  {&b5, Input::kImages}, {&b8, Input::kImages}, {&b8, Input::kImages},
                                  {&b8, Input::kImages}, {&b8, Input::kImages}};
  for (const auto& devices : placements) {
    const std::string where = str_cat(devices[0].str(), "+", devices[1].str(), " ", c.name);
    AlexNet eager(cfg, devices), graphed(cfg, devices);
    graphed.set_cuda_graphs(true);
    ASSERT_TRUE(graphed.graph_status().enabled) << where;
    for (AlexNet* net : {&eager, &graphed}) {
      net->init_scaled(seed % 1000);
      net->set_input_mean(mean);
    }
    int64_t steady_steps = 0;
    for (size_t s = 0; s < plan.size(); ++s) {
      const Step& st = plan[s];
      const int64_t n = st.batch->labels.numel();
      for (int64_t i = 0; i < n; ++i) st.batch->ids[i] = static_cast<int64_t>(s) * 1000 + 17 * i;
      std::array<std::vector<std::pair<int, size_t>>, 2> order;
      std::array<double, 2> loss{};
      std::array<Tensor, 2> logits;
      const AlexNet::GraphStatus before = graphed.graph_status();
      CudaActivity graphed_activity;
      for (int m = 0; m < 2; ++m) {
        AlexNet& net = m == 0 ? eager : graphed;
        PassOptions opt;
        opt.seed = seed;
        opt.step = 100 + s;
        opt.sample_ids = st.batch->ids.data();
        opt.on_grad_ready = [&order, m](int tower, size_t index) { order[m].emplace_back(tower, index); };
        const CudaActivity before = cuda_activity();
        loss[m] = st.input == Input::kImages ? net.train_pass(st.batch->images, st.batch->labels, opt, &logits[m])
                                             : net.train_pass(st.batch->crops, st.batch->labels, opt, &logits[m]);
        net.sgd_step(0.01, 0.9, 0.0005);
        if (m == 1) graphed_activity = cuda_activity() - before;
      }
      const std::string what = str_cat(where, ", step ", s, " (batch ", n, st.input == Input::kCrops ? ", crops)" : ")");
      EXPECT_EQ(loss[1], loss[0]) << what;
      EXPECT_TRUE(same_bits(logits[1], logits[0])) << what << ": logits";
      EXPECT_EQ(order[1], order[0]) << what << ": on_grad_ready calls";
      EXPECT_EQ(differing(eager.gradients(), graphed.gradients()), "") << what << ": gradients";
      EXPECT_EQ(differing(eager.state(), graphed.state()), "") << what << ": weights after the SGD step";
      if (graphed.graph_status().replays > before.replays && graphed.graph_status().captures == before.captures) {
        // A replay of a graph captured before this step: nothing allocated, one wait (the loss).
        ++steady_steps;
        EXPECT_EQ(graphed_activity.device_allocations, 0) << what;
        EXPECT_EQ(graphed_activity.host_allocations, 0) << what;
        EXPECT_LE(graphed_activity.host_waits, 1) << what;
      }
      if (s == 11) {
        // An inference pass between training steps (the worker's evaluation) leaves the graph usable.
        EXPECT_TRUE(same_bits(graphed.infer(b5.images), eager.infer(b5.images))) << what << ": inference";
      }
    }
    const AlexNet::GraphStatus& g = graphed.graph_status();
    std::printf("%s: %lld captures, %lld replays, %zu nodes%s%s\n", where.c_str(), static_cast<long long>(g.captures),
                static_cast<long long>(g.replays), g.nodes, g.refused.empty() ? "" : ", refused: ",
                g.refused.c_str());
    if (devices[0] == devices[1]) {
      // One GPU: every kind is captured on its third pass (the first two allocate and search) and replayed
      // from then on: images at 8, crops, images at 5, images at 8 again (new buffers since: captured again).
      EXPECT_EQ(g.refused, "") << where;
      EXPECT_EQ(g.captures, 4) << where;
      EXPECT_GE(g.replays, 4 * 2) << where;
      EXPECT_GT(g.nodes, 50u) << where;
      EXPECT_GE(steady_steps, 4) << where;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, AlexNetCudaGraphs,
                         ::testing::Values(Case{"lrn_float32", NormKind::kLrn, Precision::kFloat32},
                                           Case{"batchnorm_float32", NormKind::kBatchNorm, Precision::kFloat32},
                                           Case{"lrn_bf16", NormKind::kLrn, Precision::kBf16}),
                         [](const auto& info) { return std::string(info.param.name); });

// On CPU towers the switch does nothing: there is no graph to capture.
TEST(AlexNetGraphs, CpuTowersStayStreamByStream) {
  ModelConfig cfg;
  cfg.num_classes = 10;
  cfg.input_size = 99;
  AlexNet net(cfg);
  net.set_cuda_graphs(true);
  EXPECT_FALSE(net.graph_status().enabled);
}

}  // namespace
}  // namespace alexnet
