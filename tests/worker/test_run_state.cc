// Unit tests of the worker's learning-rate schedules (plateau, step, linear scaling with warm-up) and of
// its run state: the /train group, the model comparison for resumes, the checkpoint folder and checksums.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <unistd.h>

#include <hdf5.h>

#include "checkpoint/checkpoint.h"
#include "checkpoint/h5file.h"
#include "core/config.h"
#include "core/error.h"
#include "worker/run_state.h"
#include "worker/schedule.h"

namespace alexnet {
namespace {

namespace fs = std::filesystem;

TrainConfig train_config() {
  TrainConfig t;
  t.lr = 0.01;
  t.batch_size = 128;
  t.lr_decay = 0.1;
  return t;
}

TEST(LrScheduler, PlateauDropsAfterPatienceAtMostMaxDrops) {
  TrainConfig t = train_config();
  t.lr_schedule = LrSchedule::kPlateau;
  t.plateau_patience = 2;
  t.max_lr_drops = 2;
  LrScheduler s(t, 10);
  ScheduleState st;
  EXPECT_DOUBLE_EQ(s.lr(0, 0, st), 0.01);
  EXPECT_FALSE(s.on_evaluation(0.5, st));  // first evaluation: an improvement
  EXPECT_FALSE(s.on_evaluation(0.5, st));  // one without improvement: patience 2 not reached
  EXPECT_EQ(st.bad_evaluations, 1);
  EXPECT_TRUE(s.on_evaluation(0.6, st));   // second: drop
  EXPECT_EQ(st.drops, 1);
  EXPECT_NEAR(s.lr(100, 10, st), 0.001, 1e-15);
  EXPECT_FALSE(s.on_evaluation(0.4, st));  // improvement resets the count
  EXPECT_EQ(st.bad_evaluations, 0);
  EXPECT_DOUBLE_EQ(st.best_error, 0.4);
  EXPECT_FALSE(s.on_evaluation(0.4, st));
  EXPECT_TRUE(s.on_evaluation(0.4, st));
  EXPECT_EQ(st.drops, 2);
  EXPECT_NEAR(s.lr(100, 10, st), 1e-4, 1e-16);
  // max_lr_drops reached: no further drop however long it stalls.
  for (int i = 0; i < 6; ++i) EXPECT_FALSE(s.on_evaluation(0.9, st));
  EXPECT_EQ(st.drops, 2);
  EXPECT_NEAR(s.lr(1000, 100, st), 1e-4, 1e-16);
}

TEST(LrScheduler, StepScheduleDropsAtGivenEpochs) {
  TrainConfig t = train_config();
  t.lr_schedule = LrSchedule::kStep;
  t.lr_steps = {3, 5};
  LrScheduler s(t, 10);
  ScheduleState st;
  EXPECT_DOUBLE_EQ(s.lr(0, 0, st), 0.01);
  EXPECT_DOUBLE_EQ(s.lr(29, 2, st), 0.01);
  EXPECT_NEAR(s.lr(30, 3, st), 0.001, 1e-15);
  EXPECT_NEAR(s.lr(49, 4, st), 0.001, 1e-15);
  EXPECT_NEAR(s.lr(50, 5, st), 1e-4, 1e-16);
  EXPECT_NEAR(s.lr(500, 50, st), 1e-4, 1e-16);
  // The step schedule ignores evaluations.
  EXPECT_FALSE(s.on_evaluation(0.9, st));
  EXPECT_FALSE(s.on_evaluation(0.9, st));
  EXPECT_EQ(st.drops, 0);
}

TEST(LrScheduler, LinearScalingWithWarmUp) {
  // Goyal et al. 2017: lr for batch 256 scaled by 1024/256 = 4, reached linearly over 2 epochs of 10 steps.
  TrainConfig t = train_config();
  t.lr_schedule = LrSchedule::kConstant;
  t.lr = 0.1;
  t.batch_size = 1024;
  t.linear_scaling_reference = 256;
  t.warmup_epochs = 2;
  LrScheduler s(t, 10);
  ScheduleState st;
  EXPECT_DOUBLE_EQ(s.scaled_lr(), 0.4);
  EXPECT_DOUBLE_EQ(s.lr(0, 0, st), 0.1);
  EXPECT_NEAR(s.lr(10, 1, st), 0.25, 1e-12);  // halfway
  EXPECT_NEAR(s.lr(19, 1, st), 0.1 + 0.3 * 19.0 / 20.0, 1e-12);
  EXPECT_DOUBLE_EQ(s.lr(20, 2, st), 0.4);     // warm-up over
  EXPECT_DOUBLE_EQ(s.lr(1000, 100, st), 0.4);
  for (int i = 1; i < 20; ++i) EXPECT_LT(s.lr(i - 1, 0, st), s.lr(i, 0, st)) << "step " << i;
  // Without warm-up the scaled rate applies from the first step.
  t.warmup_epochs = 0;
  LrScheduler flat(t, 10);
  EXPECT_DOUBLE_EQ(flat.lr(0, 0, st), 0.4);
}

// A fresh empty folder under the test's temporary directory.
std::string temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("alexnet_worker_test_" + std::to_string(::getpid())) / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

Tensor filled(const Shape& shape, float start) {
  Tensor t = Tensor::empty(shape, DType::kF32);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = start + 0.25f * static_cast<float>(i);
  return t;
}

CheckpointData small_data(int64_t step) {
  CheckpointData d;
  d.config_yaml = config_to_yaml(default_config());
  d.model["conv1/weight"] = filled({64, 3, 4, 4}, static_cast<float>(step));
  d.model["conv1/bias"] = filled({64}, 1.0f);
  d.momentum["conv1/weight"] = filled({64, 3, 4, 4}, -1.0f);
  d.momentum["conv1/bias"] = filled({64}, 0.5f);
  d.step = step;
  TrainState s;
  s.step = step;
  put_train_state(s, d);
  return d;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path);
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return s;
}

TEST(CheckpointFolder, SaveKeepsNewestAndMarksLatest) {
  const std::string dir = temp_dir("folder");
  CheckpointFolder folder(dir, 2);
  EXPECT_TRUE(folder.candidates().empty());
  EXPECT_EQ(folder.path_for_step(1200), (fs::path(dir) / "step-00001200.h5").string());
  for (int64_t step : {3, 6, 9}) {
    const std::string path = folder.save(small_data(step), step);
    EXPECT_EQ(path, folder.path_for_step(step));
    EXPECT_EQ(read_all(dir + "/latest"), "step-" + std::string(step < 10 ? "0000000" : "000000") +
                                             std::to_string(step) + ".h5\n");
  }
  EXPECT_FALSE(fs::exists(folder.path_for_step(3)));
  EXPECT_TRUE(fs::exists(folder.path_for_step(6)));
  EXPECT_TRUE(fs::exists(folder.path_for_step(9)));
  EXPECT_EQ(folder.candidates(), (std::vector<std::string>{folder.path_for_step(9), folder.path_for_step(6)}));
  // A file written after the marker (a crash between the two writes) comes after the one the marker names.
  fs::copy_file(folder.path_for_step(9), folder.path_for_step(12));
  EXPECT_EQ(folder.candidates(), (std::vector<std::string>{folder.path_for_step(9), folder.path_for_step(12),
                                                           folder.path_for_step(6)}));
  // No marker: by descending step.
  fs::remove(dir + "/latest");
  EXPECT_EQ(folder.candidates(), (std::vector<std::string>{folder.path_for_step(12), folder.path_for_step(9),
                                                           folder.path_for_step(6)}));
}

TEST(RunState, TrainStateRoundTrip) {
  const std::string dir = temp_dir("state");
  TrainState s;
  s.step = 12345678901;
  s.epoch = 7;
  s.epoch_step = 13;
  s.seed = 42;
  s.global_batch = 256;
  s.workers = 4;
  s.schedule.drops = 2;
  s.schedule.best_error = 0.375;
  s.schedule.bad_evaluations = 1;
  s.interval.loss = 6.25;
  s.interval.correct = 17;
  s.interval.images = 96;
  s.interval.steps = 3;
  s.history = "{\"kind\": \"train\", \"step\": 1}\n{\"kind\": \"eval\", \"step\": 2}\n";
  CheckpointData d = small_data(5);
  put_train_state(s, d);
  const std::string path = dir + "/ckpt.h5";
  write_checkpoint(path, d);
  const TrainState r = read_train_state(path);
  EXPECT_EQ(r.step, s.step);
  EXPECT_EQ(r.epoch, s.epoch);
  EXPECT_EQ(r.epoch_step, s.epoch_step);
  EXPECT_EQ(r.seed, s.seed);
  EXPECT_EQ(r.global_batch, s.global_batch);
  EXPECT_EQ(r.workers, s.workers);
  EXPECT_EQ(r.schedule.drops, s.schedule.drops);
  EXPECT_EQ(r.schedule.best_error, s.schedule.best_error);
  EXPECT_EQ(r.schedule.bad_evaluations, s.schedule.bad_evaluations);
  EXPECT_EQ(r.interval.loss, s.interval.loss);
  EXPECT_EQ(r.interval.correct, s.interval.correct);
  EXPECT_EQ(r.interval.images, s.interval.images);
  EXPECT_EQ(r.interval.steps, s.interval.steps);
  EXPECT_EQ(r.history, s.history);
  // A file without /train is refused, naming the file.
  CheckpointData bare = small_data(1);
  bare.extra_tensors.clear();
  bare.extra_strings.clear();
  write_checkpoint(dir + "/bare.h5", bare);
  try {
    read_train_state(dir + "/bare.h5");
    FAIL() << "no error for a checkpoint without /train";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bare.h5"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("/train"), std::string::npos) << e.what();
  }
}

TEST(RunState, ModelDifferenceNamesTheKey) {
  const Config a = default_config({"model.norm=lrn", "train.lr=0.01"});
  EXPECT_EQ(model_difference(a, default_config({"model.norm=lrn", "train.lr=0.5"})), "");
  const std::string d = model_difference(a, default_config({"model.norm=batchnorm"}));
  EXPECT_NE(d.find("model.norm"), std::string::npos) << d;
  EXPECT_NE(d.find("lrn"), std::string::npos) << d;
  EXPECT_NE(d.find("batchnorm"), std::string::npos) << d;
  const std::string c = model_difference(default_config({"model.num_classes=10"}),
                                         default_config({"model.num_classes=20"}));
  EXPECT_NE(c.find("model.num_classes"), std::string::npos) << c;
}

TEST(RunState, VerifyDetectsAFlippedByte) {
  const std::string dir = temp_dir("verify");
  const std::string path = dir + "/ckpt.h5";
  write_checkpoint(path, small_data(4));
  verify_checkpoint(path);  // intact
  // Offset of the (contiguous) data of /model/conv1/weight in the file.
  haddr_t offset = HADDR_UNDEF;
  {
    hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    hid_t ds = H5Dopen2(f, "/model/conv1/weight", H5P_DEFAULT);
    ASSERT_GE(ds, 0);
    offset = H5Dget_offset(ds);
    H5Dclose(ds);
    H5Fclose(f);
  }
  ASSERT_NE(offset, HADDR_UNDEF);
  {
    std::fstream io(path, std::ios::in | std::ios::out | std::ios::binary);
    io.seekg(static_cast<std::streamoff>(offset) + 101);
    char c = 0;
    io.read(&c, 1);
    c = static_cast<char>(c ^ 0x10);
    io.seekp(static_cast<std::streamoff>(offset) + 101);
    io.write(&c, 1);
  }
  try {
    verify_checkpoint(path);
    FAIL() << "a flipped byte went unnoticed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("conv1/weight"), std::string::npos) << e.what();
  }
  // open_resume_point refuses it too.
  EXPECT_THROW(open_resume_point(path), Error);
}

}  // namespace
}  // namespace alexnet
