// Augmentation draws (distribution of crops, flips and lighting; purity in (seed, epoch, sample)),
// the ten evaluation views, crop extraction and normalisation against direct float64 computations.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

#include "data_service/augment.h"

namespace alexnet {
namespace {

constexpr int kSide = 256;
constexpr int kCrop = 227;
constexpr uint64_t kSeed = 20120903;

// Orthonormal eigenvectors (a rotation) and descending eigenvalues, in the range of ImageNet's RGB PCA.
ImageStats test_stats() {
  ImageStats s;
  const double a = 0.6, b = -0.4;
  const double ca = std::cos(a), sa = std::sin(a), cb = std::cos(b), sb = std::sin(b);
  // R = Rz(a) * Rx(b); its columns are the eigenvectors.
  const double r[9] = {ca, -sa * cb, sa * sb, sa, ca * cb, -ca * sb, 0, sb, cb};
  std::copy(r, r + 9, s.eigenvectors.begin());
  s.eigenvalues = {0.2175 * 255 * 255 / 100, 0.0188 * 255 * 255 / 10, 0.0045 * 255 * 255 / 10};
  s.channel_mean = {123.7, 116.3, 103.5};
  s.side = kSide;
  s.mean_image.resize(3 * kSide * kSide);
  std::mt19937 gen(3);
  std::uniform_real_distribution<float> u(60.f, 190.f);
  for (float& v : s.mean_image) v = u(gen);
  return s;
}

bool same(const SampleAugment& x, const SampleAugment& y) {
  return x.crop_x == y.crop_x && x.crop_y == y.crop_y && x.flip == y.flip && x.lighting == y.lighting;
}

TEST(Augment, CropOffsetsAreUniformOverAllPositions) {
  const ImageStats s = test_stats();
  const int positions = kSide - kCrop + 1;  // 30: offsets 0..29
  const int n = 60000;
  std::vector<int> hx(positions), hy(positions), hxy(positions * positions);
  for (int i = 0; i < n; ++i) {
    SampleAugment a = draw_train_augment(kSeed, 3, i, kSide, kCrop, 0.1, s);
    ASSERT_GE(a.crop_x, 0);
    ASSERT_LT(a.crop_x, positions);
    ASSERT_GE(a.crop_y, 0);
    ASSERT_LT(a.crop_y, positions);
    ++hx[a.crop_x];
    ++hy[a.crop_y];
    ++hxy[a.crop_y * positions + a.crop_x];
  }
  auto chi2 = [](const std::vector<int>& h, double expected) {
    double c = 0;
    for (int v : h) c += (v - expected) * (v - expected) / expected;
    return c;
  };
  // Critical values at p = 0.001: 58.3 for 29 degrees of freedom, 1006 for 899 (x and y jointly, which
  // also catches x and y being correlated).
  EXPECT_LT(chi2(hx, double(n) / positions), 58.3);
  EXPECT_LT(chi2(hy, double(n) / positions), 58.3);
  EXPECT_LT(chi2(hxy, double(n) / (positions * positions)), 1006.0);
  EXPECT_GT(*std::min_element(hx.begin(), hx.end()), 0);  // both ends reached
}

TEST(Augment, FlipsAreFairCoins) {
  const ImageStats s = test_stats();
  const int n = 40000;
  int flips = 0, same_as_prev = 0;
  bool prev = false;
  for (int i = 0; i < n; ++i) {
    const bool f = draw_train_augment(kSeed, 0, i, kSide, kCrop, 0.1, s).flip;
    flips += f;
    same_as_prev += (i > 0 && f == prev);
    prev = f;
  }
  // Binomial(n, 1/2): sd = sqrt(n)/2 = 100; 5 sd.
  EXPECT_NEAR(flips, n / 2, 500);
  EXPECT_NEAR(same_as_prev, (n - 1) / 2, 500);  // consecutive samples independent
}

TEST(Augment, LightingCovarianceIsPcaScaled) {
  // lighting = P (alpha * lambda), alpha ~ N(0, sigma^2) => Cov = P diag(sigma^2 lambda^2) P^T, mean 0.
  const ImageStats s = test_stats();
  const double sigma = 0.1;
  const int n = 50000;
  double mean[3] = {0, 0, 0}, cov[9] = {};
  std::vector<std::array<float, 3>> draws(n);
  for (int i = 0; i < n; ++i) draws[i] = draw_train_augment(kSeed, 1, i, kSide, kCrop, sigma, s).lighting;
  for (const auto& d : draws)
    for (int c = 0; c < 3; ++c) mean[c] += d[c] / n;
  for (const auto& d : draws)
    for (int r = 0; r < 3; ++r)
      for (int c = 0; c < 3; ++c) cov[r * 3 + c] += (d[r] - mean[r]) * (d[c] - mean[c]) / (n - 1);
  double expect[9] = {};
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 3; ++c)
      for (int j = 0; j < 3; ++j)
        expect[r * 3 + c] += s.eigenvectors[r * 3 + j] * s.eigenvectors[c * 3 + j] * sigma * sigma *
                             (s.eigenvalues[j] / 255) * (s.eigenvalues[j] / 255);  // lambda01 * 255
  double err = 0, norm = 0;
  for (int k = 0; k < 9; ++k) {
    err += (cov[k] - expect[k]) * (cov[k] - expect[k]);
    norm += expect[k] * expect[k];
  }
  // A sample covariance of n Gaussian draws has relative error ~ sqrt(2/n) = 0.0063; allow 5x.
  EXPECT_LT(std::sqrt(err / norm), 5 * std::sqrt(2.0 / n)) << "relative Frobenius error";
  const double sd0 = sigma * s.eigenvalues[0] / 255;
  for (int c = 0; c < 3; ++c) EXPECT_NEAR(mean[c], 0.0, 5 * sd0 / std::sqrt(double(n)));
  // No lighting when the std is zero (the ablation without PCA noise).
  const SampleAugment a = draw_train_augment(kSeed, 1, 5, kSide, kCrop, 0.0, s);
  EXPECT_EQ(a.lighting, (std::array<float, 3>{0.f, 0.f, 0.f}));
}

TEST(Augment, DrawsArePureFunctionsOfSeedEpochSample) {
  const ImageStats s = test_stats();
  const int n = 2000;
  std::vector<SampleAugment> in_order(n);
  for (int i = 0; i < n; ++i) in_order[i] = draw_train_augment(kSeed, 7, 1000000 + i, kSide, kCrop, 0.1, s);
  // Reverse order, interleaved with draws for other epochs and seeds.
  for (int i = n - 1; i >= 0; --i) {
    draw_train_augment(kSeed + 1, 7, i, kSide, kCrop, 0.1, s);
    EXPECT_TRUE(same(in_order[i], draw_train_augment(kSeed, 7, 1000000 + i, kSide, kCrop, 0.1, s))) << i;
  }
  // Four threads, each taking every fourth sample.
  std::vector<SampleAugment> threaded(n);
  std::vector<std::thread> pool;
  for (int t = 0; t < 4; ++t)
    pool.emplace_back([&, t] {
      for (int i = t; i < n; i += 4) threaded[i] = draw_train_augment(kSeed, 7, 1000000 + i, kSide, kCrop, 0.1, s);
    });
  for (auto& th : pool) th.join();
  for (int i = 0; i < n; ++i) EXPECT_TRUE(same(in_order[i], threaded[i])) << i;
  // Another epoch or seed gives other draws (equal lighting for all n would mean the key is ignored).
  int equal_epoch = 0, equal_seed = 0;
  for (int i = 0; i < n; ++i) {
    equal_epoch += same(in_order[i], draw_train_augment(kSeed, 8, 1000000 + i, kSide, kCrop, 0.1, s));
    equal_seed += same(in_order[i], draw_train_augment(kSeed + 1, 7, 1000000 + i, kSide, kCrop, 0.1, s));
  }
  EXPECT_LT(equal_epoch, 5);
  EXPECT_LT(equal_seed, 5);
}

TEST(Augment, EvalViewsLandOnCentreAndCorners) {
  struct View {
    EvalView v;
    int x, y;
    bool flip;
  };
  for (const View& w : {View{EvalView::kCentre, 14, 14, false}, View{EvalView::kTopLeft, 0, 0, false},
                        View{EvalView::kTopRight, 29, 0, false}, View{EvalView::kBottomLeft, 0, 29, false},
                        View{EvalView::kBottomRight, 29, 29, false}, View{EvalView::kCentreFlip, 14, 14, true},
                        View{EvalView::kTopLeftFlip, 0, 0, true}, View{EvalView::kTopRightFlip, 29, 0, true},
                        View{EvalView::kBottomLeftFlip, 0, 29, true},
                        View{EvalView::kBottomRightFlip, 29, 29, true}}) {
    const SampleAugment a = eval_augment(w.v, kSide, kCrop);
    EXPECT_EQ(a.crop_x, w.x) << static_cast<int>(w.v);
    EXPECT_EQ(a.crop_y, w.y) << static_cast<int>(w.v);
    EXPECT_EQ(a.flip, w.flip) << static_cast<int>(w.v);
    EXPECT_EQ(a.lighting, (std::array<float, 3>{0.f, 0.f, 0.f}));
  }
  EXPECT_EQ(eval_augment(EvalView::kCentre, 256, 224).crop_x, 16);
}

// Random 256x256 RGB source, the crop and its normalisation computed directly from the formula in augment.h.
TEST(Augment, ExtractAndNormalizeMatchDirectComputation) {
  const ImageStats s = test_stats();
  std::mt19937 gen(11);
  std::vector<uint8_t> src(kSide * kSide * 3);
  for (auto& v : src) v = static_cast<uint8_t>(gen());
  for (bool flip : {false, true}) {
    for (bool use_mean_image : {true, false}) {
      SampleAugment a;
      a.crop_x = 21;
      a.crop_y = 5;
      a.flip = flip;
      a.lighting = {3.25f, -7.5f, 1.125f};
      std::vector<uint8_t> crop(3 * kCrop * kCrop);
      std::vector<float> out(3 * kCrop * kCrop);
      extract_crop(src.data(), kSide, a, kCrop, crop.data());
      normalize_crop(crop.data(), kCrop, a, s, use_mean_image, out.data());
      double max_err = 0;
      for (int c = 0; c < 3; ++c)
        for (int y = 0; y < kCrop; ++y)
          for (int x = 0; x < kCrop; ++x) {
            const int sx = a.crop_x + (flip ? kCrop - 1 - x : x), sy = a.crop_y + y;
            const size_t o = (size_t(c) * kCrop + y) * kCrop + x;
            ASSERT_EQ(crop[o], src[(size_t(sy) * kSide + sx) * 3 + c]) << c << " " << y << " " << x;
            const double mean = use_mean_image ? double(s.mean_image[(size_t(c) * kSide + sy) * kSide + sx])
                                               : s.channel_mean[c];
            const double want = double(src[(size_t(sy) * kSide + sx) * 3 + c]) - mean + double(a.lighting[c]);
            max_err = std::max(max_err, std::abs(double(out[o]) - want));
          }
      EXPECT_LT(max_err, 1e-4) << "flip " << flip << " mean image " << use_mean_image;
    }
  }
}

TEST(Augment, CropOutsideTheImageIsRejected) {
  const ImageStats s = test_stats();
  SampleAugment a;
  a.crop_x = 30;
  std::vector<uint8_t> src(kSide * kSide * 3), crop(3 * kCrop * kCrop);
  EXPECT_THROW(extract_crop(src.data(), kSide, a, kCrop, crop.data()), std::exception);
  EXPECT_THROW(draw_train_augment(kSeed, 0, 0, 200, kCrop, 0.1, s), std::exception);
  EXPECT_THROW(draw_train_augment(kSeed, 0, -1, kSide, kCrop, 0.1, s), std::exception);
}

}  // namespace
}  // namespace alexnet
