// An ImageNet-layout dataset on disk: train/<wnid>/*.JPEG, and val/<wnid>/*.JPEG or a flat val/ with a
// ground-truth file. Class index = position of the wnid in the sorted list of train/ folders.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace alexnet {

struct DatasetEntry {
  std::string path;  // relative to the dataset root, e.g. "train/n01440764/n01440764_10026.JPEG"
  int32_t label = 0;
};

struct DatasetIndex {
  std::string root;
  std::vector<std::string> wnids;      // sorted; label i is wnids[i]
  std::vector<DatasetEntry> train;     // sorted by path
  std::vector<DatasetEntry> val;       // sorted by path
};

// Scans `root`. val_ground_truth: empty when val/ has <wnid>/ folders; for a flat val/, a file with one
// line per image file in sorted file-name order, holding either
//   - a wnid (e.g. n01751748): mapped to its position in the sorted wnids; val_synsets is not needed, or
//   - an integer class id, as the devkit's ILSVRC2012_validation_ground_truth.txt has: ILSVRC2012_IDs count
//     the classes in the devkit's meta.mat order (id 1 = n02119789), not in sorted-wnid order, so such a
//     file requires val_synsets, a file listing every training wnid once, line k naming id k (docs/data.md).
// Relative paths are taken from the working directory, else from `root`. Errors (thrown) name the path,
// and file:line within the two files: missing root or train/, an empty class folder, a val/ folder whose
// wnid is not a training class, line counts that do not match, ids out of range, unknown or duplicate
// wnids, and integer ids without val_synsets.
DatasetIndex scan_dataset(const std::string& root, const std::string& val_ground_truth = "",
                          const std::string& val_synsets = "");

}  // namespace alexnet
