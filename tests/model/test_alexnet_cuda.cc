// The two-tower graph on CUDA devices against the same graph on the CPU: the same initialisation and
// batch (fresh random pixels each run), dropout on with sample ids, then logits, loss, every gradient,
// the weights after two SGD steps and the inference logits. Both towers on GPU 0, and one tower per GPU
// when two are present. Also the uint8 input path (CropBatch), TF32 and bf16, the steady state of a step
// (no allocation, one host wait), the worker's padded evaluation chunks, and a short training run.
// Label gpu: skips without a device.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/rng.h"
#include "data_service/augment.h"
#include "model/alexnet.h"
#include "model/cuda/layers_cuda.h"
#include "tests/common/gradcheck.h"
#include "tests/common/expect.h"
#include "tests/common/precision_scope.h"
#include "tests/common/random_crops.h"
#include "tests/common/seed.h"
#include "worker/eval_chunks.h"

namespace alexnet {
namespace {

using testing::PrecisionScope;
using testing::printed_seed;
using testing::below_a_pooling;
using testing::rel_l2_diff;

// The small network every test here runs (10 classes, 99-pixel input), and a fresh seed per run,
// printed so a failure can be replayed.
ModelConfig small_model() {
  ModelConfig cfg;
  cfg.num_classes = 10;
  cfg.input_size = 99;
  return cfg;
}

struct Case {
  const char* name;
  NormKind norm;
  Activation act;
};

class AlexNetCuda : public ::testing::TestWithParam<Case> {};

TEST_P(AlexNetCuda, MatchesTheCpuGraph) {
  const int gpus = cuda_device_count();
  if (gpus == 0) GTEST_SKIP() << "no CUDA device: " << device_summary();
  const Case c = GetParam();
  const PrecisionScope float32(Precision::kFloat32);
  ModelConfig cfg = small_model();
  cfg.norm = c.norm;
  cfg.activation = c.act;
  const uint64_t seed = printed_seed();
  const int64_t n = 6;
  Tensor images = testing::random_tensor({n, 3, 99, 99}, seed, -100, 100).to(DType::kF32);
  std::vector<int64_t> lab(n), ids(n);
  for (int64_t i = 0; i < n; ++i) lab[i] = (static_cast<int64_t>(seed % 7) + 3 * i) % 10, ids[i] = 1000 + 37 * i;
  Tensor labels = Tensor::from_vector<int64_t>({n}, lab);
  std::vector<std::array<Device, kTowers>> placements = {{Device::cuda(0), Device::cuda(0)}};
  if (gpus >= 2) placements.push_back({Device::cuda(0), Device::cuda(1)});
  for (const auto& devices : placements) {
    const std::string where = devices[0].str() + " + " + devices[1].str();
    AlexNet cpu(cfg), gpu(cfg, devices);
    cpu.init_scaled(seed % 1000);
    gpu.init_scaled(seed % 1000);
    PassOptions opt;
    opt.seed = seed;
    opt.step = 3;
    opt.sample_ids = ids.data();
    for (int step = 0; step < 2; ++step) {
      Tensor lc, lg;
      const double loss_c = cpu.train_pass(images, labels, opt, &lc);
      const double loss_g = gpu.train_pass(images, labels, opt, &lg);
      EXPECT_NEAR(loss_g, loss_c, 1e-4 * std::max(1.0, std::fabs(loss_c))) << c.name << " " << where;
      EXPECT_LE(rel_l2_diff(lg, lc), 1e-4) << c.name << " " << where << " logits";
      const auto gc = cpu.gradients(), gg = gpu.gradients();
      for (const auto& [name, g] : gc)
        EXPECT_LE(rel_l2_diff(gg.at(name), g), below_a_pooling(name) ? 3e-2 : 1e-3) << c.name << " " << where << " " << name;
      cpu.sgd_step(0.001, 0.9, 0.0005);
      gpu.sgd_step(0.001, 0.9, 0.0005);
    }
    const auto sc = cpu.state(), sg = gpu.state();
    for (const auto& [name, t] : sc)
      EXPECT_LE(rel_l2_diff(sg.at(name), t), below_a_pooling(name) ? 1e-3 : 1e-4) << c.name << " " << where << " " << name;
    EXPECT_LE(rel_l2_diff(gpu.infer(images), cpu.infer(images)), 1e-4) << c.name << " " << where << " infer";
  }
}

INSTANTIATE_TEST_SUITE_P(Norms, AlexNetCuda,
                         ::testing::Values(Case{"lrn_relu", NormKind::kLrn, Activation::kRelu},
                                           Case{"lrn2d_relu", NormKind::kLrn2d, Activation::kRelu},
                                           Case{"batchnorm_relu", NormKind::kBatchNorm, Activation::kRelu},
                                           Case{"none_tanh", NormKind::kNone, Activation::kTanh}),
                         [](const auto& info) { return std::string(info.param.name); });

// The one-launch SGD step of a CUDA tower decays exactly the tensors marked `decay` (conv and FC
// weights): with zero gradients and velocity, one step at lr 0.1 and weight decay 0.5 scales every
// weight by 0.95 and leaves every bias and batch-norm parameter as it was, bit for bit.
TEST(AlexNetCudaSgd, DecayReachesTheWeightsAndNothingElse) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device: " << device_summary();
  for (NormKind norm : {NormKind::kLrn, NormKind::kBatchNorm}) {
    ModelConfig cfg = small_model();
    cfg.norm = norm;
    AlexNet net(cfg, {Device::cuda(0), Device::cuda(0)});
    net.init_scaled(printed_seed() % 1000);
    const auto before = net.state();
    net.sgd_step(0.1, 0.9, 0.5);  // a fresh model: gradients and velocity are zero
    const auto after = net.state();
    for (const ParamInfo& p : net.table()) {
      if (!p.trainable) continue;
      const Tensor& b = before.at(p.name);
      const Tensor& a = after.at(p.name);
      if (p.decay) {
        Tensor want = b.clone();
        for (int64_t i = 0; i < want.numel(); ++i) want.data<float>()[i] *= 0.95f;
        EXPECT_LE(testing::max_rel_diff(a, want), 1e-6) << enum_name(norm) << " " << p.name;
      } else {
        EXPECT_EQ(std::memcmp(a.raw_data(), b.raw_data(), b.nbytes()), 0) << enum_name(norm) << " " << p.name;
      }
    }
  }
}

// A batch already on tower 0's GPU (as a benchmark keeps it) is used in place: the pass gives the same
// bits as the same batch from the host, leaves the caller's tensor as it was, and a later pass from the
// host does not write into it.
TEST(AlexNetCudaInput, ABatchOnTheGpuIsUsedInPlaceAndLeftAlone) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device: " << device_summary();
  const PrecisionScope float32(Precision::kFloat32);
  ModelConfig cfg = small_model();
  const uint64_t seed = printed_seed();
  const int64_t n = 4;
  const Tensor host = testing::random_tensor({n, 3, 99, 99}, seed, -100, 100).to(DType::kF32);
  const Tensor other = testing::random_tensor({n, 3, 99, 99}, seed + 1, -100, 100).to(DType::kF32);
  const Tensor labels = Tensor::from_vector<int64_t>({n}, {1, 4, 7, 9});
  AlexNet net(cfg, {Device::cuda(0), Device::cuda(0)});
  net.init_scaled(seed % 1000);
  PassOptions opt;
  opt.seed = seed;
  opt.step = 5;
  Tensor from_host, in_place;
  const double loss_host = net.train_pass(host, labels, opt, &from_host);
  const auto grads_host = net.gradients();
  const Tensor dev = host.clone(Device::cuda(0));
  const double loss_dev = net.train_pass(dev, labels, opt, &in_place);
  EXPECT_TRUE(net.activation(0, "x").shares_storage(dev)) << "the GPU batch was copied, not used in place";
  EXPECT_EQ(loss_dev, loss_host);
  EXPECT_EQ(std::memcmp(in_place.raw_data(), from_host.raw_data(), from_host.nbytes()), 0);
  for (const auto& [name, g] : net.gradients())
    EXPECT_EQ(std::memcmp(g.raw_data(), grads_host.at(name).raw_data(), g.nbytes()), 0) << name;
  net.train_pass(other, labels, opt, nullptr);
  EXPECT_EQ(std::memcmp(dev.clone(Device::cpu()).raw_data(), host.raw_data(), host.nbytes()), 0)
      << "the caller's GPU batch was written";
}

// parallel.precision tf32 and bf16: the same graph stays within the rounding of the lower-precision
// products (bf16 keeps 8 significant bits, TF32 11), with float32 master weights, on one and two GPUs.
TEST(AlexNetCudaPrecision, Tf32AndBf16StayCloseToTheCpu) {
  const int gpus = cuda_device_count();
  if (gpus == 0) GTEST_SKIP() << "no CUDA device: " << device_summary();
  ModelConfig cfg = small_model();
  const uint64_t seed = printed_seed();
  const int64_t n = 8;
  Tensor images = testing::random_tensor({n, 3, 99, 99}, seed, -100, 100).to(DType::kF32);
  std::vector<int64_t> lab(n);
  for (int64_t i = 0; i < n; ++i) lab[i] = (static_cast<int64_t>(seed % 5) + 3 * i) % 10;
  Tensor labels = Tensor::from_vector<int64_t>({n}, lab);
  struct Tolerance {
    Precision precision;
    double logits, grads, weights;
    double pooled_grads;  // below a max pooling (below_a_pooling): argmax flips on top of the rounding
  };
  std::vector<std::array<Device, kTowers>> placements = {{Device::cuda(0), Device::cuda(0)}};
  if (gpus >= 2) placements.push_back({Device::cuda(0), Device::cuda(1)});
  for (const Tolerance tol :
       {Tolerance{Precision::kTf32, 1e-2, 5e-2, 1e-3, 0.15}, Tolerance{Precision::kBf16, 5e-2, 0.15, 5e-3, 0.4}}) {
    for (const auto& devices : placements) {
      const std::string where = std::string(enum_name(tol.precision)) + " " + devices[0].str() + " + " + devices[1].str();
      const PrecisionScope precision(tol.precision);
      AlexNet cpu(cfg), gpu(cfg, devices);
      cpu.init_scaled(seed % 1000);
      gpu.init_scaled(seed % 1000);
      PassOptions opt;
      opt.dropout = false;
      for (int step = 0; step < 2; ++step) {
        Tensor lc, lg;
        const double loss_c = cpu.train_pass(images, labels, opt, &lc);
        const double loss_g = gpu.train_pass(images, labels, opt, &lg);
        EXPECT_NEAR(loss_g, loss_c, tol.logits * std::max(1.0, std::fabs(loss_c))) << where;
        EXPECT_LE(rel_l2_diff(lg, lc), tol.logits) << where << " logits";
        const auto gc = cpu.gradients(), gg = gpu.gradients();
        for (const auto& [name, g] : gc)
          EXPECT_LE(rel_l2_diff(gg.at(name), g), below_a_pooling(name) ? tol.pooled_grads : tol.grads) << where << " " << name;
        cpu.sgd_step(0.001, 0.9, 0.0005);
        gpu.sgd_step(0.001, 0.9, 0.0005);
      }
      const auto sc = cpu.state(), sg = gpu.state();
      for (const auto& [name, t] : sc) EXPECT_LE(rel_l2_diff(sg.at(name), t), tol.weights) << where << " " << name;
    }
  }
}

// The uint8 input path the worker uses with CUDA towers (CropBatch: crops, placement, lighting, and the
// mean set by set_input_mean, normalised on each tower's device) against the CPU graph fed the data
// service's normalize_crop of the same crops: the input bit for bit, then loss, logits, every gradient
// and the inference logits; with the mean image (mirrored with the crop) and with channel means.
TEST(AlexNetCudaCrops, CropBatchIsTheCpuGraphOnNormalisedCrops) {
  const int gpus = cuda_device_count();
  if (gpus == 0) GTEST_SKIP() << "no CUDA device: " << device_summary();
  const PrecisionScope float32(Precision::kFloat32);
  ModelConfig cfg = small_model();
  const uint64_t seed = printed_seed();
  const int64_t n = 4, crop = cfg.input_size, side = crop + 8;
  ImageStats stats;
  stats.side = static_cast<int>(side);
  Tensor mimg = testing::random_tensor({3, side, side}, seed + 1, 0, 255).to(DType::kF32);
  stats.mean_image.assign(mimg.data<float>(), mimg.data<float>() + mimg.numel());
  stats.channel_mean = {123.675, 116.28, 103.53};
  CropBatch batch;
  batch.crops = Tensor::empty({n, 3, crop, crop}, DType::kU8);
  const CounterRng pix(make_key(seed, RngPurpose::kLighting), 1);
  for (int64_t i = 0; i < batch.crops.numel(); ++i)
    batch.crops.data<uint8_t>()[i] = static_cast<uint8_t>(pix.bits(static_cast<uint64_t>(i)) & 0xff);
  const testing::RandomCrops rc = testing::random_crops(seed, n, crop, side, /*flip_every_other=*/true);
  const std::vector<SampleAugment>& aug = rc.aug;
  batch.placement = Tensor::from_vector<int32_t>({n, 3}, rc.place);
  batch.lighting = Tensor::from_vector<float>({n, 3}, rc.light);
  std::vector<int64_t> lab(n), ids(n);
  for (int64_t i = 0; i < n; ++i) lab[i] = (static_cast<int64_t>(seed % 7) + 3 * i) % 10, ids[i] = 500 + i;
  Tensor labels = Tensor::from_vector<int64_t>({n}, lab);
  const std::array<Device, kTowers> devices = {Device::cuda(0), Device::cuda(gpus >= 2 ? 1 : 0)};
  for (const bool use_image : {true, false}) {
    const std::string what = use_image ? "mean image" : "channel means";
    Tensor images = Tensor::empty({n, 3, crop, crop}, DType::kF32);
    for (int64_t i = 0; i < n; ++i)
      normalize_crop(batch.crops.data<uint8_t>() + i * 3 * crop * crop, static_cast<int>(crop), aug[i], stats,
                     use_image, images.data<float>() + i * 3 * crop * crop);
    AlexNet cpu(cfg), gpu(cfg, devices);
    cpu.init_scaled(seed % 1000);
    gpu.init_scaled(seed % 1000);
    gpu.set_input_mean(use_image ? mimg
                                 : Tensor::from_vector<float>({3}, {static_cast<float>(stats.channel_mean[0]),
                                                                    static_cast<float>(stats.channel_mean[1]),
                                                                    static_cast<float>(stats.channel_mean[2])}));
    PassOptions opt;
    opt.seed = seed;
    opt.step = 7;
    opt.sample_ids = ids.data();
    Tensor lc, lg;
    const double loss_c = cpu.train_pass(images, labels, opt, &lc);
    const double loss_g = gpu.train_pass(batch, labels, opt, &lg);
    for (int t = 0; t < kTowers; ++t) {
      Tensor x = gpu.activation(t, "x").clone(Device::cpu());
      EXPECT_EQ(std::memcmp(x.raw_data(), images.raw_data(), images.nbytes()), 0) << what << ": tower " << t << " input";
    }
    EXPECT_NEAR(loss_g, loss_c, 1e-4 * std::max(1.0, std::fabs(loss_c))) << what;
    EXPECT_LE(rel_l2_diff(lg, lc), 1e-4) << what << " logits";
    const auto gc = cpu.gradients(), gg = gpu.gradients();
    for (const auto& [name, g] : gc) EXPECT_LE(rel_l2_diff(gg.at(name), g), below_a_pooling(name) ? 3e-2 : 1e-3) << what << " " << name;
    const Tensor from_crops = gpu.infer(batch);
    EXPECT_LE(rel_l2_diff(from_crops, cpu.infer(images)), 1e-4) << what << " infer";
    // The same images handed over on the GPU (as bench_train does) give the same logits as the crops.
    const Tensor from_device = gpu.infer(images.clone(Device::cuda(0)));
    EXPECT_EQ(std::memcmp(from_device.raw_data(), from_crops.raw_data(), from_crops.nbytes()), 0) << what;
  }
}

// After its first steps (the cuDNN searches, the workspaces and arenas growing) every training step, pass
// and SGD, with dropout drawing for new sample ids and a new step number each time, allocates no device or
// page-locked memory and blocks the host at most once, for the loss; every inference pass allocates
// nothing and waits once, for the logits it returns. From float images on the host, from uint8 crops in
// ordinary memory and from crops in page-locked memory (read by DMA in place, as the worker's are), LRN
// and batch norm, float32 and bf16, both towers on GPU 0 and, with two GPUs, one tower on each.
// (cuda_activity counts our own allocations and the waits that found the GPU busy: what cuDNN or cuBLAS
// allocate inside a call, or a synchronisation that finds the GPU already idle, is not seen.)
TEST(AlexNetCudaSteadyState, AStepAllocatesNothingAndWaitsOnlyForTheLoss) {
  const int gpus = cuda_device_count();
  if (gpus == 0) GTEST_SKIP() << "no CUDA device: " << device_summary();
  const uint64_t seed = printed_seed();
  const int64_t n = 8, side = 99;
  const Tensor images = testing::random_tensor({n, 3, side, side}, seed, -100, 100).to(DType::kF32);
  std::vector<int64_t> lab(n), ids(n);
  for (int64_t i = 0; i < n; ++i) lab[i] = (static_cast<int64_t>(seed % 10) + i) % 10;
  const Tensor labels = Tensor::from_vector<int64_t>({n}, lab);
  CropBatch crops;
  crops.crops = Tensor::empty({n, 3, side, side}, DType::kU8);
  const CounterRng pix(make_key(seed, RngPurpose::kLighting), 2);
  for (int64_t i = 0; i < crops.crops.numel(); ++i)
    crops.crops.data<uint8_t>()[i] = static_cast<uint8_t>(pix.bits(static_cast<uint64_t>(i)) & 0xff);
  crops.placement = Tensor::zeros({n, 3}, DType::kI32);
  crops.lighting = Tensor::zeros({n, 3});
  CropBatch locked = crops;
  locked.crops = Tensor::over(allocate_host(crops.crops.nbytes(), true), 0, crops.crops.shape(), DType::kU8);
  locked.crops.copy_from(crops.crops);
  ASSERT_TRUE(locked.crops.page_locked());
  std::vector<std::array<Device, kTowers>> placements = {{Device::cuda(0), Device::cuda(0)}};
  if (gpus >= 2) placements.push_back({Device::cuda(0), Device::cuda(1)});
  enum class Input { kImages, kCrops, kLockedCrops };
  const char* input_names[] = {"images", "crops", "page-locked crops"};
  for (const auto& devices : placements)
    for (const NormKind norm : {NormKind::kLrn, NormKind::kBatchNorm})
      for (const Precision precision : {Precision::kFloat32, Precision::kBf16}) {
        const PrecisionScope scope(precision);
        ModelConfig cfg = small_model();
        cfg.norm = norm;
        AlexNet net(cfg, devices);
        net.init_scaled(seed % 1000);
        net.set_input_mean(Tensor::from_vector<float>({3}, {123.68f, 116.78f, 103.94f}));
        uint64_t step = 0;
        auto train = [&](Input input) {
          for (int64_t i = 0; i < n; ++i) ids[i] = static_cast<int64_t>(step) * n + i;
          PassOptions opt;
          opt.seed = seed;
          opt.step = step++;
          opt.sample_ids = ids.data();
          Tensor logits;
          if (input == Input::kImages) net.train_pass(images, labels, opt, &logits);
          else net.train_pass(input == Input::kCrops ? crops : locked, labels, opt, &logits);
          net.sgd_step(0.001, 0.9, 0.0005);
        };
        auto infer = [&](Input input) {
          if (input == Input::kImages) net.infer(images);
          else net.infer(input == Input::kCrops ? crops : locked);
        };
        const std::string base = str_cat(devices[0].str(), "+", devices[1].str(), " ", enum_name(norm), " ",
                                         enum_name(precision));
        // Each step (or pass) on its own: what it allocated and how often it waited.
        auto check = [&](const std::string& what, int max_waits, const std::function<void()>& run) {
          const CudaActivity before = cuda_activity();
          run();
          const CudaActivity d = cuda_activity() - before;
          std::printf("%s: %lld device and %lld page-locked allocations, %lld host waits\n", what.c_str(),
                      static_cast<long long>(d.device_allocations), static_cast<long long>(d.host_allocations),
                      static_cast<long long>(d.host_waits));
          EXPECT_EQ(d.device_allocations, 0) << what;
          EXPECT_EQ(d.host_allocations, 0) << what;
          EXPECT_LE(d.host_waits, max_waits) << what;
        };
        for (const Input input : {Input::kImages, Input::kCrops, Input::kLockedCrops}) {
          const std::string what = base + " " + input_names[static_cast<int>(input)];
          for (int i = 0; i < 3; ++i) train(input);
          for (int i = 0; i < 4; ++i) check(str_cat(what, ", training step ", i + 4), 1, [&] { train(input); });
          for (int i = 0; i < 2; ++i) infer(input);
          for (int i = 0; i < 3; ++i) check(str_cat(what, ", inference pass ", i + 3), 1, [&] { infer(input); });
        }
      }
}

// The worker's evaluation from uint8 crops on the GPUs (worker/eval_chunks.h): seven rows in chunks of 3,
// the short last chunk padded to a full one, give the logits of the unpadded passes, and the towers' last
// pass saw the full chunk.
TEST(AlexNetCudaEval, APaddedLastChunkKeepsEveryRowsLogits) {
  const int gpus = cuda_device_count();
  if (gpus == 0) GTEST_SKIP() << "no CUDA device: " << device_summary();
  const PrecisionScope float32(Precision::kFloat32);
  const uint64_t seed = printed_seed();
  const int64_t rows = 7, side = 99;
  AlexNet net(small_model(), {Device::cuda(0), Device::cuda(gpus >= 2 ? 1 : 0)});
  net.init_scaled(seed % 1000);
  net.set_input_mean(Tensor::from_vector<float>({3}, {123.68f, 116.78f, 103.94f}));
  EvalData d;
  d.crops = Tensor::empty({rows, 3, side, side}, DType::kU8);
  const CounterRng pix(make_key(seed, RngPurpose::kLighting), 3);
  for (int64_t i = 0; i < d.crops.numel(); ++i)
    d.crops.data<uint8_t>()[i] = static_cast<uint8_t>(pix.bits(static_cast<uint64_t>(i)) & 0xff);
  for (int64_t i = 0; i < rows; ++i) {
    SampleAugment a;
    a.flip = i % 2 == 1;
    a.lighting = {static_cast<float>(i) - 3.0f, 1.5f, -2.0f};
    d.augment.push_back(a);
  }
  const Tensor plain = infer_in_chunks(net, d, 3, false);
  const Tensor padded = infer_in_chunks(net, d, 3, true);
  EXPECT_EQ(net.activation(0, "x").dim(0), 3) << "the last chunk was not padded";
  ASSERT_EQ(padded.shape(), plain.shape());
  EXPECT_LE(rel_l2_diff(padded, plain), 1e-4);
}

// A short training run: 20 steps of the paper's SGD with dropout on learnable data (each class its own
// pixel pattern plus noise; on the CPU the mean loss of the last 4 steps fell to 0.10-0.47 of the first
// 4's over five seeds). The GPU's loss curve follows the CPU's step by step in float32; bf16 learns as
// well (the accuracy it must not lose).
TEST(AlexNetCudaTraining, LossCurvesMatchTheCpuAndBf16KeepsUp) {
  const int gpus = cuda_device_count();
  if (gpus == 0) GTEST_SKIP() << "no CUDA device: " << device_summary();
  ModelConfig cfg;
  cfg.num_classes = 4;
  cfg.input_size = 99;
  const uint64_t seed = printed_seed();
  const int64_t n = 16, plane = 3 * 99 * 99;
  Tensor pattern = testing::random_tensor({cfg.num_classes, plane}, seed + 1, -60, 60).to(DType::kF32);
  auto batch = [&](int step, Tensor& images, Tensor& labels) {
    images = testing::random_tensor({n, 3, 99, 99}, seed + 100 + step, -30, 30).to(DType::kF32);
    std::vector<int64_t> lab(n);
    for (int64_t i = 0; i < n; ++i) {
      lab[i] = (i + step) % cfg.num_classes;
      for (int64_t j = 0; j < plane; ++j)
        images.data<float>()[i * plane + j] += pattern.data<float>()[lab[i] * plane + j];
    }
    labels = Tensor::from_vector<int64_t>({n}, lab);
  };
  const std::array<Device, kTowers> devices = {Device::cuda(0), Device::cuda(gpus >= 2 ? 1 : 0)};
  auto curve = [&](bool gpu, Precision p) {
    const PrecisionScope precision(p);
    AlexNet net(cfg, gpu ? devices : std::array<Device, kTowers>{Device::cpu(), Device::cpu()});
    net.init_scaled(seed % 1000);
    std::vector<double> losses;
    std::vector<int64_t> ids(n);
    for (int step = 0; step < 20; ++step) {
      Tensor images, labels;
      batch(step, images, labels);
      for (int64_t i = 0; i < n; ++i) ids[i] = step * n + i;
      PassOptions opt;
      opt.seed = seed;
      opt.step = static_cast<uint64_t>(step);
      opt.sample_ids = ids.data();
      losses.push_back(net.train_pass(images, labels, opt));
      net.sgd_step(0.0003, 0.9, 0.0005);
    }
    return losses;
  };
  const std::vector<double> cpu = curve(false, Precision::kFloat32), f32 = curve(true, Precision::kFloat32),
                            bf16 = curve(true, Precision::kBf16);
  for (size_t s = 0; s < cpu.size(); ++s) {
    std::printf("step %2zu  cpu %.6f  gpu float32 %.6f  gpu bf16 %.6f\n", s, cpu[s], f32[s], bf16[s]);
    EXPECT_NEAR(f32[s], cpu[s], 2e-3 * std::max(1.0, cpu[s])) << "step " << s;
  }
  auto mean4 = [](const std::vector<double>& v, bool last) {
    double sum = 0;
    for (size_t i = 0; i < 4; ++i) sum += last ? v[v.size() - 1 - i] : v[i];
    return sum / 4;
  };
  EXPECT_LT(mean4(f32, true), 0.7 * mean4(f32, false)) << "the float32 run did not learn";
  EXPECT_LT(mean4(bf16, true), 0.7 * mean4(bf16, false)) << "the bf16 run did not learn";
  EXPECT_LE(mean4(bf16, true), 1.25 * mean4(f32, true) + 0.05) << "bf16 ends higher than float32";
}

}  // namespace
}  // namespace alexnet
