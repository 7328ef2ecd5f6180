// The paper's training augmentation (§4.1: random 227 crops of the 256 image, mirrors, PCA lighting) and
// ten-view evaluation crops, drawn from the counter-based RNG, and the uint8 -> float normalisation.
#include "data_service/augment.h"

#include <cstddef>

#include "core/error.h"
#include "core/rng.h"

namespace alexnet {
namespace {

// The counter's `what`: epoch in the top 24 bits, the global sample index in the low 40 (ImageNet has
// 1.28M samples, so both limits are far away). A draw thus depends on (seed, epoch, sample) only.
constexpr int kSampleBits = 40;

uint64_t draw_id(int64_t epoch, int64_t sample) {
  ALEXNET_CHECK(sample >= 0 && sample < (int64_t{1} << kSampleBits), "sample index ", sample, " out of range");
  ALEXNET_CHECK(epoch >= 0 && epoch < (int64_t{1} << (64 - kSampleBits)), "epoch ", epoch, " out of range");
  return (static_cast<uint64_t>(epoch) << kSampleBits) | static_cast<uint64_t>(sample);
}

// Uniform integer in [0, n) by multiply-shift; the bias (n / 2^32 at most) is far below anything a test of
// 30 crop positions could see.
int uniform_int(uint32_t bits, int n) { return static_cast<int>((static_cast<uint64_t>(bits) * n) >> 32); }

void check_crop(const SampleAugment& a, int src_side, int crop) {
  ALEXNET_CHECK(crop > 0 && crop <= src_side, "crop ", crop, " does not fit a ", src_side, "x", src_side, " image");
  ALEXNET_CHECK(a.crop_x >= 0 && a.crop_y >= 0 && a.crop_x + crop <= src_side && a.crop_y + crop <= src_side,
                "crop at (", a.crop_x, ", ", a.crop_y, ") of side ", crop, " leaves the ", src_side, "x", src_side,
                " image");
}

}  // namespace

SampleAugment draw_train_augment(uint64_t seed, int64_t epoch, int64_t sample, int src_side, int crop,
                                 double lighting_std, const ImageStats& stats) {
  ALEXNET_CHECK(crop > 0 && crop <= src_side, "crop ", crop, " does not fit a ", src_side, "x", src_side, " image");
  const uint64_t id = draw_id(epoch, sample);
  SampleAugment a;
  const CounterRng crop_rng(make_key(seed, RngPurpose::kCrop), id);
  const Philox4 cb = crop_rng.block(0);
  const int positions = src_side - crop + 1;
  a.crop_x = uniform_int(cb.v[0], positions);
  a.crop_y = uniform_int(cb.v[1], positions);
  a.flip = (CounterRng(make_key(seed, RngPurpose::kFlip), id).bits(0) >> 31) != 0;
  if (lighting_std > 0) {
    // §4.1: add P [a1 l1, a2 l2, a3 l3]^T to every pixel, a_i ~ N(0, 0.1^2) drawn once per image and use.
    const CounterRng light_rng(make_key(seed, RngPurpose::kLighting), id);
    double scaled[3];
    for (int j = 0; j < 3; ++j) scaled[j] = lighting_std * light_rng.normal(j) * stats.eigenvalues[j];
    for (int c = 0; c < 3; ++c) {
      double v = 0;
      for (int j = 0; j < 3; ++j) v += stats.eigenvectors[c * 3 + j] * scaled[j];
      a.lighting[c] = static_cast<float>(v);
    }
  }
  return a;
}

SampleAugment eval_augment(EvalView view, int src_side, int crop) {
  ALEXNET_CHECK(crop > 0 && crop <= src_side, "crop ", crop, " does not fit a ", src_side, "x", src_side, " image");
  const int far = src_side - crop;
  const int v = static_cast<int>(view);
  ALEXNET_CHECK(v >= 0 && v < 10, "evaluation view ", v, " is not one of the ten views 0..9");
  SampleAugment a;
  a.flip = v >= 5;
  switch (v % 5) {
    case 0: a.crop_x = far / 2; a.crop_y = far / 2; break;
    case 1: a.crop_x = 0; a.crop_y = 0; break;
    case 2: a.crop_x = far; a.crop_y = 0; break;
    case 3: a.crop_x = 0; a.crop_y = far; break;
    case 4: a.crop_x = far; a.crop_y = far; break;
  }
  return a;
}

void extract_crop(const uint8_t* src_rgb, int src_side, const SampleAugment& a, int crop, uint8_t* out_planar) {
  check_crop(a, src_side, crop);
  const size_t plane = static_cast<size_t>(crop) * crop;
  for (int y = 0; y < crop; ++y) {
    const uint8_t* row = src_rgb + (static_cast<size_t>(a.crop_y + y) * src_side + a.crop_x) * 3;
    uint8_t* r = out_planar + static_cast<size_t>(y) * crop;
    uint8_t* g = r + plane;
    uint8_t* b = g + plane;
    if (a.flip) {
      for (int x = 0; x < crop; ++x) {
        const uint8_t* p = row + static_cast<size_t>(crop - 1 - x) * 3;
        r[x] = p[0]; g[x] = p[1]; b[x] = p[2];
      }
    } else {
      for (int x = 0; x < crop; ++x) {
        const uint8_t* p = row + static_cast<size_t>(x) * 3;
        r[x] = p[0]; g[x] = p[1]; b[x] = p[2];
      }
    }
  }
}

void normalize_crop(const uint8_t* crop_planar, int crop, const SampleAugment& a, const ImageStats& stats,
                    bool use_mean_image, float* out) {
  const size_t plane = static_cast<size_t>(crop) * crop;
  if (!use_mean_image) {
    for (int c = 0; c < 3; ++c) {
      const float offset = a.lighting[c] - static_cast<float>(stats.channel_mean[c]);
      const uint8_t* in = crop_planar + c * plane;
      float* o = out + c * plane;
      for (size_t i = 0; i < plane; ++i) o[i] = static_cast<float>(in[i]) + offset;
    }
    return;
  }
  const int side = stats.side;
  check_crop(a, side, crop);
  ALEXNET_CHECK(stats.mean_image.size() == static_cast<size_t>(3) * side * side, "mean image holds ",
                stats.mean_image.size(), " values, expected 3 x ", side, " x ", side);
  for (int c = 0; c < 3; ++c) {
    const float light = a.lighting[c];
    for (int y = 0; y < crop; ++y) {
      // The crop was mirrored, so its column x came from source column crop_x + (crop - 1 - x): the mean
      // is read at the same place.
      const float* m = stats.mean_image.data() + (static_cast<size_t>(c) * side + a.crop_y + y) * side + a.crop_x;
      const uint8_t* in = crop_planar + c * plane + static_cast<size_t>(y) * crop;
      float* o = out + c * plane + static_cast<size_t>(y) * crop;
      if (a.flip) {
        for (int x = 0; x < crop; ++x) o[x] = static_cast<float>(in[x]) - m[crop - 1 - x] + light;
      } else {
        for (int x = 0; x < crop; ++x) o[x] = static_cast<float>(in[x]) - m[x] + light;
      }
    }
  }
}

}  // namespace alexnet
