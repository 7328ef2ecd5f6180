// alexnet-tool grad and step with --device cuda against --device cpu on the same checkpoint and batch
// (fresh random pixels each run): logits, loss, every gradient, the stepped weights and momentum. The tool
// is found through $ALEXNET_TOOL (scripts/gpu-check.sh sets it) or at the build's path. Label gpu: skips
// without a device.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "checkpoint/h5file.h"
#include "core/config.h"
#include "core/device.h"
#include "model/alexnet.h"
#include "tests/common/gradcheck.h"
#include "tests/common/expect.h"
#include "tests/common/seed.h"

namespace alexnet {
namespace {

namespace fs = std::filesystem;

using testing::below_a_pooling;
using testing::rel_l2_diff;

std::string tool_path() {
  const char* env = std::getenv("ALEXNET_TOOL");
  return env && *env ? env : ALEXNET_TOOL_DEFAULT;
}

void run(const std::string& cmd) {
  std::printf("+ %s\n", cmd.c_str());
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

TEST(ToolCuda, GradAndStepMatchTheCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device: " << device_summary();
  const fs::path dir = fs::temp_directory_path() / ("alexnet_tool_cuda_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const uint64_t seed = testing::printed_seed();
  Config cfg = default_config({"model.num_classes=10", "model.input_size=99", "train.init=scaled"});
  AlexNet net(cfg.model);
  net.init_scaled(seed % 1000);
  CheckpointData ck;
  ck.config_yaml = config_to_yaml(cfg);
  ck.model = net.state();
  const std::string w = (dir / "w.h5").string(), b = (dir / "b.h5").string();
  write_checkpoint(w, ck);
  const int64_t n = 6;
  {
    H5File f(b, H5File::Mode::kCreate);
    f.write_tensor("/images", testing::random_tensor({n, 3, 99, 99}, seed, -100, 100).to(DType::kF32));
    std::vector<int64_t> lab(n);
    for (int64_t i = 0; i < n; ++i) lab[i] = (static_cast<int64_t>(seed % 10) + 3 * i) % 10;
    f.write_tensor("/labels", Tensor::from_vector<int64_t>({n}, lab));
  }
  const std::string tool = tool_path();
  for (const char* device : {"cpu", "cuda"}) {
    const std::string d = device;
    run(tool + " grad --checkpoint " + w + " --batch " + b + " --out " + (dir / ("g_" + d + ".h5")).string() +
        " --device " + d);
    run(tool + " step --checkpoint " + w + " --batch " + b + " --lr 0.01 --out " + (dir / ("s_" + d + ".h5")).string() +
        " --device " + d);
  }
  H5File gc((dir / "g_cpu.h5").string(), H5File::Mode::kRead), gg((dir / "g_cuda.h5").string(), H5File::Mode::kRead);
  EXPECT_NEAR(gg.read_scalar("/loss"), gc.read_scalar("/loss"), 1e-4 * std::max(1.0, std::fabs(gc.read_scalar("/loss"))));
  EXPECT_LE(rel_l2_diff(gg.read_tensor_as("/logits", DType::kF32), gc.read_tensor_as("/logits", DType::kF32)), 1e-4);
  for (const ParamInfo& p : net.table()) {
    if (!p.trainable) continue;
    const std::string name = "/grad/" + p.name;
    EXPECT_LE(rel_l2_diff(gg.read_tensor_as(name, DType::kF32), gc.read_tensor_as(name, DType::kF32)),
              below_a_pooling(p.name) ? 3e-2 : 1e-3)
        << name;
  }
  const CheckpointData sc = read_checkpoint((dir / "s_cpu.h5").string()),
                       sg = read_checkpoint((dir / "s_cuda.h5").string());
  for (const auto& [name, t] : sc.model) EXPECT_LE(rel_l2_diff(sg.model.at(name), t), below_a_pooling(name) ? 1e-3 : 1e-4) << name;
  for (const auto& [name, t] : sc.momentum)
    EXPECT_LE(rel_l2_diff(sg.momentum.at(name), t), below_a_pooling(name) ? 3e-2 : 1e-3) << "momentum " << name;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace alexnet
