// Random augmentations for the input-step tests: crop offsets inside a side x side mean image, flips
// (every other sample when asked) and lighting offsets, drawn from one Philox key, with the same draws
// laid out as the model's CropBatch wants them (placement [n, 3] = x, y, flip; lighting [n, 3]).
#pragma once

#include <cstdint>
#include <vector>

#include "core/rng.h"
#include "data_service/augment.h"

namespace alexnet::testing {

struct RandomCrops {
  std::vector<SampleAugment> aug;  // for normalize_crop
  std::vector<int32_t> place;      // x, y, flip per sample
  std::vector<float> light;        // R, G, B offset per sample
};

// flip_every_other: flips on odd samples; else a random bit per sample. Lighting in [-128, 127] / 7.
inline RandomCrops random_crops(uint64_t seed, int64_t n, int64_t crop, int64_t side, bool flip_every_other = false) {
  RandomCrops r;
  r.aug.resize(static_cast<size_t>(n));
  const CounterRng rng(make_key(seed, RngPurpose::kCrop), 0);
  for (int64_t i = 0; i < n; ++i) {
    const Philox4 b = rng.block(static_cast<uint64_t>(i));
    SampleAugment& a = r.aug[static_cast<size_t>(i)];
    a.crop_x = static_cast<int32_t>(b.v[0] % (side - crop + 1));
    a.crop_y = static_cast<int32_t>(b.v[1] % (side - crop + 1));
    a.flip = flip_every_other ? i % 2 == 1 : (b.v[2] & 1) != 0;
    for (int c = 0; c < 3; ++c) a.lighting[c] = static_cast<float>(static_cast<int32_t>(b.v[3] >> (8 * c) & 0xff) - 128) / 7.0f;
    r.place.insert(r.place.end(), {a.crop_x, a.crop_y, a.flip ? 1 : 0});
    r.light.insert(r.light.end(), a.lighting.begin(), a.lighting.end());
  }
  return r;
}

}  // namespace alexnet::testing
