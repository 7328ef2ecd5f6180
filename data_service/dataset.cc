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

// One entry per line, trimmed; empty lines may only end the file, so that entry k is line k (the
// synsets file's line k names ILSVRC2012_ID k).
struct Entry {
  int64_t line;
  std::string text;
};

std::vector<Entry> read_entries(const std::string& path, const char* what) {
  std::ifstream in(path);
  ALEXNET_CHECK(in.good(), path, ": cannot open the ", what);
  std::vector<Entry> out;
  std::string line;
  int64_t line_no = 0, first_empty = 0;
  while (std::getline(in, line)) {
    ++line_no;
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
    size_t start = 0;
    while (start < line.size() && std::isspace(static_cast<unsigned char>(line[start]))) ++start;
    if (start == line.size()) {
      if (first_empty == 0) first_empty = line_no;
      continue;
    }
    ALEXNET_CHECK(first_empty == 0, path, ":", first_empty, ": empty line inside the ", what,
                  " (one entry per line, line k for entry k; only the end may have empty lines)");
    std::string tok = line.substr(start);
    for (char c : tok)
      ALEXNET_CHECK(!std::isspace(static_cast<unsigned char>(c)), path, ":", line_no, ": expected one entry, got '",
                    tok, "'");
    out.push_back({line_no, std::move(tok)});
  }
  return out;
}

// An optionally signed decimal integer (signed so that "-1" reads as an id out of range, not as a wnid).
bool parse_int(const std::string& tok, int64_t& value) {
  const size_t digits = (tok[0] == '+' || tok[0] == '-') ? 1 : 0;
  if (tok.size() == digits || tok.size() - digits > 18) return false;
  for (size_t i = digits; i < tok.size(); ++i)
    if (!std::isdigit(static_cast<unsigned char>(tok[i]))) return false;
  value = std::stoll(tok);
  return true;
}

// Label of `wnid` (its position in the sorted `wnids`), -1 when it is not a training class.
int32_t label_of(const std::vector<std::string>& wnids, const std::string& wnid) {
  auto it = std::lower_bound(wnids.begin(), wnids.end(), wnid);
  return it != wnids.end() && *it == wnid ? static_cast<int32_t>(it - wnids.begin()) : -1;
}

// The synsets file: line k names the wnid of ILSVRC2012_ID k; every training class exactly once.
// Returns label[id - 1].
std::vector<int32_t> read_synsets(const std::string& path, const std::vector<std::string>& wnids,
                                  const std::string& train_dir) {
  const std::vector<Entry> entries = read_entries(path, "validation synsets file");
  std::vector<int64_t> seen_on(wnids.size(), 0);
  std::vector<int32_t> labels;
  for (const Entry& e : entries) {
    const int32_t label = label_of(wnids, e.text);
    ALEXNET_CHECK(label >= 0, path, ":", e.line, ": wnid '", e.text, "' is not among the ", wnids.size(),
                  " training classes of ", train_dir,
                  " (the synsets file lists the training classes, line k naming ILSVRC2012_ID k)");
    ALEXNET_CHECK(seen_on[label] == 0, path, ":", e.line, ": wnid '", e.text, "' is listed twice (also on line ",
                  seen_on[label], ")");
    seen_on[label] = e.line;
    labels.push_back(label);
  }
  if (labels.size() != wnids.size()) {
    size_t missing = 0;
    while (seen_on[missing] != 0) ++missing;
    ALEXNET_FAIL(path, ": ", labels.size(), " wnids, but ", train_dir, " has ", wnids.size(),
                 " classes; the synsets file must list each of them once (line k naming ILSVRC2012_ID k); missing: ",
                 wnids[missing]);
  }
  return labels;
}

// The ground truth of a flat val/: line k holds the class of the k-th validation file in sorted file-name
// order, as a wnid or as an integer class id (the devkit's ILSVRC2012_validation_ground_truth.txt). The
// devkit's ids follow its meta.mat synset order, not our sorted-wnid order, so ids go through the synsets
// file (id -> wnid -> label); taking label = id - 1 would silently mislabel real validation data.
std::vector<int32_t> read_ground_truth(const std::string& path, const std::string& synsets_path, size_t expect,
                                       const std::vector<std::string>& wnids, const std::string& train_dir,
                                       const std::string& val_dir) {
  const std::vector<Entry> entries = read_entries(path, "validation ground-truth file");
  int64_t unused = 0;
  const bool ids = !entries.empty() && parse_int(entries[0].text, unused);
  std::vector<int32_t> id_to_label;
  if (ids) {
    ALEXNET_CHECK(!synsets_path.empty(), path, " holds integer class ids ('", entries[0].text, "' on line ",
                  entries[0].line, "), but no synsets file was given: set data.val_synsets (--val-synsets) to a file "
                  "with one wnid per line, line k naming class id k. The devkit's ids (ILSVRC2012_ID) count the "
                  "classes in its meta.mat order (id 1 = n02119789), not in the sorted-wnid order of our labels, so "
                  "they cannot be mapped without it (docs/data.md shows how to write it from meta.mat); a "
                  "ground-truth file of wnids needs no synsets file");
    id_to_label = read_synsets(synsets_path, wnids, train_dir);
  } else if (!synsets_path.empty()) {
    log_info(path, ": holds wnids; the synsets file ", synsets_path, " is not needed and not read");
  }
  std::vector<int32_t> labels;
  labels.reserve(entries.size());
  for (const Entry& e : entries) {
    int64_t id = 0;
    const bool is_int = parse_int(e.text, id);
    if (ids) {
      ALEXNET_CHECK(is_int, path, ":", e.line, ": expected a class id (an integer, as on line ", entries[0].line,
                    "), got '", e.text, "'");
      ALEXNET_CHECK(id >= 1 && id <= static_cast<int64_t>(id_to_label.size()), path, ":", e.line, ": class id ", id,
                    " is out of range 1..", id_to_label.size(), " (the lines of the synsets file ", synsets_path, ")");
      labels.push_back(id_to_label[id - 1]);
    } else {
      ALEXNET_CHECK(!is_int, path, ":", e.line, ": expected a wnid (as on line ", entries[0].line,
                    "), got the integer '", e.text, "'");
      const int32_t label = label_of(wnids, e.text);
      ALEXNET_CHECK(label >= 0, path, ":", e.line, ": wnid '", e.text, "' is not among the ", wnids.size(),
                    " training classes of ", train_dir);
      labels.push_back(label);
    }
  }
  ALEXNET_CHECK(labels.size() == expect, path, ": ", labels.size(), ids ? " class ids" : " wnids",
                ", but the flat validation folder ", val_dir, " holds ", expect,
                " image files (one line per file, in sorted file-name order)");
  return labels;
}

// A relative path is taken from the working directory, else from the dataset root.
std::string resolve_path(const std::string& file, const fs::path& root, const char* what) {
  fs::path p(file);
  if (p.is_absolute() || fs::exists(p)) return p.string();
  if (fs::exists(root / p)) return (root / p).string();
  ALEXNET_FAIL(file, ": ", what, " not found (also looked for ", (root / p).string(), ")");
}

}  // namespace

DatasetIndex scan_dataset(const std::string& root, const std::string& val_ground_truth,
                          const std::string& val_synsets) {
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
      const std::string gt = resolve_path(val_ground_truth, root_path, "validation ground-truth file");
      const std::string synsets =
          val_synsets.empty() ? "" : resolve_path(val_synsets, root_path, "validation synsets file");
      const std::vector<int32_t> gt_labels = read_ground_truth(gt, synsets, val_top.files.size(), index.wnids,
                                                               train_dir.string(), val_dir.string());
      for (size_t i = 0; i < val_top.files.size(); ++i)
        index.val.push_back({"val/" + val_top.files[i], gt_labels[i]});
      ignored += val_top.ignored;
    } else {
      ALEXNET_CHECK(val_top.files.empty(), val_dir.string(), ": holds ", val_top.files.size(),
                    " image files directly (a flat validation folder) but no ground-truth file was given "
                    "(data.val_ground_truth: the devkit's ILSVRC2012_validation_ground_truth.txt, with "
                    "data.val_synsets; or a file of wnids, one per line)");
      std::vector<int32_t> val_labels;
      for (const std::string& w : val_top.dirs) {
        const int32_t label = label_of(index.wnids, w);
        ALEXNET_CHECK(label >= 0, (val_dir / w).string(), ": validation class folder '", w, "' is not among the ",
                      index.wnids.size(), " training classes of ", train_dir.string());
        val_labels.push_back(label);
      }
      ignored += val_top.ignored;
      scan_class_folders(val_dir, "val", val_top.dirs, val_labels, index.val, ignored);
    }
  }
  if (ignored > 0) log_info(root, ": ignored ", ignored, " files that are not *.JPEG, *.jpg or *.png");
  return index;
}

}  // namespace alexnet
