// A SampleProducer without files for transport tests: sample i's 256x256 image is a function of i,
// listed indices fail like corrupt files, and the statistics are fixed.
#pragma once

#include <algorithm>
#include <set>
#include <string>

#include "core/error.h"
#include "data_service/service.h"

namespace alexnet::testing {

class SyntheticProducer : public SampleProducer {
 public:
  // flat: every image one grey level per sample (costs a memset), to measure the transport alone.
  SyntheticProducer(int64_t num_train, int64_t num_val, int num_classes, std::set<int64_t> bad_train = {},
                    bool flat = false)
      : num_train_(num_train), num_val_(num_val), num_classes_(num_classes), bad_train_(std::move(bad_train)),
        flat_(flat) {
    stats_.side = 256;
    stats_.mean_image.resize(3 * 256 * 256);
    for (size_t k = 0; k < stats_.mean_image.size(); ++k) stats_.mean_image[k] = 100.0f + static_cast<float>(k % 17);
    stats_.channel_mean = {108.0, 107.0, 106.0};
    stats_.eigenvalues = {400.0, 40.0, 4.0};
    stats_.eigenvectors = {0.58, -0.71, 0.41, 0.58, 0.0, -0.82, 0.58, 0.71, 0.41};
  }
  int64_t num_train() const override { return num_train_; }
  int64_t num_val() const override { return num_val_; }
  int num_classes() const override { return num_classes_; }
  int32_t label(bool val, int64_t i) const override { return static_cast<int32_t>((i * (val ? 7 : 3)) % num_classes_); }
  const ImageStats& stats() const override { return stats_; }
  std::string name(bool val, int64_t i) const override {
    return str_cat(val ? "val/" : "train/", "synthetic_", i, ".JPEG");
  }
  Status load(bool val, int64_t i, int side, Image& out) const override {
    if (!val && bad_train_.count(i)) return Status::error(name(val, i) + ": synthetic corrupt file");
    out.width = out.height = side;
    out.rgb.resize(static_cast<size_t>(side) * side * 3);
    const uint32_t s = static_cast<uint32_t>(i * 2654435761u) ^ (val ? 0x5555u : 0u);
    if (flat_) {
      std::fill(out.rgb.begin(), out.rgb.end(), static_cast<uint8_t>(s));
      return Status();
    }
    for (int y = 0; y < side; ++y)
      for (int x = 0; x < side; ++x)
        for (int c = 0; c < 3; ++c)
          out.rgb[(static_cast<size_t>(y) * side + x) * 3 + c] =
              static_cast<uint8_t>((s >> (c * 8)) + x * (c + 1) + y * 3 + ((x * y) >> 5));
    return Status();
  }

 private:
  int64_t num_train_, num_val_;
  int num_classes_;
  std::set<int64_t> bad_train_;
  bool flat_;
  ImageStats stats_;
};

}  // namespace alexnet::testing
