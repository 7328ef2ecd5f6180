// prepare_dataset and the prepared folder: statistics against an independent PIL + numpy computation,
// resumption equal to an uninterrupted run, bad files, --strict, shards and the SampleSource.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <sys/wait.h>
#include <unistd.h>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "data_service/dataset.h"
#include "data_service/image.h"
#include "data_service/prepared.h"
#include "data_service/synth.h"

namespace alexnet {
namespace {
namespace fs = std::filesystem;

const fs::path& base_dir() {
  static const fs::path d = fs::temp_directory_path() / ("alexnet_test_prepare_" + std::to_string(::getpid()));
  return d;
}

class CleanUp : public ::testing::Environment {
 public:
  void TearDown() override { fs::remove_all(base_dir()); }
};
const auto* const kCleanUp = ::testing::AddGlobalTestEnvironment(new CleanUp);

fs::path fresh(const std::string& name) {
  const fs::path d = base_dir() / name;
  fs::remove_all(d);
  fs::create_directories(d.parent_path());
  return d;
}

std::vector<uint8_t> bytes_of(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const fs::path& p, const std::vector<uint8_t>& b) {
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

// 4 classes x 12 train + 3 val, shared by the tests (made once).
const fs::path& dataset() {
  static const fs::path d = [] {
    const fs::path p = fresh("data");
    SynthOptions o;
    o.out = p.string();
    o.classes = 4;
    o.train_per_class = 12;
    o.val_per_class = 3;
    o.seed = 11;
    synthesize_dataset(o);
    return p;
  }();
  return d;
}

PrepareOptions options(const fs::path& data, const fs::path& out, bool shards) {
  PrepareOptions o;
  o.data_root = data.string();
  o.out = out.string();
  o.shards = shards;
  o.chunk_images = 8;  // several chunks, so resumption has something to skip
  o.threads = 2;
  o.progress = false;
  return o;
}

void expect_same_stats(const ImageStats& a, const ImageStats& b) {
  EXPECT_EQ(a.mean_image, b.mean_image);
  EXPECT_EQ(a.channel_mean, b.channel_mean);
  EXPECT_EQ(a.covariance, b.covariance);
  EXPECT_EQ(a.eigenvalues, b.eigenvalues);
  EXPECT_EQ(a.eigenvectors, b.eigenvectors);
}

TEST(Prepare, StatisticsMatchPilAndNumpy) {
  const fs::path out = fresh("stats");
  const std::string summary = prepare_dataset(options(dataset(), out, false));
  EXPECT_NE(summary.find("statistics from 48 images"), std::string::npos) << summary;
  const ImageStats s = read_image_stats(out.string());

  const fs::path ref = base_dir() / "stats_ref.bin";
  const std::string cmd = std::string(ALEXNET_TEST_PYTHON) + " " + ALEXNET_SOURCE_DIR +
                          "/tests/data/prepare_stats_ref.py " + dataset().string() + " " + ref.string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const std::vector<uint8_t> raw = bytes_of(ref);
  const size_t n_mean = 3 * 256 * 256;
  ASSERT_EQ(raw.size(), (n_mean + 3 + 9 + 3 + 9 + 1) * sizeof(double));
  std::vector<double> r(raw.size() / sizeof(double));
  std::memcpy(r.data(), raw.data(), raw.size());
  EXPECT_EQ(r.back(), 48.0);

  // Independent: PIL decodes (libjpeg-turbo through PIL, PIL's CMYK and PNG conversions, draft for DCT
  // scaling) and rescales, numpy sums in float64 and eigh() decomposes. Our decode and rescale are made to
  // equal PIL's pixel for pixel, so the only differences left are float32 storage of the mean image and
  // float64 rounding; a rescale that drifted from PIL's by one grey level in a few pixels would show here.
  double max_mean = 0;
  for (size_t i = 0; i < n_mean; ++i) max_mean = std::max(max_mean, std::fabs(s.mean_image[i] - r[i]));
  EXPECT_LT(max_mean, 1e-4);
  const double* cm = &r[n_mean];
  const double* cov = cm + 3;
  const double* val = cov + 9;
  const double* vec = val + 3;
  for (int c = 0; c < 3; ++c) EXPECT_NEAR(s.channel_mean[c], cm[c], 1e-9);
  for (int i = 0; i < 9; ++i) EXPECT_NEAR(s.covariance[i], cov[i], 1e-9 * std::fabs(cov[0])) << i;
  for (int j = 0; j < 3; ++j) {
    EXPECT_NEAR(s.eigenvalues[j], val[j], 1e-9 * val[0]) << j;
    EXPECT_GE(s.eigenvalues[j], j < 2 ? s.eigenvalues[j + 1] : 0.0);
    double dot = 0, norm = 0;
    for (int i = 0; i < 3; ++i) {
      dot += s.eigenvectors[i * 3 + j] * vec[i * 3 + j];
      norm += s.eigenvectors[i * 3 + j] * s.eigenvectors[i * 3 + j];
    }
    EXPECT_NEAR(norm, 1.0, 1e-12);
    EXPECT_NEAR(dot, 1.0, 1e-9) << "eigenvector " << j;  // same sign convention: components sum >= 0
  }
  // The decomposition reproduces the covariance: C = V diag(lambda) V^T.
  for (int i = 0; i < 3; ++i)
    for (int k = 0; k < 3; ++k) {
      double c = 0;
      for (int j = 0; j < 3; ++j) c += s.eigenvectors[i * 3 + j] * s.eigenvalues[j] * s.eigenvectors[k * 3 + j];
      EXPECT_NEAR(c, s.covariance[i * 3 + k], 1e-9 * s.eigenvalues[0]);
    }
  // The channel means are the mean image averaged over pixels.
  for (int c = 0; c < 3; ++c) {
    double m = 0;
    for (int i = 0; i < 256 * 256; ++i) m += s.mean_image[c * 256 * 256 + i];
    EXPECT_NEAR(m / (256 * 256), s.channel_mean[c], 1e-4);
  }
}

TEST(Prepare, IndexRoundTripAndIncompleteFolder) {
  const fs::path out = fresh("index");
  prepare_dataset(options(dataset(), out, false));
  const DatasetIndex a = scan_dataset(dataset().string()), b = read_prepared_index(out.string());
  EXPECT_EQ(a.root, b.root);
  EXPECT_EQ(a.wnids, b.wnids);
  ASSERT_EQ(a.train.size(), b.train.size());
  ASSERT_EQ(a.val.size(), b.val.size());
  for (size_t i = 0; i < a.train.size(); ++i) {
    EXPECT_EQ(a.train[i].path, b.train[i].path);
    EXPECT_EQ(a.train[i].label, b.train[i].label);
  }
  for (size_t i = 0; i < a.val.size(); ++i) EXPECT_EQ(a.val[i].label, b.val[i].label);
  fs::remove(out / "index.txt");
  try {
    read_prepared_index(out.string());
    ADD_FAILURE() << "an incomplete prepared folder was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find((out / "index.txt").string()), std::string::npos) << e.what();
  }
}

TEST(Prepare, ResumeEqualsAnUninterruptedRun) {
  const fs::path whole = fresh("whole"), resumed = fresh("resumed");
  prepare_dataset(options(dataset(), whole, true));
  PrepareOptions o = options(dataset(), resumed, true);
  o.threads = 1;  // also: the thread count does not matter
  prepare_dataset(o);
  // Interrupt: no completion mark, one part missing, one shard corrupted, one part truncated.
  fs::remove(resumed / "index.txt");
  fs::remove(resumed / "parts/train-00001.part");
  std::vector<uint8_t> shard = bytes_of(resumed / "shards/train-00003.shard");
  shard[shard.size() / 2] ^= 0x40;
  write_bytes(resumed / "shards/train-00003.shard", shard);
  std::vector<uint8_t> part = bytes_of(resumed / "parts/val-00000.part");
  part.resize(part.size() / 2);
  write_bytes(resumed / "parts/val-00000.part", part);
  const std::string summary = prepare_dataset(options(dataset(), resumed, true));
  // 6 train chunks + 2 val chunks; three were damaged.
  EXPECT_NE(summary.find("5 of 8 chunks reused"), std::string::npos) << summary;
  expect_same_stats(read_image_stats(whole.string()), read_image_stats(resumed.string()));
  EXPECT_EQ(bytes_of(whole / "index.txt"), bytes_of(resumed / "index.txt"));
  for (const auto& e : fs::directory_iterator(whole / "shards"))
    EXPECT_EQ(bytes_of(e.path()), bytes_of(resumed / "shards" / e.path().filename())) << e.path();
  for (const auto& e : fs::directory_iterator(whole / "parts"))
    EXPECT_EQ(bytes_of(e.path()), bytes_of(resumed / "parts" / e.path().filename())) << e.path();

  // A finished folder is verified and reused whole; a changed input file redoes its chunk.
  EXPECT_NE(prepare_dataset(options(dataset(), resumed, true)).find("8 of 8 chunks reused"), std::string::npos);
  const DatasetIndex idx = scan_dataset(dataset().string());
  const fs::path touched = dataset() / idx.train[20].path;
  fs::last_write_time(touched, fs::last_write_time(touched) + std::chrono::seconds(5));
  EXPECT_NE(prepare_dataset(options(dataset(), resumed, true)).find("7 of 8 chunks reused"), std::string::npos);
  // Another statistics sample invalidates every train chunk (without shards, only those it reads).
  PrepareOptions subset = options(dataset(), fresh("subset"), false);
  subset.stats_images = 10;
  EXPECT_NE(prepare_dataset(subset).find("statistics from 10 images"), std::string::npos);
}

TEST(Prepare, BadFilesAreSkippedCountedAndMarked) {
  const fs::path data = fresh("bad_data");
  fs::copy(dataset(), data, fs::copy_options::recursive);
  const DatasetIndex clean = scan_dataset(data.string());
  const std::string cls = clean.wnids[1];
  const std::vector<uint8_t> good = bytes_of(data / clean.train[0].path);
  write_bytes(data / "train" / cls / "a_empty.JPEG", {});
  write_bytes(data / "train" / cls / "b_truncated.JPEG", std::vector<uint8_t>(good.begin(), good.begin() + good.size() / 2));
  write_bytes(data / "train" / cls / "c_text.JPEG", std::vector<uint8_t>{'h', 'e', 'l', 'l', 'o', '\n'});
  const fs::path out = fresh("bad_out");
  const std::string summary = prepare_dataset(options(data, out, true));
  EXPECT_NE(summary.find("3 bad files"), std::string::npos) << summary;
  EXPECT_NE(summary.find("statistics from 48 images"), std::string::npos) << summary;
  std::ifstream listed(out / "bad_files.txt");
  std::string text((std::istreambuf_iterator<char>(listed)), std::istreambuf_iterator<char>());
  for (const char* name : {"a_empty.JPEG", "b_truncated.JPEG", "c_text.JPEG"})
    EXPECT_NE(text.find(name), std::string::npos) << name;
  // Bad files leave the statistics as they were without them.
  expect_same_stats(read_image_stats(out.string()), [&] {
    const fs::path o2 = fresh("bad_ref");
    prepare_dataset(options(dataset(), o2, false));
    return read_image_stats(o2.string());
  }());

  const DatasetIndex idx = read_prepared_index(out.string());
  const auto src = open_sample_source(idx, out.string());
  int marked = 0;
  for (size_t i = 0; i < idx.train.size(); ++i) {
    const auto r = src->read(false, static_cast<int64_t>(i));
    if (r.ok()) continue;
    ++marked;
    EXPECT_NE(r.status().message().find(idx.train[i].path), std::string::npos) << r.status().message();
  }
  EXPECT_EQ(marked, 3);

  // --strict: the first bad file (in index order) is fatal and named.
  PrepareOptions strict = options(data, fresh("strict_out"), false);
  strict.strict = true;
  try {
    prepare_dataset(strict);
    ADD_FAILURE() << "strict prepare accepted bad files";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find((data / "train" / cls / "a_empty.JPEG").string()), std::string::npos) << e.what();
  }
  // The same through the command line: exit status 1 and the file named on stderr.
  const fs::path err = base_dir() / "strict.err";
  const std::string cmd = std::string(ALEXNET_TOOL) + " prepare --data " + data.string() + " --out " +
                          fresh("strict_cli").string() + " --strict --threads 2 2> " + err.string() + " > /dev/null";
  const int rc = std::system(cmd.c_str());
  EXPECT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 1) << cmd;
  std::ifstream e(err);
  const std::string stderr_text((std::istreambuf_iterator<char>(e)), std::istreambuf_iterator<char>());
  EXPECT_NE(stderr_text.find("a_empty.JPEG"), std::string::npos) << stderr_text;
}

TEST(Prepare, ShardsHoldTheRescaledImages) {
  const fs::path out = fresh("shards");
  prepare_dataset(options(dataset(), out, true));
  const DatasetIndex idx = read_prepared_index(out.string());
  const auto src = open_sample_source(idx, out.string());
  ASSERT_TRUE(src->pre_resized());
  for (bool val : {false, true}) {
    const auto& list = val ? idx.val : idx.train;
    for (size_t i = 0; i < list.size(); ++i) {
      const auto bytes = src->read(val, static_cast<int64_t>(i));
      ASSERT_TRUE(bytes.ok()) << bytes.status().message();
      const Image shard = decode_image(bytes.value().data(), bytes.value().size(), src->name(val, i)).value();
      ASSERT_EQ(shard.width, 256);
      ASSERT_EQ(shard.height, 256);
      const Image orig = resize_shorter_and_center_crop(decode_image_file(idx.root + "/" + list[i].path, 256).value(), 256);
      double sum = 0;
      int worst = 0;
      for (size_t k = 0; k < orig.rgb.size(); ++k) {
        const int d = std::abs(static_cast<int>(shard.rgb[k]) - orig.rgb[k]);
        sum += d;
        worst = std::max(worst, d);
      }
      // Quality 95 at 4:4:4: small average error, no gross one.
      EXPECT_LT(sum / orig.rgb.size(), 2.5) << list[i].path;
      EXPECT_LT(worst, 64) << list[i].path;
      EXPECT_EQ(src->name(val, i), idx.root + "/" + list[i].path);
    }
  }
  // Shards decode faster than the originals: they are smaller and exactly 256x256.
  uintmax_t shard_bytes = 0, orig_bytes = 0;
  for (const auto& e : fs::directory_iterator(out / "shards")) shard_bytes += fs::file_size(e.path());
  for (const auto& e : idx.train) orig_bytes += fs::file_size(idx.root + "/" + e.path);
  for (const auto& e : idx.val) orig_bytes += fs::file_size(idx.root + "/" + e.path);
  EXPECT_LT(shard_bytes, orig_bytes);

  // Without shards the source hands out the original files' bytes.
  const fs::path plain = fresh("plain");
  prepare_dataset(options(dataset(), plain, false));
  const auto orig_src = open_sample_source(idx, plain.string());
  EXPECT_FALSE(orig_src->pre_resized());
  EXPECT_EQ(orig_src->read(true, 2).value(), bytes_of(idx.root + "/" + idx.val[2].path));
  EXPECT_FALSE(open_sample_source(idx, "")->pre_resized());
}

TEST(Prepare, StatsFileRoundTrip) {
  ImageStats s;
  s.side = 4;
  s.mean_image.resize(3 * 16);
  for (size_t i = 0; i < s.mean_image.size(); ++i) s.mean_image[i] = 0.5f * static_cast<float>(i);
  s.channel_mean = {1, 2, 3};
  s.covariance = {4, 1, 0, 1, 5, 2, 0, 2, 6};
  s.eigenvalues = {7, 5, 3};
  s.eigenvectors = {1, 0, 0, 0, 1, 0, 0, 0, 1};
  const fs::path p = fresh("roundtrip.h5");
  write_image_stats(p.string(), s);
  const ImageStats r = read_image_stats(p.string());
  EXPECT_EQ(r.side, 4);
  expect_same_stats(s, r);
}

}  // namespace
}  // namespace alexnet
