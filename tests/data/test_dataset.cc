// scan_dataset (layout, flat val with a ground truth of wnids or of devkit ids plus the synsets file, every
// error naming its path and line) and
// synthesize_dataset (ImageNet's layout and formats, determinism, interruption detection).
#include <gtest/gtest.h>
#include <turbojpeg.h>

#include <algorithm>
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

std::vector<std::string> lines_of(const fs::path& p) {
  std::vector<std::string> out;
  std::ifstream in(p);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
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
}

// A flat val/ of two files over the classes n01, n02 (labels 0, 1).
fs::path flat_two_classes(const std::string& name) {
  const fs::path d = temp_dir(name);
  touch(d / "train/n01/a.JPEG");
  touch(d / "train/n02/a.JPEG");
  touch(d / "val/ILSVRC2012_val_00000001.JPEG");
  touch(d / "val/ILSVRC2012_val_00000002.JPEG");
  return d;
}

std::vector<int32_t> val_labels(const DatasetIndex& idx) {
  std::vector<int32_t> out;
  for (const auto& e : idx.val) out.push_back(e.label);
  return out;
}

TEST(Scan, GroundTruthOfWnidsNeedsNoSynsets) {
  const fs::path d = flat_two_classes("gt_wnids");
  const fs::path gt = d / "gt.txt";
  touch(gt, "n02\nn01\n\n");
  const DatasetIndex ok = scan_dataset(d.string(), gt.string());
  ASSERT_EQ(ok.val.size(), 2u);
  EXPECT_EQ(ok.val[0].path, "val/ILSVRC2012_val_00000001.JPEG");
  EXPECT_EQ(val_labels(ok), (std::vector<int32_t>{1, 0}));

  touch(gt, "n02\nn09\n");
  const std::string e1 = error_of([&] { scan_dataset(d.string(), gt.string()); });
  EXPECT_NE(e1.find(gt.string() + ":2"), std::string::npos) << e1;
  EXPECT_NE(e1.find("not among"), std::string::npos) << e1;
  touch(gt, "n02\n2\n");  // one form per file
  EXPECT_NE(error_of([&] { scan_dataset(d.string(), gt.string()); }).find(gt.string() + ":2"), std::string::npos);
  touch(gt, "n02\n\nn01\n");  // entry k must be line k
  EXPECT_NE(error_of([&] { scan_dataset(d.string(), gt.string()); }).find(gt.string() + ":2"), std::string::npos);
  touch(gt, "n02\nn01 n02\n");
  EXPECT_NE(error_of([&] { scan_dataset(d.string(), gt.string()); }).find(gt.string() + ":2"), std::string::npos);
  touch(gt, "n02\nn01\nn01\n");
  const std::string e2 = error_of([&] { scan_dataset(d.string(), gt.string()); });
  EXPECT_NE(e2.find(gt.string()), std::string::npos) << e2;
  EXPECT_NE(e2.find("3 wnids"), std::string::npos) << e2;
}

TEST(Scan, GroundTruthOfIdsGoesThroughTheSynsets) {
  const fs::path d = flat_two_classes("gt_ids");
  const fs::path gt = d / "gt.txt", syn = d / "synsets.txt";
  touch(gt, "2\n1\n");
  // Ids alone cannot be mapped: the devkit's order is not the sorted one.
  const std::string e0 = error_of([&] { scan_dataset(d.string(), gt.string()); });
  EXPECT_NE(e0.find(gt.string()), std::string::npos) << e0;
  EXPECT_NE(e0.find("data.val_synsets"), std::string::npos) << e0;

  // id 1 = n02, id 2 = n01: the labels are not id - 1.
  touch(syn, "n02\nn01\n");
  EXPECT_EQ(val_labels(scan_dataset(d.string(), gt.string(), syn.string())), (std::vector<int32_t>{0, 1}));
  touch(syn, "n01\nn02\n");
  EXPECT_EQ(val_labels(scan_dataset(d.string(), gt.string(), syn.string())), (std::vector<int32_t>{1, 0}));
  // A ground truth of wnids ignores the synsets file.
  touch(gt, "n01\nn01\n");
  EXPECT_EQ(val_labels(scan_dataset(d.string(), gt.string(), syn.string())), (std::vector<int32_t>{0, 0}));
  // Relative paths are also looked up under the dataset root.
  touch(gt, "1\n1\n");
  EXPECT_EQ(val_labels(scan_dataset(d.string(), "gt.txt", "synsets.txt")), (std::vector<int32_t>{0, 0}));
  const std::string absent = (d / "absent.txt").string();
  EXPECT_NE(error_of([&] { scan_dataset(d.string(), gt.string(), absent); }).find(absent), std::string::npos);
}

TEST(Scan, GroundTruthOfIdsErrorsNameFileAndLine) {
  const fs::path d = flat_two_classes("gt_id_errors");
  const fs::path gt = d / "gt.txt", syn = d / "synsets.txt";
  auto scan_error = [&](const std::string& gt_text, const std::string& syn_text) {
    touch(gt, gt_text);
    touch(syn, syn_text);
    return error_of([&] { scan_dataset(d.string(), gt.string(), syn.string()); });
  };
  auto expect_in = [](const std::string& e, const std::string& what) {
    EXPECT_NE(e.find(what), std::string::npos) << "'" << what << "' not in: " << e;
  };
  const std::string good_syn = "n02\nn01\n";
  // The ground truth.
  std::string e = scan_error("1\n2\n1\n", good_syn);  // three ids for two files
  expect_in(e, gt.string());
  expect_in(e, "3 class ids");
  expect_in(scan_error("1\n", good_syn), "1 class ids");
  e = scan_error("1\n3\n", good_syn);  // only two classes
  expect_in(e, gt.string() + ":2");
  expect_in(e, "out of range");
  expect_in(scan_error("0\n1\n", good_syn), gt.string() + ":1");
  expect_in(scan_error("-1\n1\n", good_syn), gt.string() + ":1");
  expect_in(scan_error("1\nn01\n", good_syn), gt.string() + ":2");
  // The synsets file.
  e = scan_error("1\n2\n", "n02\nn02\n");
  expect_in(e, syn.string() + ":2");
  expect_in(e, "twice");
  e = scan_error("1\n2\n", "n02\nn07\n");
  expect_in(e, syn.string() + ":2");
  expect_in(e, "not among");
  expect_in(scan_error("1\n2\n", "n02\nn01\nn03\n"), syn.string() + ":3");
  e = scan_error("1\n1\n", "n02\n");
  expect_in(e, syn.string());
  expect_in(e, "1 wnids");
  expect_in(e, "missing: n01");
  expect_in(scan_error("1\n2\n", "n02\n\nn01\n"), syn.string() + ":2");
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
  const fs::path gt = flat / kValGroundTruthName, syn = flat / kValSynsetsName;
  ASSERT_TRUE(fs::exists(gt));
  ASSERT_TRUE(fs::exists(syn));
  EXPECT_FALSE(fs::exists(folders / kValSynsetsName));
  EXPECT_NE(error_of([&] { scan_dataset(flat.string()); }).find("ground-truth"), std::string::npos);
  // Like the devkit's: integer ids, which need the synsets file.
  const std::string e = error_of([&] { scan_dataset(flat.string(), gt.string()); });
  EXPECT_NE(e.find(gt.string()), std::string::npos) << e;
  EXPECT_NE(e.find("data.val_synsets"), std::string::npos) << e;

  const DatasetIndex a = scan_dataset(folders.string()), b = scan_dataset(flat.string(), gt.string(), syn.string());
  // The synsets file lists every class once, not in sorted order, so the ids are not sorted positions.
  const std::vector<std::string> listed = lines_of(syn);
  ASSERT_EQ(listed.size(), a.wnids.size());
  EXPECT_FALSE(std::is_sorted(listed.begin(), listed.end()));
  EXPECT_EQ(std::set<std::string>(listed.begin(), listed.end()), std::set<std::string>(a.wnids.begin(), a.wnids.end()));
  std::vector<int> ids;
  for (const std::string& line : lines_of(gt)) ids.push_back(std::stoi(line));
  ASSERT_EQ(ids.size(), b.val.size());
  int id_minus_one_differs = 0;
  for (size_t i = 0; i < ids.size(); ++i) id_minus_one_differs += ids[i] - 1 != b.val[i].label;
  EXPECT_GT(id_minus_one_differs, 0);

  // Same seed: the same picture and class for each validation number in both layouts.
  std::map<std::string, std::pair<int, std::vector<uint8_t>>> by_name;
  for (const auto& v : a.val) by_name[fs::path(v.path).filename().string()] = {v.label, bytes_of(folders / v.path)};
  ASSERT_EQ(b.val.size(), a.val.size());
  std::string wnid_lines;
  for (const auto& v : b.val) {
    EXPECT_EQ(fs::path(v.path).parent_path().string(), "val");
    const auto it = by_name.find(fs::path(v.path).filename().string());
    ASSERT_NE(it, by_name.end()) << v.path;
    EXPECT_EQ(v.label, it->second.first) << v.path;
    EXPECT_EQ(bytes_of(flat / v.path), it->second.second) << v.path;
    wnid_lines += a.wnids[it->second.first] + "\n";
  }
  // Relative paths are also looked up under the dataset root.
  EXPECT_EQ(val_labels(scan_dataset(flat.string(), kValGroundTruthName, kValSynsetsName)), val_labels(b));
  // The same ground truth written as wnids needs no synsets file.
  const fs::path gt_wnids = base_dir() / "val_flat_wnids.txt";
  touch(gt_wnids, wnid_lines);
  EXPECT_EQ(val_labels(scan_dataset(flat.string(), gt_wnids.string())), val_labels(b));
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
