// A generated dataset in ImageNet's exact layout and file formats (`alexnet-tool synth`): learnable
// classes (shape, colours and texture per class), deterministic from the seed; the demo's and tests' data.
#pragma once

#include <cstdint>
#include <string>

namespace alexnet {

// synth --flat-val writes, at the dataset root, the ground truth under the devkit's name (one integer class
// id per validation file) and the synsets file that maps those ids to wnids (line k = id k; a seeded order
// that, like the devkit's, is not the sorted one).
inline constexpr const char* kValGroundTruthName = "ILSVRC2012_validation_ground_truth.txt";
inline constexpr const char* kValSynsetsName = "val_synsets.txt";

struct SynthOptions {
  std::string out;
  int classes = 10;          // 1..1000
  int train_per_class = 20;
  int val_per_class = 5;
  uint64_t seed = 1;
  bool flat_val = false;     // val/ILSVRC2012_val_*.JPEG, ground truth (ids) and synsets files; else val/<wnid>/
  int threads = 0;           // 0: OpenMP's default
};

struct SynthSummary {
  int64_t train = 0, val = 0;
  int64_t grayscale = 0, cmyk = 0, png = 0;
  int64_t bytes = 0;
  double seconds = 0;
  bool up_to_date = false;   // the folder already held this exact dataset; nothing was written
};

// Class c's folder name: "n0" followed by seven digits, increasing with c (so label c = sorted position).
std::string synth_wnid(int c);

// Writes the dataset. The folder must be absent, empty, or an earlier synth output (which is replaced
// unless it matches the options exactly). `.synth-incomplete` marks a run in progress (scan_dataset
// refuses such a folder); `.synth-complete` records the options of a finished one.
SynthSummary synthesize_dataset(const SynthOptions& options);

}  // namespace alexnet
