// CUDA graphs of the training pass (parallel.cuda_graphs) against the same passes issued stream by stream:
// two models with the same weights, one replaying captured graphs, must agree bit for bit on every loss,
// logits, gradient, weight and inference output, call on_grad_ready for the same tensors in the same
// order, and hand each gradient to a consumer on another stream at a point where it is final (as the NCCL
// reductions take them); a replayed step allocates nothing and waits once. Label gpu: skips without a device.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/device.h"
#include "core/rng.h"
#include "model/alexnet.h"
#include "model/cuda/layers_cuda.h"
#include "tests/common/expect.h"
#include "tests/common/gradcheck.h"
#include "tests/common/precision_scope.h"
#include "tests/common/seed.h"

namespace alexnet {
namespace {

using testing::PrecisionScope;
using testing::printed_seed;

// Each gradient copied, when on_grad_ready reports it, on a non-blocking stream of its own that waits for
// the point the model names (the graph's event, CudaReadyEventScope) or, stream by stream, for the work
// queued so far on the tower's stream: what an NCCL reduction reads. A mark placed before its gradient
// is written copies stale values.
class GradCopies {
 public:
  explicit GradCopies(const AlexNet& net) : net_(net) {
    for (int t = 0; t < kTowers; ++t) {
      cudaSetDevice(net.device(t).index);
      cudaStreamCreateWithFlags(&side_[t], cudaStreamNonBlocking);
      cudaEventCreateWithFlags(&marker_[t], cudaEventDisableTiming);
      int64_t offset = 0;
      for (const ParamInfo& p : net.table()) {
        const int64_t n = shape_numel(p.tower_shape(t));
        offset_[t].push_back(offset);
        copy_[t].push_back(p.trainable ? Tensor::empty({n}, DType::kF32, net.device(t)) : Tensor());
        if (p.trainable) offset += AlexNet::arena_slot(n);
      }
    }
  }
  ~GradCopies() {
    for (int t = 0; t < kTowers; ++t) {
      cudaSetDevice(net_.device(t).index);
      cudaStreamSynchronize(side_[t]);
      cudaStreamDestroy(side_[t]);
      cudaEventDestroy(marker_[t]);
    }
  }
  void operator()(int t, size_t index) {
    cudaSetDevice(net_.device(t).index);
    if (void* event = cuda_ready_event()) {
      cudaStreamWaitEvent(side_[t], static_cast<cudaEvent_t>(event), 0);
    } else {
      cudaEventRecord(marker_[t], net_.stream(t));
      cudaStreamWaitEvent(side_[t], marker_[t], 0);
    }
    Tensor& dst = copy_[t][index];
    cudaMemcpyAsync(dst.raw_data(), net_.grad_arena(t).data<float>() + offset_[t][index], dst.nbytes(),
                    cudaMemcpyDeviceToDevice, side_[t]);
    if (cudaGetLastError() != cudaSuccess) ++errors_;
  }
  // The copies of the last pass, "t0 conv1/weight", on the host.
  std::map<std::string, Tensor> host() {
    for (int t = 0; t < kTowers; ++t) {
      cudaSetDevice(net_.device(t).index);
      if (cudaStreamSynchronize(side_[t]) != cudaSuccess) ++errors_;
    }
    std::map<std::string, Tensor> out;
    for (int t = 0; t < kTowers; ++t)
      for (size_t i = 0; i < net_.table().size(); ++i)
        if (copy_[t][i].defined()) out[str_cat("t", t, " ", net_.table()[i].name)] = copy_[t][i].clone(Device::cpu());
    return out;
  }
  int errors() const { return errors_; }

 private:
  const AlexNet& net_;
  std::array<cudaStream_t, kTowers> side_{};
  std::array<cudaEvent_t, kTowers> marker_{};
  std::array<std::vector<int64_t>, kTowers> offset_;
  std::array<std::vector<Tensor>, kTowers> copy_;
  int errors_ = 0;
};

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() && std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

// The entries of `a` that differ from `b`: in any bit (exact), else by more than 1e-2 relative L2.
std::string differing(const std::map<std::string, Tensor>& a, const std::map<std::string, Tensor>& b, bool exact) {
  std::string out;
  for (const auto& [name, t] : a) {
    const bool same = b.count(name) && (exact ? same_bits(t, b.at(name)) : testing::rel_l2_diff(t, b.at(name)) <= 1e-2);
    if (!same) out += name + " ";
  }
  return out;
}

// A step's batch, new pixels and labels every step: a replay that read an old buffer would differ.
struct Batch {
  Tensor images, labels;
  CropBatch crops;
  std::vector<int64_t> ids;
};

Batch make_batch(int64_t n, int64_t side, uint64_t seed) {
  Batch b;
  b.images = testing::random_tensor({n, 3, side, side}, seed, -100, 100).to(DType::kF32);
  std::vector<int64_t> lab(n);
  for (int64_t i = 0; i < n; ++i) lab[i] = static_cast<int64_t>((seed + 3 * static_cast<uint64_t>(i)) % 10);
  b.labels = Tensor::from_vector<int64_t>({n}, lab);
  b.crops.crops = Tensor::empty({n, 3, side, side}, DType::kU8);
  const CounterRng pix(make_key(seed, RngPurpose::kLighting), 3);
  for (int64_t i = 0; i < b.crops.crops.numel(); ++i)
    b.crops.crops.data<uint8_t>()[i] = static_cast<uint8_t>(pix.bits(static_cast<uint64_t>(i)) & 0xff);
  b.crops.placement = Tensor::zeros({n, 3}, DType::kI32);
  for (int64_t i = 0; i < n; ++i) b.crops.placement.data<int32_t>()[3 * i + 2] = static_cast<int32_t>((seed + i) % 2);
  b.crops.lighting = testing::random_tensor({n, 3}, seed + 1, -5, 5).to(DType::kF32);
  b.ids.resize(n);
  for (int64_t i = 0; i < n; ++i) b.ids[i] = static_cast<int64_t>(seed % 100000) + 17 * i;
  return b;
}

struct Case {
  const char* name;
  NormKind norm;
  Precision precision;
};

class AlexNetCudaGraphs : public ::testing::TestWithParam<Case> {};

// Phases of steps of one kind each: host images at batch 8; uint8 crops; batch 5 with an inference pass at
// batch 8 in the middle (its buffers replace the training ones: the graph must be captured again); a
// batch kept on the GPU and read in place, rewritten before each step; host images at 8 again. The last
// step of every phase must be a replay of a graph captured before it. (A kind is captured on its third pass
// at the latest: the first allocates in staging and in its work, the second is the first whose key holds
// still, the third is captured; a bf16 convolution falling back to TF32 may search once more, which adds
// one pass. Each phase has room for that.)
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
  enum class Input { kImages, kCrops, kOnGpu };
  struct Phase {
    const char* name;
    int64_t n;
    Input input;
    int steps;
    int infer_after = -1;  // an inference pass at batch 8 after this step of the phase
  };
  const std::vector<Phase> phases = {{"images", 8, Input::kImages, 5},
                                     {"crops", 8, Input::kCrops, 4},
                                     {"batch 5", 5, Input::kImages, 7, 2},
                                     {"on the GPU", 8, Input::kOnGpu, 5},
                                     {"images again", 8, Input::kImages, 4}};
  for (const auto& devices : placements) {
    const std::string where = str_cat(devices[0].str(), "+", devices[1].str(), " ", c.name);
    AlexNet eager(cfg, devices), graphed(cfg, devices);
    graphed.set_cuda_graphs(true);
    ASSERT_TRUE(graphed.graph_status().enabled) << where;
    for (AlexNet* net : {&eager, &graphed}) {
      net->init_scaled(seed % 1000);
      net->set_input_mean(mean);
    }
    GradCopies eager_copies(eager), graphed_copies(graphed);
    // One buffer per model on tower 0's GPU (256-byte aligned, so read in place), rewritten every step.
    std::array<Tensor, 2> on_gpu = {Tensor::empty({8, 3, 99, 99}, DType::kF32, devices[0]),
                                    Tensor::empty({8, 3, 99, 99}, DType::kF32, devices[0])};
    int64_t step = 0, steady_steps = 0;
    for (const Phase& phase : phases) {
      bool last_was_steady = false;
      for (int k = 0; k < phase.steps; ++k, ++step) {
        Batch b = make_batch(phase.n, 99, seed + 1000 * static_cast<uint64_t>(step));
        std::array<std::vector<std::pair<int, size_t>>, 2> order;
        std::array<double, 2> loss{};
        std::array<Tensor, 2> logits;
        const AlexNet::GraphStatus before = graphed.graph_status();
        CudaActivity graphed_activity;
        for (int m = 0; m < 2; ++m) {
          AlexNet& net = m == 0 ? eager : graphed;
          GradCopies& copies = m == 0 ? eager_copies : graphed_copies;
          PassOptions opt;
          opt.seed = seed;
          opt.step = static_cast<uint64_t>(100 + step);
          opt.sample_ids = b.ids.data();
          opt.on_grad_ready = [&order, &copies, m](int tower, size_t index) {
            order[m].emplace_back(tower, index);
            copies(tower, index);
          };
          if (phase.input == Input::kOnGpu) on_gpu[m].copy_from(b.images);
          const CudaActivity a0 = cuda_activity();
          switch (phase.input) {
            case Input::kImages: loss[m] = net.train_pass(b.images, b.labels, opt, &logits[m]); break;
            case Input::kCrops: loss[m] = net.train_pass(b.crops, b.labels, opt, &logits[m]); break;
            case Input::kOnGpu: loss[m] = net.train_pass(on_gpu[m], b.labels, opt, &logits[m]); break;
          }
          net.sgd_step(0.01, 0.9, 0.0005);
          if (m == 1) graphed_activity = cuda_activity() - a0;
        }
        bool exact = true;  // no convolution runs an algorithm whose results vary run to run
        for (const ConvPlanInfo& plan : cuda_conv_plan_report().plans) exact = exact && !plan.nondeterministic;
        const std::string what = str_cat(where, ", ", phase.name, ", step ", step);
        if (exact) {
          EXPECT_EQ(loss[1], loss[0]) << what;
          EXPECT_TRUE(same_bits(logits[1], logits[0])) << what << ": logits";
        } else {
          EXPECT_NEAR(loss[1], loss[0], 1e-3 * std::max(1.0, std::fabs(loss[0]))) << what;
          EXPECT_LE(testing::rel_l2_diff(logits[1], logits[0]), 1e-2) << what << ": logits";
        }
        EXPECT_EQ(order[1], order[0]) << what << ": on_grad_ready calls";
        EXPECT_EQ(differing(graphed_copies.host(), eager_copies.host(), exact), "")
            << what << ": gradients as on_grad_ready's consumers read them";
        EXPECT_EQ(differing(graphed.gradients(), eager.gradients(), exact), "") << what << ": gradients";
        EXPECT_EQ(differing(graphed.state(), eager.state(), exact), "") << what << ": weights after the SGD step";
        const AlexNet::GraphStatus now = graphed.graph_status();
        last_was_steady = now.replays > before.replays && now.captures == before.captures;
        if (last_was_steady) {
          // A replay of a graph captured before this step: nothing allocated, one wait (the loss).
          ++steady_steps;
          EXPECT_EQ(graphed_activity.device_allocations, 0) << what;
          EXPECT_EQ(graphed_activity.host_allocations, 0) << what;
          EXPECT_LE(graphed_activity.host_waits, 1) << what;
        }
        if (k == phase.infer_after) {
          // The worker's evaluation between training steps, here at another batch size.
          const Batch e = make_batch(8, 99, seed + 77);
          const Tensor ie = eager.infer(e.images), ig = graphed.infer(e.images);
          EXPECT_TRUE(exact ? same_bits(ig, ie) : testing::rel_l2_diff(ig, ie) <= 1e-2) << what << ": inference";
        }
      }
      if (devices[0] == devices[1]) {
        EXPECT_TRUE(last_was_steady) << where << ", " << phase.name << ": its last step";
      }
    }
    EXPECT_EQ(eager_copies.errors() + graphed_copies.errors(), 0) << where << ": CUDA errors of the copies";
    const AlexNet::GraphStatus g = graphed.graph_status();
    std::printf("%s: %lld captures, %lld replays (%lld steady), %zu nodes%s%s\n", where.c_str(),
                static_cast<long long>(g.captures), static_cast<long long>(g.replays),
                static_cast<long long>(steady_steps), g.nodes, g.refused.empty() ? "" : ", refused: ",
                g.refused.c_str());
    if (devices[0] == devices[1]) {
      // One GPU: CUDA captures this pass (two GPUs may refuse it: the passes then run stream by stream,
      // which the comparisons above still check).
      EXPECT_EQ(g.refused, "") << where;
      EXPECT_GE(g.captures, static_cast<int64_t>(phases.size())) << where;
      EXPECT_GT(g.nodes, 50u) << where;
      EXPECT_GE(steady_steps, static_cast<int64_t>(phases.size())) << where;
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
