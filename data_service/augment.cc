// The paper's training augmentation (§4.1: random 227 crops of the 256 image, mirrors, PCA lighting) and
// ten-view evaluation crops, drawn from the counter-based RNG, and the uint8 -> float normalisation.
#include "data_service/augment.h"

#include <cstddef>
#include <cstdlib>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "core/error.h"
#include "data_service/cpu_features.h"
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


#if defined(__x86_64__)

// 16 interleaved RGB pixels (48 bytes at p) -> 16 R, 16 G, 16 B; `reverse` mirrors their order.
__attribute__((target("avx2"))) inline void deinterleave16(const uint8_t* p, bool reverse, uint8_t* r, uint8_t* g,
                                                           uint8_t* b) {
  const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i m = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16));
  const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 32));
  const char z = -1;  // pshufb index with the top bit set writes 0
  __m128i vr = _mm_or_si128(
      _mm_or_si128(_mm_shuffle_epi8(a, _mm_setr_epi8(0, 3, 6, 9, 12, 15, z, z, z, z, z, z, z, z, z, z)),
                   _mm_shuffle_epi8(m, _mm_setr_epi8(z, z, z, z, z, z, 2, 5, 8, 11, 14, z, z, z, z, z))),
      _mm_shuffle_epi8(c, _mm_setr_epi8(z, z, z, z, z, z, z, z, z, z, z, 1, 4, 7, 10, 13)));
  __m128i vg = _mm_or_si128(
      _mm_or_si128(_mm_shuffle_epi8(a, _mm_setr_epi8(1, 4, 7, 10, 13, z, z, z, z, z, z, z, z, z, z, z)),
                   _mm_shuffle_epi8(m, _mm_setr_epi8(z, z, z, z, z, 0, 3, 6, 9, 12, 15, z, z, z, z, z))),
      _mm_shuffle_epi8(c, _mm_setr_epi8(z, z, z, z, z, z, z, z, z, z, z, 2, 5, 8, 11, 14)));
  __m128i vb = _mm_or_si128(
      _mm_or_si128(_mm_shuffle_epi8(a, _mm_setr_epi8(2, 5, 8, 11, 14, z, z, z, z, z, z, z, z, z, z, z)),
                   _mm_shuffle_epi8(m, _mm_setr_epi8(z, z, z, z, z, 1, 4, 7, 10, 13, z, z, z, z, z, z))),
      _mm_shuffle_epi8(c, _mm_setr_epi8(z, z, z, z, z, z, z, z, z, z, 0, 3, 6, 9, 12, 15)));
  if (reverse) {
    const __m128i rev = _mm_setr_epi8(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    vr = _mm_shuffle_epi8(vr, rev);
    vg = _mm_shuffle_epi8(vg, rev);
    vb = _mm_shuffle_epi8(vb, rev);
  }
  _mm_storeu_si128(reinterpret_cast<__m128i*>(r), vr);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(g), vg);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(b), vb);
}

__attribute__((target("avx2"))) void extract_row_avx2(const uint8_t* row, int crop, bool flip, uint8_t* r, uint8_t* g,
                                                      uint8_t* b) {
  int x = 0;
  for (; x + 16 <= crop; x += 16) {
    // Mirrored: outputs x..x+15 come from source pixels crop-16-x .. crop-1-x, in reverse.
    const int src = flip ? crop - 16 - x : x;
    deinterleave16(row + static_cast<size_t>(src) * 3, flip, r + x, g + x, b + x);
  }
  for (; x < crop; ++x) {
    const uint8_t* p = row + static_cast<size_t>(flip ? crop - 1 - x : x) * 3;
    r[x] = p[0]; g[x] = p[1]; b[x] = p[2];
  }
}

__attribute__((target("avx2"))) void normalize_row_avx2(const uint8_t* in, const float* m, int crop, bool flip,
                                                        float light, float* o) {
  const __m256i rev = _mm256_setr_epi32(7, 6, 5, 4, 3, 2, 1, 0);
  const __m256 l = _mm256_set1_ps(light);
  int x = 0;
  for (; x + 8 <= crop; x += 8) {
    const __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(in + x))));
    const __m256 mean = flip ? _mm256_permutevar8x32_ps(_mm256_loadu_ps(m + crop - 8 - x), rev) : _mm256_loadu_ps(m + x);
    _mm256_storeu_ps(o + x, _mm256_add_ps(_mm256_sub_ps(v, mean), l));
  }
  for (; x < crop; ++x) o[x] = static_cast<float>(in[x]) - m[flip ? crop - 1 - x : x] + light;
}
#endif

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
    // §4.1: add P [a1 l1, a2 l2, a3 l3]^T to every pixel, a_i ~ N(0, 0.1^2) drawn once per image and use,
    // with l_i the eigenvalues on the [0, 1] pixel scale and the offset brought back to 0..255 (augment.h):
    // 255 * l01 = l255 / 255.
    const CounterRng light_rng(make_key(seed, RngPurpose::kLighting), id);
    double scaled[3];
    for (int j = 0; j < 3; ++j) scaled[j] = lighting_std * light_rng.normal(j) * (stats.eigenvalues[j] / 255.0);
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
#if defined(__x86_64__)
    if (have_avx2()) {
      extract_row_avx2(row, crop, a.flip, r, g, b);
      continue;
    }
#endif
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
#if defined(__x86_64__)
      if (have_avx2()) {
        normalize_row_avx2(in, m, crop, a.flip, light, o);
        continue;
      }
#endif
      if (a.flip) {
        for (int x = 0; x < crop; ++x) o[x] = static_cast<float>(in[x]) - m[crop - 1 - x] + light;
      } else {
        for (int x = 0; x < crop; ++x) o[x] = static_cast<float>(in[x]) - m[x] + light;
      }
    }
  }
}

}  // namespace alexnet
