// Checkpoint layout v1 and H5File: round trips, weights-only files, atomic replacement, every read
// error with its message, and interoperability with h5py in both directions.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "checkpoint/checkpoint.h"
#include "checkpoint/h5file.h"

#ifndef ALEXNET_TEST_PYTHON
#define ALEXNET_TEST_PYTHON "/usr/bin/python3"
#endif
#ifndef ALEXNET_CHECKPOINT_TEST_DIR
#define ALEXNET_CHECKPOINT_TEST_DIR "."
#endif

namespace alexnet {
namespace {

namespace fs = std::filesystem;

const std::string kConfig = "model:\n  num_classes: 10\n  norm: lrn  # é ü, UTF-8\n";

// Element i is i * 0.5 - 1 + offset: exact in float32, the same pattern h5py_interop.py uses.
Tensor pattern(const Shape& shape, float offset) {
  Tensor t = Tensor::empty(shape, DType::kF32);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<float>(i) * 0.5f - 1.0f + offset;
  return t;
}

bool same(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  return std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

// The tensors of h5py_interop.py.
CheckpointData small_checkpoint() {
  CheckpointData d;
  d.config_yaml = kConfig;
  d.model["conv1/weight"] = pattern({4, 3, 2, 2}, 0.0f);
  d.model["conv1/bias"] = pattern({4}, 1.0f);
  d.model["norm1/running_var"] = pattern({4}, 2.0f);
  d.momentum["conv1/weight"] = pattern({4, 3, 2, 2}, 3.0f);
  d.step = 12345678901;  // beyond 32 bits
  d.epoch = 3;
  return d;
}

// Message check: `fn` throws alexnet::Error whose text contains every part.
template <class Fn>
void expect_error(Fn fn, std::initializer_list<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "no error thrown; expected one mentioning '" << *parts.begin() << "'";
  } catch (const Error& e) {
    std::string msg = e.what();
    for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("alexnet_ckpt_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

TEST_F(CheckpointTest, RoundTripKeepsEverythingBitExact) {
  CheckpointData d = small_checkpoint();
  d.model["fc8/weight"] = pattern({10, 7}, -5.0f);
  d.model["fc8/bias"] = Tensor::zeros({10});
  d.momentum["fc8/bias"] = pattern({10}, 0.25f);
  const std::string path = file("ckpt.h5");
  write_checkpoint(path, d);
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  CheckpointData r = read_checkpoint(path);
  EXPECT_EQ(r.config_yaml, d.config_yaml);
  EXPECT_EQ(r.step, d.step);
  EXPECT_EQ(r.epoch, d.epoch);
  ASSERT_EQ(r.model.size(), d.model.size());
  for (const auto& [k, t] : d.model) {
    ASSERT_TRUE(r.model.count(k)) << k;
    EXPECT_TRUE(same(r.model.at(k), t)) << k;
  }
  ASSERT_EQ(r.momentum.size(), d.momentum.size());
  for (const auto& [k, t] : d.momentum) EXPECT_TRUE(same(r.momentum.at(k), t)) << k;

  // The layout on disk is exactly v1: root attributes and the three fixed groups.
  H5File f(path, H5File::Mode::kRead);
  EXPECT_EQ(f.get_attr_string("/", "format"), "alexnet-checkpoint");
  EXPECT_EQ(f.get_attr_int("/", "format_version"), 1);
  EXPECT_EQ(f.list("/"), (std::vector<std::string>{"config", "model", "optimizer"}));
  EXPECT_EQ(f.datasets("/optimizer"),
            (std::vector<std::string>{"/optimizer/momentum/conv1/weight", "/optimizer/momentum/fc8/bias"}));
  EXPECT_EQ(f.dataset_shape("/model/conv1/weight"), (Shape{4, 3, 2, 2}));
}

TEST_F(CheckpointTest, WeightsOnlyHasNoOptimizerGroupAndReadsBack) {
  CheckpointData d = small_checkpoint();
  d.momentum.clear();
  const std::string path = file("w.h5");
  write_checkpoint(path, d);
  {
    H5File f(path, H5File::Mode::kRead);
    EXPECT_FALSE(f.exists("/optimizer"));
  }
  CheckpointData r = read_checkpoint(path);
  EXPECT_TRUE(r.momentum.empty());
  EXPECT_EQ(r.model.size(), 3u);
}

TEST_F(CheckpointTest, BareFileWithOnlyConfigAndModelReads) {
  const std::string path = file("bare.h5");
  {
    H5File f(path, H5File::Mode::kCreate);
    f.write_string("/config", "model: {num_classes: 5}\n");
    f.write_tensor("/model/fc8/bias", pattern({5}, 0.0f));
  }
  CheckpointData r = read_checkpoint(path);
  EXPECT_EQ(r.config_yaml, "model: {num_classes: 5}\n");
  EXPECT_EQ(r.step, 0);
  EXPECT_EQ(r.epoch, 0);
  ASSERT_EQ(r.model.size(), 1u);
  EXPECT_TRUE(same(r.model.at("fc8/bias"), pattern({5}, 0.0f)));
}

TEST_F(CheckpointTest, OverwriteReplacesAndFailedWriteKeepsOldFile) {
  const std::string path = file("ckpt.h5");
  CheckpointData a = small_checkpoint();
  write_checkpoint(path, a);
  CheckpointData b = small_checkpoint();
  b.step = 99;
  b.model["conv1/bias"] = pattern({4}, 40.0f);
  write_checkpoint(path, b);
  EXPECT_EQ(read_checkpoint(path).step, 99);

  // A refused write (a float64 tensor) leaves the previous checkpoint untouched.
  CheckpointData bad = small_checkpoint();
  bad.model["zz/weight"] = Tensor::zeros({3}, DType::kF64);
  expect_error([&] { write_checkpoint(path, bad); }, {path, "zz/weight", "float64"});
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  CheckpointData r = read_checkpoint(path);
  EXPECT_EQ(r.step, 99);
  EXPECT_TRUE(same(r.model.at("conv1/bias"), pattern({4}, 40.0f)));

  // So does a write whose file cannot be created (the temporary name is taken by a directory).
  fs::create_directories(path + ".tmp/blocker");
  expect_error([&] { write_checkpoint(path, a); }, {"cannot write checkpoint '" + path + "'", "cannot create the file"});
  EXPECT_EQ(read_checkpoint(path).step, 99);
  fs::remove_all(path + ".tmp");

  // A stale temporary file from an earlier crash does not get in the way.
  { std::ofstream(path + ".tmp") << "garbage"; }
  write_checkpoint(path, a);
  EXPECT_EQ(read_checkpoint(path).step, a.step);
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

TEST_F(CheckpointTest, WriteIntoMissingDirectoryNamesThePath) {
  const std::string path = file("no/such/dir/ckpt.h5");
  expect_error([&] { write_checkpoint(path, small_checkpoint()); },
               {path, "folder '" + file("no/such/dir") + "' does not exist"});
}

TEST_F(CheckpointTest, FailedWriteKeepsTheOldFileAndLeavesNoTemporary) {
  const std::string path = file("keep.h5");
  CheckpointData old = small_checkpoint();
  write_checkpoint(path, old);
  // A writer that fails half-way (after creating datasets) must not replace the file.
  expect_error([&] {
    write_hdf5_atomically(path, "checkpoint", [](H5File& f) {
      f.write_string("/config", "partial");
      ALEXNET_FAIL("simulated failure");
    });
  }, {path, "simulated failure"});
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  CheckpointData back = read_checkpoint(path);
  EXPECT_EQ(back.config_yaml, old.config_yaml);
  EXPECT_EQ(back.step, old.step);
}

TEST_F(CheckpointTest, WriteRejectsBadNamesAndMismatchedMomentum) {
  CheckpointData d = small_checkpoint();
  d.model["/abs"] = pattern({1}, 0.0f);
  expect_error([&] { write_checkpoint(file("a.h5"), d); }, {"invalid tensor name '/abs'"});
  d = small_checkpoint();
  d.momentum["conv1/bias"] = pattern({5}, 0.0f);
  expect_error([&] { write_checkpoint(file("b.h5"), d); }, {"conv1/bias", "[5]", "[4]"});
  d = small_checkpoint();
  d.momentum["fc9/weight"] = pattern({5}, 0.0f);
  expect_error([&] { write_checkpoint(file("c.h5"), d); }, {"fc9/weight", "no parameter"});
  EXPECT_FALSE(fs::exists(file("c.h5")));
}

TEST_F(CheckpointTest, ReadErrorsNameFileAndProblem) {
  const std::string missing = file("missing.h5");
  expect_error([&] { read_checkpoint(missing); }, {missing, "does not exist"});

  const std::string text = file("text.h5");
  { std::ofstream(text) << "model:\n  num_classes: 10\n"; }
  expect_error([&] { read_checkpoint(text); }, {text, "not an HDF5 file"});

  const std::string empty = file("empty.h5");
  { std::ofstream o(empty); }
  expect_error([&] { read_checkpoint(empty); }, {empty, "not an HDF5 file"});

  expect_error([&] { read_checkpoint(dir_.string()); }, {dir_.string(), "directory"});

  // Each case: a good checkpoint, then one thing broken.
  const std::string path = file("c.h5");
  auto broken = [&](auto breaker) {
    write_checkpoint(path, small_checkpoint());
    H5File f(path, H5File::Mode::kReadWrite);
    breaker(f);
  };
  broken([](H5File& f) { f.set_attr_string("/", "format", "caffe-model"); });
  expect_error([&] { read_checkpoint(path); }, {path, "not an alexnet checkpoint", "'caffe-model'"});

  broken([](H5File& f) { f.set_attr_int("/", "format_version", 2); });
  expect_error([&] { read_checkpoint(path); }, {path, "unsupported format_version 2", "reads version 1"});

  broken([](H5File& f) { f.set_attr_int("/", "format", 1); });
  expect_error([&] { read_checkpoint(path); }, {path, "format", "not a string"});

  const std::string no_config = file("no_config.h5");
  {
    H5File f(no_config, H5File::Mode::kCreate);
    f.set_attr_string("/", "format", "alexnet-checkpoint");
    f.set_attr_int("/", "format_version", 1);
    f.write_tensor("/model/fc8/bias", pattern({5}, 0.0f));
  }
  expect_error([&] { read_checkpoint(no_config); }, {no_config, "no /config"});

  const std::string no_model = file("no_model.h5");
  {
    H5File f(no_model, H5File::Mode::kCreate);
    f.write_string("/config", kConfig);
    f.write_tensor("/weights/fc8/bias", pattern({5}, 0.0f));
  }
  expect_error([&] { read_checkpoint(no_model); }, {no_model, "no /model"});

  const std::string model_dataset = file("model_dataset.h5");
  {
    H5File f(model_dataset, H5File::Mode::kCreate);
    f.write_string("/config", kConfig);
    f.write_tensor("/model", pattern({5}, 0.0f));
  }
  expect_error([&] { read_checkpoint(model_dataset); }, {model_dataset, "no /model group"});

  broken([](H5File& f) { f.write_tensor("/config", pattern({3}, 0.0f)); });
  expect_error([&] { read_checkpoint(path); }, {path, "/config", "not a string", "float32"});

  broken([](H5File& f) { f.write_tensor("/model/conv1/weight", Tensor::zeros({4, 3, 2, 2}, DType::kF64)); });
  expect_error([&] { read_checkpoint(path); }, {path, "/model/conv1/weight", "float64", "float32"});

  broken([](H5File& f) { f.write_tensor("/optimizer/momentum/conv1/weight", Tensor::zeros({48}, DType::kI64)); });
  expect_error([&] { read_checkpoint(path); }, {path, "/optimizer/momentum/conv1/weight", "int64"});

  broken([](H5File& f) { f.write_tensor("/optimizer/momentum/conv1/weight", pattern({48}, 0.0f)); });
  expect_error([&] { read_checkpoint(path); }, {path, "conv1/weight", "[48]", "[4, 3, 2, 2]"});
}

TEST_F(CheckpointTest, TruncatedFileIsReported) {
  const std::string path = file("trunc.h5");
  CheckpointData d = small_checkpoint();
  d.model["fc6/weight"] = pattern({256, 256}, 0.0f);
  write_checkpoint(path, d);
  fs::resize_file(path, fs::file_size(path) / 2);
  expect_error([&] { read_checkpoint(path); }, {path});
}

// ---- H5File -------------------------------------------------------------------------------------

TEST_F(CheckpointTest, H5FileTensorsOfEveryDtypeRoundTrip) {
  const std::string path = file("t.h5");
  Tensor f64 = pattern({2, 3}, 0.0f).to(DType::kF64);
  Tensor i64 = Tensor::from_vector<int64_t>({3}, {-1, 0, int64_t{1} << 40});
  Tensor i32 = Tensor::from_vector<int32_t>({2, 1}, {-7, 7});
  Tensor u8 = Tensor::from_vector<uint8_t>({4}, {0, 1, 128, 255});
  Tensor scalar = Tensor::from_vector<float>({}, {2.5f});
  Tensor empty = Tensor::empty({0, 4}, DType::kF32);
  {
    H5File f(path, H5File::Mode::kCreate);
    f.write_tensor("a/f64", f64);
    f.write_tensor("/a/i64", i64);
    f.write_tensor("/a/b/i32", i32);
    f.write_tensor("/u8", u8);
    f.write_tensor("/scalar", scalar);
    f.write_tensor("/empty", empty);
    f.write_scalar("/s/lr", 0.125);
    f.write_scalar_int("/s/n", -42);
    f.write_string("/s/name", "");
    f.set_attr_int("/a/f64", "count", 5);
    f.set_attr_string("/a", "note", "tower 0");
    f.set_attr_int("/a/f64", "count", 6);  // replaces
    f.write_tensor("/u8", u8);             // replaces
    f.flush();
  }
  H5File f(path, H5File::Mode::kRead);
  EXPECT_TRUE(same(f.read_tensor("/a/f64"), f64));
  EXPECT_TRUE(same(f.read_tensor("/a/i64"), i64));
  EXPECT_TRUE(same(f.read_tensor("/a/b/i32"), i32));
  EXPECT_TRUE(same(f.read_tensor("/u8"), u8));
  EXPECT_TRUE(same(f.read_tensor("/scalar"), scalar));
  EXPECT_EQ(f.read_tensor("/empty").shape(), (Shape{0, 4}));
  EXPECT_EQ(f.read_scalar("/s/lr"), 0.125);
  EXPECT_EQ(f.read_scalar_int("/s/n"), -42);
  EXPECT_EQ(f.read_scalar("/s/n"), -42.0);
  EXPECT_EQ(f.read_string("/s/name"), "");
  EXPECT_EQ(f.get_attr_int("/a/f64", "count"), 6);
  EXPECT_EQ(f.get_attr_string("/a", "note"), "tower 0");
  EXPECT_TRUE(f.has_attr("/a", "note"));
  EXPECT_FALSE(f.has_attr("/a", "other"));

  // Conversion on read, with a shape check.
  Tensor as32 = f.read_tensor_as("/a/i64", DType::kF64);
  EXPECT_EQ(as32.data<double>()[2], static_cast<double>(int64_t{1} << 40));
  Shape want{2, 3};
  EXPECT_TRUE(same(f.read_tensor_as("/a/f64", DType::kF32, &want), pattern({2, 3}, 0.0f)));
  Shape wrong{3, 2};
  expect_error([&] { f.read_tensor_as("/a/f64", DType::kF32, &wrong); }, {path, "/a/f64", "[2, 3]", "[3, 2]"});

  EXPECT_TRUE(f.exists("a/b"));
  EXPECT_TRUE(f.is_group("/a/b"));
  EXPECT_FALSE(f.is_group("/a/b/i32"));
  EXPECT_FALSE(f.exists("/a/b/i32/x"));
  EXPECT_FALSE(f.exists("/nothing/here"));
  EXPECT_TRUE(f.exists("/"));
  EXPECT_EQ(f.list("/a"), (std::vector<std::string>{"b", "f64", "i64"}));
  EXPECT_EQ(f.datasets("/a"), (std::vector<std::string>{"/a/b/i32", "/a/f64", "/a/i64"}));
  EXPECT_EQ(f.datasets().size(), 9u);
}

TEST_F(CheckpointTest, H5FileErrorsNameObjectAndProblem) {
  const std::string path = file("e.h5");
  {
    H5File f(path, H5File::Mode::kCreate);
    f.write_tensor("/g/x", pattern({2}, 0.0f));
    f.write_string("/g/s", "text");
    f.set_attr_string("/", "name", "x");
    expect_error([&] { f.write_tensor("/g", pattern({1}, 0.0f)); }, {path, "/g", "is a group"});
    expect_error([&] { f.write_tensor("/g/y", Tensor::zeros({2}, DType::kBF16)); }, {"/g/y", "bfloat16"});
    expect_error([&] { f.set_attr_int("/nope", "a", 1); }, {path, "/nope", "does not exist"});
  }
  H5File f(path, H5File::Mode::kRead);
  expect_error([&] { f.read_tensor("/g/missing"); }, {path, "/g/missing", "does not exist"});
  expect_error([&] { f.read_tensor("/g"); }, {path, "/g", "is a group"});
  expect_error([&] { f.read_tensor("/g/s"); }, {path, "/g/s", "string", "not numbers"});
  expect_error([&] { f.read_string("/g/x"); }, {path, "/g/x", "not a string", "float32"});
  expect_error([&] { f.read_scalar("/g/x"); }, {path, "/g/x", "[2]", "scalar"});
  expect_error([&] { f.read_scalar_int("/g/x"); }, {path, "/g/x", "integer"});
  expect_error([&] { f.get_attr_int("/", "name"); }, {path, "attribute 'name'", "string", "integer"});
  expect_error([&] { f.get_attr_int("/", "absent"); }, {path, "attribute 'absent'", "does not exist"});
  expect_error([&] { f.list("/g/x"); }, {path, "/g/x", "not a group"});
  // Read-only: HDF5's own failure comes back as our message, with its detail.
  H5File& writable = const_cast<H5File&>(f);
  expect_error([&] { writable.write_tensor("/g/z", pattern({1}, 0.0f)); }, {path, "/g/z", "cannot create the dataset"});
}

TEST_F(CheckpointTest, HDF5DoesNotPrintItsErrorStack) {
  // The failure must reach us only as an exception; HDF5's automatic printer stays off and the
  // handler installed before the call is restored afterwards.
  H5E_auto2_t before = nullptr;
  void* before_data = nullptr;
  H5Eget_auto2(H5E_DEFAULT, &before, &before_data);
  ::testing::internal::CaptureStderr();
  const std::string text = file("text.h5");
  { std::ofstream(text) << "not hdf5"; }
  expect_error([&] { read_checkpoint(text); }, {"not an HDF5 file"});
  expect_error([&] { H5File(file("x/y.h5"), H5File::Mode::kCreate); }, {"cannot create the file"});
  std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(err.find("HDF5-DIAG"), std::string::npos) << err;
  H5E_auto2_t after = nullptr;
  void* after_data = nullptr;
  H5Eget_auto2(H5E_DEFAULT, &after, &after_data);
  EXPECT_EQ(after, before);
  EXPECT_EQ(after_data, before_data);
}

// ---- h5py interoperability ----------------------------------------------------------------------

int run_python(const std::string& args) {
  std::string cmd = std::string(ALEXNET_TEST_PYTHON) + " " + ALEXNET_CHECKPOINT_TEST_DIR + "/h5py_interop.py " + args;
  int rc = std::system(cmd.c_str());
  return (rc != -1 && WIFEXITED(rc)) ? WEXITSTATUS(rc) : -1;
}

bool have_h5py() {
  std::string cmd = std::string(ALEXNET_TEST_PYTHON) + " -c 'import h5py, numpy' >/dev/null 2>&1";
  int rc = std::system(cmd.c_str());
  return rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 0;
}

TEST_F(CheckpointTest, ReadsWhatH5pyWrites) {
  if (!have_h5py()) GTEST_SKIP() << ALEXNET_TEST_PYTHON << " has no h5py";
  ASSERT_EQ(run_python("write " + dir_.string()), 0);
  CheckpointData want = small_checkpoint();

  CheckpointData r = read_checkpoint(file("from_h5py.h5"));
  EXPECT_EQ(r.config_yaml, kConfig);
  EXPECT_EQ(r.step, 7);
  EXPECT_EQ(r.epoch, 2);
  ASSERT_EQ(r.model.size(), want.model.size());
  for (const auto& [k, t] : want.model) EXPECT_TRUE(r.model.count(k) && same(r.model.at(k), t)) << k;
  ASSERT_EQ(r.momentum.size(), 1u);
  EXPECT_TRUE(same(r.momentum.at("conv1/weight"), want.momentum.at("conv1/weight")));

  CheckpointData w = read_checkpoint(file("weights_only_h5py.h5"));
  EXPECT_EQ(w.config_yaml, kConfig);  // fixed-length byte string
  EXPECT_EQ(w.step, 0);
  EXPECT_TRUE(w.momentum.empty());
  EXPECT_EQ(w.model.size(), 3u);
}

TEST_F(CheckpointTest, H5pyReadsWhatWeWrite) {
  if (!have_h5py()) GTEST_SKIP() << ALEXNET_TEST_PYTHON << " has no h5py";
  const std::string path = file("ours.h5");
  write_checkpoint(path, small_checkpoint());
  EXPECT_EQ(run_python("check " + path), 0);
  // The checker is not vacuous: a different checkpoint fails it.
  CheckpointData other = small_checkpoint();
  other.model["conv1/bias"] = pattern({4}, 1.5f);
  write_checkpoint(path, other);
  EXPECT_EQ(run_python("check " + path + " 2>/dev/null"), 1);
}

}  // namespace
}  // namespace alexnet
