// scan_dataset: lists an ImageNet-layout folder with std::filesystem (directory entries only, no per-file
// stat), class folders in parallel, and checks the layout with errors that name the offending path.
#include "data_service/dataset.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "core/error.h"
#include "core/log.h"

namespace alexnet {
namespace fs = std::filesystem;
namespace {

bool hidden(const std::string& name) { return !name.empty() && name[0] == '.'; }

// ImageNet's files are all *.JPEG (one of them a PNG inside); other names (README, .DS_Store, tarballs)
// are not samples.
bool image_name(const std::string& name) {
  const size_t dot = name.rfind('.');
  if (dot == std::string::npos || hidden(name)) return false;
  std::string ext = name.substr(dot + 1);
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return ext == "jpeg" || ext == "jpg" || ext == "png";
}

struct Listing {
  std::vector<std::string> dirs;   // sorted names of sub-folders
  std::vector<std::string> files;  // sorted names of image files
  int64_t ignored = 0;             // other files
};

// One pass over a folder. directory_entry caches the type from readdir (d_type), so this costs no stat
// per file on the usual file systems.
Listing list_folder(const fs::path& dir) {
  Listing out;
  std::error_code ec;
  fs::directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec);
  ALEXNET_CHECK(!ec, dir.string(), ": cannot list folder: ", ec.message());
  for (const fs::directory_entry& e : it) {
    const std::string name = e.path().filename().string();
    if (hidden(name)) continue;
    std::error_code type_ec;
    if (e.is_directory(type_ec)) out.dirs.push_back(name);
    else if (image_name(name)) out.files.push_back(name);
    else ++out.ignored;
  }
  std::sort(out.dirs.begin(), out.dirs.end());
  std::sort(out.files.begin(), out.files.end());
  return out;
}

// Lists <split>/<wnid>/ for every wnid in `folders`, in parallel (each listing is a few syscalls that
// wait on the file system; ImageNet's train/ has 1000 folders of ~1300 files).
void scan_class_folders(const fs::path& split_dir, const std::string& split, const std::vector<std::string>& folders,
                        const std::vector<int32_t>& labels, std::vector<DatasetEntry>& out, int64_t& ignored) {
  std::vector<Listing> listings(folders.size());
  std::vector<std::string> errors(folders.size());
#pragma omp parallel for schedule(dynamic, 4)
  for (int64_t i = 0; i < static_cast<int64_t>(folders.size()); ++i) {
    try {
      listings[i] = list_folder(split_dir / folders[i]);
    } catch (const std::exception& e) {
      errors[i] = e.what();
    }
  }
  for (size_t i = 0; i < folders.size(); ++i) {
    ALEXNET_CHECK(errors[i].empty(), errors[i]);
    ALEXNET_CHECK(!listings[i].files.empty(), (split_dir / folders[i]).string(),
                  ": empty class folder (no *.JPEG, *.jpg or *.png files)");
    ignored += listings[i].ignored;
    for (const std::string& f : listings[i].files)
      out.push_back({split + "/" + folders[i] + "/" + f, labels[i]});
  }
  // Folder-then-name order equals path order except for wnids that prefix one another; sort only then.
  auto by_path = [](const DatasetEntry& a, const DatasetEntry& b) { return a.path < b.path; };
  if (!std::is_sorted(out.begin(), out.end(), by_path)) std::sort(out.begin(), out.end(), by_path);
}

// The devkit's ILSVRC2012_validation_ground_truth.txt: line k holds the 1-based class id of the k-th
// validation file in sorted-name order. We assume the ids count classes in sorted-wnid order, so
// label = id - 1; the devkit's ids follow its meta.mat order, which must then be that order (docs/data.md).
std::vector<int32_t> read_ground_truth(const std::string& path, size_t expect, size_t num_classes,
                                       const std::string& val_dir) {
  std::ifstream in(path);
  ALEXNET_CHECK(in.good(), path, ": cannot open the validation ground-truth file");
  std::vector<int32_t> labels;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
    size_t start = 0;
    while (start < line.size() && std::isspace(static_cast<unsigned char>(line[start]))) ++start;
    if (start == line.size()) continue;  // a trailing empty line
    const std::string tok = line.substr(start);
    int64_t id = 0;
    bool ok = !tok.empty() && tok.size() < 10;
    for (char c : tok) ok = ok && std::isdigit(static_cast<unsigned char>(c));
    if (ok) id = std::stoll(tok);
    ALEXNET_CHECK(ok, path, ":", line_no, ": expected a class id (an integer), got '", tok, "'");
    ALEXNET_CHECK(id >= 1 && id <= static_cast<int64_t>(num_classes), path, ":", line_no, ": class id ", id,
                  " is out of range 1..", num_classes, " (ids are 1-based positions in the sorted wnids of train/)");
    labels.push_back(static_cast<int32_t>(id - 1));
  }
  ALEXNET_CHECK(labels.size() == expect, path, ": ", labels.size(), " class ids, but the flat validation folder ",
                val_dir, " holds ", expect, " image files (one id per file, in sorted file-name order)");
  return labels;
}

// A relative ground-truth path is taken from the working directory, else from the dataset root.
std::string resolve_ground_truth(const std::string& gt, const fs::path& root) {
  fs::path p(gt);
  if (p.is_absolute() || fs::exists(p)) return p.string();
  if (fs::exists(root / p)) return (root / p).string();
  ALEXNET_FAIL(gt, ": validation ground-truth file not found (also looked for ", (root / p).string(), ")");
}

}  // namespace

DatasetIndex scan_dataset(const std::string& root, const std::string& val_ground_truth) {
  const fs::path root_path(root);
  std::error_code ec;
  ALEXNET_CHECK(!root.empty(), "dataset root is empty (set data.root or --data)");
  ALEXNET_CHECK(fs::exists(root_path, ec), root, ": dataset folder does not exist");
  ALEXNET_CHECK(fs::is_directory(root_path, ec), root, ": dataset root is not a folder");
  ALEXNET_CHECK(!fs::exists(root_path / ".synth-incomplete", ec), root,
                ": an interrupted `alexnet-tool synth` left this dataset incomplete (.synth-incomplete); rerun synth");
  const fs::path train_dir = root_path / "train";
  ALEXNET_CHECK(fs::is_directory(train_dir, ec), train_dir.string(),
                ": no train/ folder (expected ImageNet's layout: train/<wnid>/*.JPEG, val/)");

  DatasetIndex index;
  index.root = fs::absolute(root_path).lexically_normal().string();
  if (index.root.size() > 1 && index.root.back() == '/') index.root.pop_back();
  const Listing train_top = list_folder(train_dir);
  ALEXNET_CHECK(!train_top.dirs.empty(), train_dir.string(), ": no class folders (expected train/<wnid>/*.JPEG)");
  index.wnids = train_top.dirs;
  std::vector<int32_t> labels(index.wnids.size());
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<int32_t>(i);
  int64_t ignored = train_top.ignored;
  scan_class_folders(train_dir, "train", index.wnids, labels, index.train, ignored);

  const fs::path val_dir = root_path / "val";
  if (!fs::is_directory(val_dir, ec)) {
    ALEXNET_CHECK(val_ground_truth.empty(), val_dir.string(),
                  ": no val/ folder, but a validation ground-truth file was given (", val_ground_truth, ")");
    log_warn(root, ": no val/ folder; the dataset has no validation set");
  } else {
    const Listing val_top = list_folder(val_dir);
    if (!val_ground_truth.empty()) {
      const std::string gt = resolve_ground_truth(val_ground_truth, root_path);
      const std::vector<int32_t> gt_labels =
          read_ground_truth(gt, val_top.files.size(), index.wnids.size(), val_dir.string());
      for (size_t i = 0; i < val_top.files.size(); ++i)
        index.val.push_back({"val/" + val_top.files[i], gt_labels[i]});
      ignored += val_top.ignored;
    } else {
      ALEXNET_CHECK(val_top.files.empty(), val_dir.string(), ": holds ", val_top.files.size(),
                    " image files directly (a flat validation folder) but no ground-truth file was given "
                    "(data.val_ground_truth: the devkit's ILSVRC2012_validation_ground_truth.txt)");
      std::vector<int32_t> val_labels;
      for (const std::string& w : val_top.dirs) {
        auto it = std::lower_bound(index.wnids.begin(), index.wnids.end(), w);
        ALEXNET_CHECK(it != index.wnids.end() && *it == w, (val_dir / w).string(),
                      ": validation class folder '", w, "' is not among the ", index.wnids.size(),
                      " training classes of ", train_dir.string());
        val_labels.push_back(static_cast<int32_t>(it - index.wnids.begin()));
      }
      ignored += val_top.ignored;
      scan_class_folders(val_dir, "val", val_top.dirs, val_labels, index.val, ignored);
    }
  }
  if (ignored > 0) log_info(root, ": ignored ", ignored, " files that are not *.JPEG, *.jpg or *.png");
  return index;
}

}  // namespace alexnet
