// An ImageNet-layout dataset on disk: train/<wnid>/*.JPEG, and val/<wnid>/*.JPEG or a flat val/ with
// the devkit's ground-truth file. Class index = position of the wnid in the sorted list of train/ folders.
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

// Scans `root`. val_ground_truth: the devkit file (one 1-based label per line, in the order of the sorted
// file names of a flat val/), empty when val/ has <wnid>/ folders. Errors (thrown) name the path: missing
// root or train/, an empty class folder, a val/ folder whose wnid is not a training class, a
// ground-truth file whose line count does not match.
DatasetIndex scan_dataset(const std::string& root, const std::string& val_ground_truth = "");

}  // namespace alexnet
