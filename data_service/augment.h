// The paper's augmentation (§4.1) and evaluation crops, as parameters drawn from the counter-based RNG
// and as the normalisation that turns a uint8 crop into the network's float input.
//
// The normalised input of a training sample is
//   x[c, y, x] = src[c, oy + y, ox + x'] - mean[c, oy + y, ox + x'] + lighting[c],   x' = flip ? S-1-x : x
// with src the 256x256 rescaled image, (ox, oy) the crop offset, S the crop side (227), mean the
// per-pixel mean image at 256x256 (or per-channel means broadcast), and lighting = 255 P (alpha * lambda01),
// alpha ~ N(0, sigma^2) per image per use, (P, lambda01) the eigenvectors/eigenvalues of the covariance of
// RGB values scaled to [0, 1]. The paper (§4.1) does not say on which scale its eigenvalues were taken;
// the [0, 1] scale is the convention of the published ImageNet values (eigenvalues 0.2175, 0.0188, 0.0045,
// as used e.g. by fb.resnet.torch), and gives offsets of a few intensity levels. Taken on the 0..255
// scale the same formula would add hundreds of levels and saturate every image.
// Pixel values stay on the 0..255 scale, as in the paper.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace alexnet {

// RGB statistics of the training set (alexnet-tool prepare).
struct ImageStats {
  int side = 256;                    // the mean image is side x side
  std::vector<float> mean_image;     // [3, side, side] planar RGB, 0..255 scale
  std::array<double, 3> channel_mean{};    // per-channel means (the mean image averaged over pixels)
  std::array<double, 9> covariance{};      // RGB covariance of pixels, row-major 3x3, 0..255 scale
  std::array<double, 3> eigenvalues{};     // of `covariance` (0..255 scale, so 255^2 times lambda01), descending
  std::array<double, 9> eigenvectors{};    // column j (elements [0*3+j], [1*3+j], [2*3+j]) pairs eigenvalue j
};

// Where a sample's crop comes from and what is added to it: everything the worker needs to turn the
// uint8 crop into its float input, and what `augment-dump` reports.
struct SampleAugment {
  int32_t crop_x = 0;   // offset of the crop in the 256x256 image
  int32_t crop_y = 0;
  bool flip = false;    // horizontal mirror of the crop
  std::array<float, 3> lighting{};  // RGB offset added to every pixel
};

enum class EvalView : int {  // the paper's test-time views (§4.1): corners, centre, and mirrors
  kCentre = 0, kTopLeft = 1, kTopRight = 2, kBottomLeft = 3, kBottomRight = 4,
  kCentreFlip = 5, kTopLeftFlip = 6, kTopRightFlip = 7, kBottomLeftFlip = 8, kBottomRightFlip = 9,
};

// Training draw of sample `sample` (global index into the training set) in `epoch`: uniform crop offset in
// [0, src_side - crop]^2, flip with p = 0.5, lighting alphas ~ N(0, lighting_std^2) (zero offset when
// lighting_std = 0). Keyed by (seed, purpose, epoch, sample) only.
SampleAugment draw_train_augment(uint64_t seed, int64_t epoch, int64_t sample, int src_side, int crop,
                                 double lighting_std, const ImageStats& stats);
SampleAugment eval_augment(EvalView view, int src_side, int crop);

// Copies the crop (with its flip) out of a side x side RGB interleaved image into `out` [3, crop, crop]
// planar uint8: the wire form of a sample.
void extract_crop(const uint8_t* src_rgb, int src_side, const SampleAugment& a, int crop, uint8_t* out_planar);

// out [3, crop, crop] float32 = crop - mean (cropped and flipped the same way) + lighting.
// use_mean_image false: subtract stats.channel_mean instead.
void normalize_crop(const uint8_t* crop_planar, int crop, const SampleAugment& a, const ImageStats& stats,
                    bool use_mean_image, float* out);

}  // namespace alexnet
