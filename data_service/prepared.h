// The output of `alexnet-tool prepare` (a folder, documented in docs/data.md): the dataset index, the
// training-set statistics for mean subtraction and PCA lighting, and optional shards of pre-resized
// 256x256 JPEGs that decode several times faster than the originals.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "data_service/augment.h"
#include "data_service/dataset.h"

namespace alexnet {

struct PrepareOptions {
  std::string data_root;
  std::string val_ground_truth;  // see scan_dataset
  std::string val_synsets;       // see scan_dataset
  std::string out;               // the prepared folder
  bool shards = false;           // also write pre-resized shards
  int shard_quality = 95;        // JPEG quality of the shard images (4:4:4)
  int threads = 0;               // 0: all available cores
  int64_t stats_images = 0;      // training images the statistics use (0: all)
  bool progress = true;          // progress bar on stderr
  bool strict = false;           // a bad image is fatal instead of skipped and counted
  int64_t chunk_images = 4096;   // images per resumable unit (one part file, one shard)
};

// Builds (or resumes) the prepared folder. Resumable: finished parts are kept and verified by size and
// checksum, unfinished ones redone. Returns a one-line summary (images, bad files, seconds).
std::string prepare_dataset(const PrepareOptions& options);

// Reading a prepared folder. Errors name the folder and the missing or damaged file.
DatasetIndex read_prepared_index(const std::string& prepared);
ImageStats read_image_stats(const std::string& prepared);
void write_image_stats(const std::string& path, const ImageStats& stats);  // HDF5

// Source of a sample's encoded bytes: the shards when the folder has them, else the original file.
class SampleSource {
 public:
  virtual ~SampleSource() = default;
  // Encoded image bytes of training (val = false) or validation sample i; a read failure is a Status.
  virtual StatusOr<std::vector<uint8_t>> read(bool val, int64_t i) const = 0;
  // True when read() returns already-rescaled 256x256 images.
  virtual bool pre_resized() const = 0;
  // File name for messages (the original path even when read from a shard).
  virtual std::string name(bool val, int64_t i) const = 0;
};
std::unique_ptr<SampleSource> open_sample_source(const DatasetIndex& index, const std::string& prepared);

}  // namespace alexnet
