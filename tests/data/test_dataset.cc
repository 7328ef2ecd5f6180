// scan_dataset (layout, flat val with the devkit's ground truth, every error naming its path) and
// synthesize_dataset (ImageNet's layout and formats, determinism, interruption detection).
#include <gtest/gtest.h>
#include <turbojpeg.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <unistd.h>

#include "core/error.h"
#include "data_service/dataset.h"
#include "data_service/image.h"
#include "data_service/synth.h"

namespace alexnet {
namespace {
namespace fs = std::filesystem;

const fs::path& base_dir() {
  static const fs::path d = fs::temp_directory_path() / ("alexnet_test_dataset_" + std::to_string(::getpid()));
  return d;
}

class CleanUp : public ::testing::Environment {
 public:
  void TearDown() override { fs::remove_all(base_dir()); }
};
const auto* const kCleanUp = ::testing::AddGlobalTestEnvironment(new CleanUp);

fs::path temp_dir(const std::string& name) {
  const fs::path d = base_dir() / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void touch(const fs::path& p, const std::string& content = "x") {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << content;
}

std::vector<uint8_t> bytes_of(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The message of the alexnet::Error that `f` throws ("" when it throws none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

SynthOptions small(const fs::path& out, uint64_t seed = 7) {
  SynthOptions o;
  o.out = out.string();
  o.classes = 4;
  o.train_per_class = 6;
  o.val_per_class = 3;
  o.seed = seed;
  return o;
}

TEST(Scan, LayoutLabelsAndOrder) {
  const fs::path d = temp_dir("layout");
  for (const char* f : {"train/n02/b.JPEG", "train/n02/a.JPEG", "train/n01/z.JPEG", "train/n03/c.jpg",
                        "val/n03/v2.JPEG", "val/n01/v1.JPEG"})
    touch(d / f);
  touch(d / "train/n02/README.txt");  // not a sample
  touch(d / "train/n02/.hidden.JPEG");
  const DatasetIndex idx = scan_dataset(d.string());
  EXPECT_EQ(idx.wnids, (std::vector<std::string>{"n01", "n02", "n03"}));
  ASSERT_EQ(idx.train.size(), 4u);
  EXPECT_EQ(idx.train[0].path, "train/n01/z.JPEG");
  EXPECT_EQ(idx.train[1].path, "train/n02/a.JPEG");
  EXPECT_EQ(idx.train[2].path, "train/n02/b.JPEG");
  EXPECT_EQ(idx.train[3].path, "train/n03/c.jpg");
  EXPECT_EQ(idx.train[0].label, 0);
  EXPECT_EQ(idx.train[2].label, 1);
  EXPECT_EQ(idx.train[3].label, 2);
  ASSERT_EQ(idx.val.size(), 2u);
  EXPECT_EQ(idx.val[0].path, "val/n01/v1.JPEG");
  EXPECT_EQ(idx.val[0].label, 0);
  EXPECT_EQ(idx.val[1].label, 2);
  EXPECT_EQ(idx.root, fs::absolute(d).lexically_normal().string());
}

TEST(Scan, ErrorsNameThePath) {
  const fs::path d = temp_dir("errors");
  const std::string missing = (d / "nope").string();
  EXPECT_NE(error_of([&] { scan_dataset(missing); }).find(missing), std::string::npos);

  touch(d / "no_train/val/n01/a.JPEG");
  EXPECT_NE(error_of([&] { scan_dataset((d / "no_train").string()); }).find((d / "no_train/train").string()),
            std::string::npos);

  touch(d / "empty/train/n01/a.JPEG");
  fs::create_directories(d / "empty/train/n02");
  const std::string e1 = error_of([&] { scan_dataset((d / "empty").string()); });
  EXPECT_NE(e1.find((d / "empty/train/n02").string()), std::string::npos) << e1;
  EXPECT_NE(e1.find("empty class folder"), std::string::npos) << e1;

  touch(d / "stray/train/n01/a.JPEG");
  touch(d / "stray/val/n09/b.JPEG");
  const std::string e2 = error_of([&] { scan_dataset((d / "stray").string()); });
  EXPECT_NE(e2.find((d / "stray/val/n09").string()), std::string::npos) << e2;
  EXPECT_NE(e2.find("not among"), std::string::npos) << e2;

  touch(d / "flat/train/n01/a.JPEG");
  touch(d / "flat/train/n02/a.JPEG");
  touch(d / "flat/val/ILSVRC2012_val_00000001.JPEG");
  touch(d / "flat/val/ILSVRC2012_val_00000002.JPEG");
  const std::string e3 = error_of([&] { scan_dataset((d / "flat").string()); });
  EXPECT_NE(e3.find((d / "flat/val").string()), std::string::npos) << e3;
  EXPECT_NE(e3.find("ground-truth"), std::string::npos) << e3;

  const fs::path gt = d / "gt.txt";
  touch(gt, "1\n2\n1\n");  // three ids for two files
  const std::string e4 = error_of([&] { scan_dataset((d / "flat").string(), gt.string()); });
  EXPECT_NE(e4.find(gt.string()), std::string::npos) << e4;
  EXPECT_NE(e4.find("3 class ids"), std::string::npos) << e4;
  touch(gt, "1\n");
  EXPECT_NE(error_of([&] { scan_dataset((d / "flat").string(), gt.string()); }).find("1 class ids"), std::string::npos);
  touch(gt, "1\n3\n");  // only two classes
  const std::string e5 = error_of([&] { scan_dataset((d / "flat").string(), gt.string()); });
  EXPECT_NE(e5.find(gt.string() + ":2"), std::string::npos) << e5;
  EXPECT_NE(e5.find("out of range"), std::string::npos) << e5;
  touch(gt, "0\n1\n");
  EXPECT_NE(error_of([&] { scan_dataset((d / "flat").string(), gt.string()); }).find(gt.string() + ":1"),
            std::string::npos);
  touch(gt, "1\nn01\n");
  EXPECT_NE(error_of([&] { scan_dataset((d / "flat").string(), gt.string()); }).find(gt.string() + ":2"),
            std::string::npos);
  const std::string absent = (d / "absent.txt").string();
  EXPECT_NE(error_of([&] { scan_dataset((d / "flat").string(), absent); }).find(absent), std::string::npos);
  touch(gt, "2\n1\n");
  const DatasetIndex ok = scan_dataset((d / "flat").string(), gt.string());
  ASSERT_EQ(ok.val.size(), 2u);
  EXPECT_EQ(ok.val[0].path, "val/ILSVRC2012_val_00000001.JPEG");
  EXPECT_EQ(ok.val[0].label, 1);
  EXPECT_EQ(ok.val[1].label, 0);
}

TEST(Synth, LayoutAndFormats) {
  const fs::path d = temp_dir("synth");
  const SynthSummary s = synthesize_dataset(small(d));
  EXPECT_FALSE(s.up_to_date);
  EXPECT_EQ(s.train, 24);
  EXPECT_EQ(s.val, 12);
  EXPECT_TRUE(fs::exists(d / ".synth-complete"));
  EXPECT_FALSE(fs::exists(d / ".synth-incomplete"));

  const DatasetIndex idx = scan_dataset(d.string());
  ASSERT_EQ(idx.wnids.size(), 4u);
  std::map<int, int> train_per_class, val_per_class;
  for (const auto& e : idx.train) ++train_per_class[e.label];
  for (const auto& e : idx.val) ++val_per_class[e.label];
  for (int c = 0; c < 4; ++c) {
    EXPECT_EQ(idx.wnids[c], synth_wnid(c));
    EXPECT_EQ(idx.wnids[c].size(), 9u);
    EXPECT_EQ(idx.wnids[c].substr(0, 2), "n0");
    EXPECT_EQ(train_per_class[c], 6);
    EXPECT_EQ(val_per_class[c], 3);
  }
  EXPECT_EQ(idx.train[0].path, "train/" + idx.wnids[0] + "/" + idx.wnids[0] + "_1.JPEG");
  std::set<std::string> val_names;
  for (const auto& e : idx.val) val_names.insert(fs::path(e.path).filename().string());
  for (int j = 1; j <= 12; ++j) {
    char name[40];
    std::snprintf(name, sizeof(name), "ILSVRC2012_val_%08d.JPEG", j);
    EXPECT_TRUE(val_names.count(name)) << name;
  }

  // File magic and JPEG headers, independent of the file names.
  int png = 0, gray = 0, cmyk = 0, rgb420 = 0;
  std::set<std::pair<int, int>> sizes;
  int portrait = 0, landscape = 0, small_side = 0, large = 0;
  tjhandle tj = tjInitDecompress();
  for (const auto* list : {&idx.train, &idx.val}) {
    for (const auto& e : *list) {
      const std::vector<uint8_t> b = bytes_of(d / e.path);
      ASSERT_GT(b.size(), 8u);
      if (b[0] == 0x89 && b[1] == 'P' && b[2] == 'N' && b[3] == 'G') {
        ++png;
        EXPECT_EQ(sniff_image(b.data(), b.size()), ImageKind::kPng);
        EXPECT_EQ(fs::path(e.path).extension(), ".JPEG");
        continue;
      }
      ASSERT_TRUE(b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) << e.path;
      int w, h, sub, cs;
      ASSERT_EQ(tjDecompressHeader3(tj, b.data(), b.size(), &w, &h, &sub, &cs), 0) << e.path;
      sizes.insert({w, h});
      portrait += h > w;
      landscape += w > h;
      small_side += std::min(w, h) < 256;
      large += std::min(w, h) > 400;
      if (cs == TJCS_GRAY) ++gray;
      else if (cs == TJCS_CMYK || cs == TJCS_YCCK) ++cmyk;
      else if (sub == TJSAMP_420) ++rgb420;
      ASSERT_TRUE(decode_image(b.data(), b.size(), e.path).ok()) << e.path;
    }
  }
  tjDestroy(tj);
  EXPECT_EQ(png, 1);
  EXPECT_EQ(cmyk, 1);
  EXPECT_GE(gray, 1);
  EXPECT_GT(rgb420, 36 / 2);  // mostly RGB 4:2:0
  EXPECT_GE(sizes.size(), 4u);
  EXPECT_GT(portrait, 0);
  EXPECT_GT(landscape, 0);
  EXPECT_EQ(gray, s.grayscale);
  (void)small_side;
  (void)large;

  // A rerun with the same options writes nothing; with other options it replaces the dataset.
  EXPECT_TRUE(synthesize_dataset(small(d)).up_to_date);
  SynthOptions more = small(d);
  more.train_per_class = 7;
  EXPECT_EQ(synthesize_dataset(more).train, 28);
  EXPECT_EQ(scan_dataset(d.string()).train.size(), 28u);
}

TEST(Synth, SizesCoverSmallAndLargeImages) {
  // Over a larger set the size table shows: images under 256 on the shorter side and above ImageNet's 500.
  const fs::path d = temp_dir("sizes");
  SynthOptions o = small(d);
  o.classes = 3;
  o.train_per_class = 40;
  o.val_per_class = 0;
  synthesize_dataset(o);
  int small_side = 0, large = 0;
  tjhandle tj = tjInitDecompress();
  for (const auto& e : scan_dataset(d.string()).train) {
    const std::vector<uint8_t> b = bytes_of(d / e.path);
    int w, h, sub, cs;
    if (tjDecompressHeader3(tj, b.data(), b.size(), &w, &h, &sub, &cs) != 0) continue;  // the PNG
    small_side += std::min(w, h) < 256;
    large += std::max(w, h) > 500;
  }
  tjDestroy(tj);
  EXPECT_GT(small_side, 0);
  EXPECT_GT(large, 0);
}

TEST(Synth, DeterministicFromTheSeed) {
  const fs::path a = temp_dir("det_a"), b = temp_dir("det_b"), c = temp_dir("det_c");
  SynthOptions oa = small(a), ob = small(b), oc = small(c, 8);
  oa.threads = 1;
  ob.threads = 2;
  synthesize_dataset(oa);
  synthesize_dataset(ob);
  synthesize_dataset(oc);
  const DatasetIndex ia = scan_dataset(a.string()), ib = scan_dataset(b.string()), ic = scan_dataset(c.string());
  ASSERT_EQ(ia.train.size(), ib.train.size());
  ASSERT_EQ(ia.val.size(), ib.val.size());
  int differ = 0;
  for (size_t i = 0; i < ia.train.size(); ++i) {
    EXPECT_EQ(ia.train[i].path, ib.train[i].path);
    EXPECT_EQ(bytes_of(a / ia.train[i].path), bytes_of(b / ib.train[i].path)) << ia.train[i].path;
    differ += bytes_of(a / ia.train[i].path) != bytes_of(c / ic.train[i].path);
  }
  for (size_t i = 0; i < ia.val.size(); ++i) {
    EXPECT_EQ(ia.val[i].path, ib.val[i].path);
    EXPECT_EQ(ia.val[i].label, ib.val[i].label);
    EXPECT_EQ(bytes_of(a / ia.val[i].path), bytes_of(b / ib.val[i].path));
  }
  EXPECT_EQ(differ, static_cast<int>(ia.train.size()));  // another seed changes every picture
}

TEST(Synth, FlatValWithGroundTruthMatchesFolders) {
  const fs::path folders = temp_dir("val_folders"), flat = temp_dir("val_flat");
  synthesize_dataset(small(folders));
  SynthOptions of = small(flat);
  of.flat_val = true;
  synthesize_dataset(of);
  const fs::path gt = flat / kValGroundTruthName;
  ASSERT_TRUE(fs::exists(gt));
  EXPECT_NE(error_of([&] { scan_dataset(flat.string()); }).find("ground-truth"), std::string::npos);
  const DatasetIndex a = scan_dataset(folders.string()), b = scan_dataset(flat.string(), gt.string());
  // Same seed: the same picture and class for each validation number in both layouts.
  std::map<std::string, std::pair<int, std::vector<uint8_t>>> by_name;
  for (const auto& e : a.val) by_name[fs::path(e.path).filename().string()] = {e.label, bytes_of(folders / e.path)};
  ASSERT_EQ(b.val.size(), a.val.size());
  for (const auto& e : b.val) {
    EXPECT_EQ(fs::path(e.path).parent_path().string(), "val");
    const auto it = by_name.find(fs::path(e.path).filename().string());
    ASSERT_NE(it, by_name.end()) << e.path;
    EXPECT_EQ(e.label, it->second.first) << e.path;
    EXPECT_EQ(bytes_of(flat / e.path), it->second.second) << e.path;
  }
  // A relative ground-truth path is also looked up under the dataset root.
  EXPECT_EQ(scan_dataset(flat.string(), kValGroundTruthName).val.size(), a.val.size());
}

TEST(Synth, InterruptedRunIsDetectedAndRepaired) {
  const fs::path d = temp_dir("interrupted");
  synthesize_dataset(small(d));
  fs::remove(d / ".synth-complete");
  touch(d / ".synth-incomplete");
  fs::remove(d / "train" / synth_wnid(1) / (synth_wnid(1) + "_3.JPEG"));
  const std::string e = error_of([&] { scan_dataset(d.string()); });
  EXPECT_NE(e.find(".synth-incomplete"), std::string::npos) << e;
  EXPECT_NE(e.find(d.string()), std::string::npos) << e;
  EXPECT_FALSE(synthesize_dataset(small(d)).up_to_date);
  EXPECT_EQ(scan_dataset(d.string()).train.size(), 24u);
}

TEST(Synth, ClassesAreLearnable) {
  // Nearest class mean on 16x16 thumbnails of the rescaled images, the crudest classifier there is,
  // must beat chance (10%) by far; AlexNet then has an easy start.
  const fs::path d = temp_dir("learnable");
  SynthOptions o = small(d);
  o.classes = 10;
  o.train_per_class = 20;
  o.val_per_class = 5;
  synthesize_dataset(o);
  const DatasetIndex idx = scan_dataset(d.string());
  auto features = [&](const DatasetEntry& e) {
    const Image im = resize_shorter_and_center_crop(decode_image_file((d / e.path).string()).value(), 16);
    return std::vector<double>(im.rgb.begin(), im.rgb.end());
  };
  std::vector<std::vector<double>> mean(10, std::vector<double>(16 * 16 * 3, 0.0));
  for (const auto& e : idx.train) {
    const auto f = features(e);
    for (size_t k = 0; k < f.size(); ++k) mean[e.label][k] += f[k] / 20;
  }
  int correct = 0;
  for (const auto& e : idx.val) {
    const auto f = features(e);
    int best = -1;
    double best_d = 0;
    for (int c = 0; c < 10; ++c) {
      double dist = 0;
      for (size_t k = 0; k < f.size(); ++k) dist += (f[k] - mean[c][k]) * (f[k] - mean[c][k]);
      if (best < 0 || dist < best_d) best = c, best_d = dist;
    }
    correct += best == e.label;
  }
  EXPECT_GE(correct, 25) << "of 50 validation images";
}

TEST(Synth, RefusesAForeignFolder) {
  const fs::path d = temp_dir("foreign");
  touch(d / "precious.txt");
  const std::string e = error_of([&] { synthesize_dataset(small(d)); });
  EXPECT_NE(e.find(d.string()), std::string::npos) << e;
  EXPECT_TRUE(fs::exists(d / "precious.txt"));
}

}  // namespace
}  // namespace alexnet
