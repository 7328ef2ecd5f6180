// The per-element functions of our CUDA kernels (model/cuda/kernel_elements.h), run on the host over
// every element, against the CPU backend: max pooling (ties and NaNs), its gradient, dropout and the
// input step bit for bit (what the GPU must match exactly), LRN across and within channels within
// float rounding, the NCHW <-> NHWC index map of the bf16 convolution operands, the coverage of the
// channel sums, and the SGD step. Runs in every build, with or without a GPU; the GPU tests then check
// the kernels themselves on a device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "core/rng.h"
#include "data_service/augment.h"
#include "model/cuda/kernel_elements.h"
#include "model/layers.h"
#include "tests/common/expect.h"
#include "tests/common/gradcheck.h"
#include "tests/common/random_crops.h"

namespace alexnet {
namespace {

using testing::max_rel_diff;

Tensor uniform(const Shape& shape, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  return testing::random_tensor(shape, seed, lo, hi).to(DType::kF32);
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

TEST(KernelElements, MaxPoolIsTheCpusBitForBit) {
  for (bool with_nan : {false, true})
    for (PoolParams p : {PoolParams{3, 2}, PoolParams{2, 2}, PoolParams{3, 1}, PoolParams{2, 3}}) {
      const int64_t H = 13, W = 11;
      const Shape s{2, 3, H, W};
      Tensor x = uniform(s, 11);
      for (int64_t i = 0; i < x.numel(); i += 5) x.data<float>()[i] = 0.5f;  // ties
      if (with_nan)
        for (int64_t i = 3; i < x.numel(); i += 17) x.data<float>()[i] = std::numeric_limits<float>::quiet_NaN();
      const int64_t Ho = (H - p.size) / p.stride + 1, Wo = (W - p.size) / p.stride + 1;
      const Shape o{2, 3, Ho, Wo};
      Tensor y = Tensor::empty(o), arg = Tensor::empty(o, DType::kI32), dy = uniform(o, 12), dx = Tensor::empty(s);
      maxpool_forward_cpu(x, y, arg, p);
      maxpool_backward_cpu(dy, arg, dx);
      Tensor ky = Tensor::empty(o), karg = Tensor::empty(o, DType::kI32), kdx = Tensor::empty(s);
      for (int64_t i = 0; i < ky.numel(); ++i)
        kernel::maxpool_fwd(i, x.data<float>(), ky.data<float>(), karg.data<int32_t>(), H, W, Ho, Wo, p.size, p.stride);
      for (int64_t i = 0; i < kdx.numel(); ++i)
        kernel::maxpool_bwd(i, dy.data<float>(), karg.data<int32_t>(), kdx.data<float>(), H, W, Ho, Wo, p.size,
                            p.stride);
      const std::string what = "pool " + std::to_string(p.size) + "/" + std::to_string(p.stride) +
                               (with_nan ? " with NaNs" : "");
      EXPECT_TRUE(same_bits(karg, arg)) << "argmax, " << what;
      EXPECT_TRUE(same_bits(ky, y)) << what;
      EXPECT_TRUE(same_bits(kdx, dx)) << "backward, " << what;
    }
}

TEST(KernelElements, DropoutIsTheCpusBitForBit) {
  const int64_t N = 6, U = 1000;
  Tensor x = uniform({N, U}, 21);
  const std::vector<int64_t> ids = {5, 1000003, 17, 9, 123456789012, 0};
  for (int64_t offset : {int64_t{0}, int64_t{2048}, int64_t{2050}, int64_t{4097}})
    for (bool with_ids : {true, false})
      for (double p : {0.5, 0.1, 0.9}) {
        DropoutKeying k;
        k.key = make_key(77, RngPurpose::kDropout, 6);
        k.step = 4242;
        k.sample_ids = with_ids ? ids.data() : nullptr;
        k.unit_offset = offset;
        Tensor y = Tensor::empty({N, U}), mask = Tensor::empty({N, U}, DType::kU8);
        dropout_forward_cpu(x, y, mask, p, k);
        Tensor ky = Tensor::empty({N, U}), kmask = Tensor::empty({N, U}, DType::kU8);
        const float scale = static_cast<float>(1.0 / (1.0 - p));  // as dropout_forward_cuda passes it
        for (int64_t i = 0; i < N * U; ++i)
          kernel::dropout_fwd(i, x.data<float>(), ky.data<float>(), kmask.data<uint8_t>(), U, p, scale, k.key, k.step,
                              k.sample_ids, offset);
        const std::string what = "p " + std::to_string(p) + " offset " + std::to_string(offset) +
                                 (with_ids ? " with ids" : " without ids");
        EXPECT_TRUE(same_bits(kmask, mask)) << what;
        EXPECT_TRUE(same_bits(ky, y)) << what;
      }
}

// A CUDA tower's training pass uploads each row's draw counter with the step inside it, (step << 32) |
// sample, and launches the kernel with step 0, so that a replayed CUDA graph draws each new step's masks:
// the same masks as the CPU's keying with the step, ids above 2^32 included.
TEST(KernelElements, DropoutCountersCarryingTheStepAreTheCpusMasks) {
  const int64_t N = 6, U = 300;
  Tensor x = uniform({N, U}, 23);
  const std::vector<int64_t> ids = {5, 1000003, 17, 9, 123456789012, 0};
  for (uint64_t step : {uint64_t{0}, uint64_t{1}, uint64_t{4242}, uint64_t{1} << 31}) {
    DropoutKeying k;
    k.key = make_key(78, RngPurpose::kDropout, 7);
    k.step = step;
    k.sample_ids = ids.data();
    k.unit_offset = 2048;
    Tensor y = Tensor::empty({N, U}), mask = Tensor::empty({N, U}, DType::kU8);
    dropout_forward_cpu(x, y, mask, 0.5, k);
    std::vector<int64_t> counters(N);
    for (int64_t r = 0; r < N; ++r) counters[r] = static_cast<int64_t>((step << 32) | static_cast<uint64_t>(ids[r]));
    Tensor ky = Tensor::empty({N, U}), kmask = Tensor::empty({N, U}, DType::kU8);
    for (int64_t i = 0; i < N * U; ++i)
      kernel::dropout_fwd(i, x.data<float>(), ky.data<float>(), kmask.data<uint8_t>(), U, 0.5, 2.0f, k.key, 0,
                          counters.data(), k.unit_offset);
    EXPECT_TRUE(same_bits(kmask, mask)) << "step " << step;
    EXPECT_TRUE(same_bits(ky, y)) << "step " << step;
  }
}

TEST(KernelElements, InputStepIsNormalizeCropBitForBit) {
  const int64_t n = 5, crop = 31, side = 40;
  Tensor crops = Tensor::empty({n, 3, crop, crop}, DType::kU8);
  const CounterRng pix(make_key(5, RngPurpose::kLighting), 1);
  for (int64_t i = 0; i < crops.numel(); ++i) crops.data<uint8_t>()[i] = static_cast<uint8_t>(pix.bits(i) & 0xff);
  ImageStats stats;
  stats.side = static_cast<int>(side);
  Tensor mimg = uniform({3, side, side}, 31, 0, 255);
  stats.mean_image.assign(mimg.data<float>(), mimg.data<float>() + mimg.numel());
  stats.channel_mean = {123.675, 116.28, 103.53};
  const float cmean[3] = {123.675f, 116.28f, 103.53f};
  const testing::RandomCrops rc = testing::random_crops(6, n, crop, side, /*flip_every_other=*/true);
  const std::vector<SampleAugment>& aug = rc.aug;
  const std::vector<int32_t>& place = rc.place;
  const std::vector<float>& light = rc.light;
  for (const bool use_image : {true, false}) {
    Tensor expect = Tensor::empty({n, 3, crop, crop}), got = Tensor::empty({n, 3, crop, crop});
    for (int64_t i = 0; i < n; ++i)
      normalize_crop(crops.data<uint8_t>() + i * 3 * crop * crop, static_cast<int>(crop), aug[i], stats, use_image,
                     expect.data<float>() + i * 3 * crop * crop);
    for (int64_t i = 0; i < got.numel(); ++i) {
      if (use_image)
        kernel::normalize_image_mean(i, crops.data<uint8_t>(), place.data(), light.data(), mimg.data<float>(),
                                     got.data<float>(), crop, side);
      else
        kernel::normalize_channel_mean(i, crops.data<uint8_t>(), light.data(), cmean, got.data<float>(), crop);
    }
    EXPECT_TRUE(same_bits(got, expect)) << (use_image ? "mean image" : "channel means") << ": max rel diff "
                                        << max_rel_diff(got, expect);
  }
}

TEST(KernelElements, LrnAcrossAndWithinChannelsMatchTheCpu) {
  const Shape s{2, 7, 6, 5};
  const int64_t C = s[1], H = s[2], W = s[3], S = H * W;
  Tensor x = uniform(s, 41, -3, 3), dy = uniform(s, 42);
  for (bool within : {false, true})
    for (int n : {1, 2, 3, 5, 9})
      for (double beta : {0.75, 0.5, 1.0, 0.6}) {
        const LrnParams p{2.0, n, 1e-2, beta};
        Tensor y = Tensor::empty(s), sc = Tensor::empty(s), dx = Tensor::empty(s);
        Tensor ky = Tensor::empty(s), ksc = Tensor::empty(s), kdx = Tensor::empty(s);
        // The arguments the CUDA wrappers derive (lrn_forward_cuda / lrn_backward_cuda).
        const float k = static_cast<float>(p.k), alpha = static_cast<float>(p.alpha), b = static_cast<float>(p.beta);
        const float coef = static_cast<float>(2.0 * p.alpha * p.beta);
        const float* xp = x.data<float>();
        if (within) {
          lrn2d_forward_cpu(x, y, sc, p);
          lrn2d_backward_cpu(x, y, sc, dy, dx, p);
          for (int64_t i = 0; i < x.numel(); ++i)
            kernel::lrn_2d_fwd(i, xp, ky.data<float>(), ksc.data<float>(), H, W, n / 2, k, alpha, b);
          for (int64_t i = 0; i < x.numel(); ++i)
            kernel::lrn_2d_bwd(i, xp, ky.data<float>(), ksc.data<float>(), dy.data<float>(), kdx.data<float>(), H, W,
                               n / 2, coef, b);
        } else {
          lrn_forward_cpu(x, y, sc, p);
          lrn_backward_cpu(x, y, sc, dy, dx, p);
          for (int64_t i = 0; i < x.numel(); ++i)
            kernel::lrn_across_fwd(i, xp, ky.data<float>(), ksc.data<float>(), C, S, n / 2, k, alpha, b);
          for (int64_t i = 0; i < x.numel(); ++i)
            kernel::lrn_across_bwd(i, xp, ky.data<float>(), ksc.data<float>(), dy.data<float>(), kdx.data<float>(), C,
                                   S, n / 2, coef, b);
        }
        const std::string what = std::string(within ? "2D" : "across") + " n=" + std::to_string(n) +
                                 " beta=" + std::to_string(beta);
        EXPECT_LE(max_rel_diff(ksc, sc), 1e-6) << what;
        EXPECT_LE(max_rel_diff(ky, y), 2e-6) << what;
        EXPECT_LE(max_rel_diff(kdx, dx), 1e-5) << what;
      }
}

// The layout change of the bf16 convolution operands (dense_cuda.cu): NCHW to NHWC puts x(n, c, h, w)
// at ((n * H + h) * W + w) * C + c, and the way back (P and Q swapped) restores every element.
TEST(KernelElements, TransposeIsNchwToNhwcAndBack) {
  for (const Shape& s : {Shape{2, 3, 5, 7}, Shape{1, 1, 4, 4}, Shape{3, 16, 1, 1}, Shape{2, 48, 6, 5}}) {
    const int64_t N = s[0], C = s[1], H = s[2], W = s[3], S = H * W, total = N * C * S;
    std::vector<float> x(static_cast<size_t>(total)), nhwc(x.size(), -1.0f), back(x.size(), -1.0f);
    for (int64_t i = 0; i < total; ++i) x[i] = static_cast<float>(i);
    for (int64_t i = 0; i < total; ++i) nhwc[i] = x[kernel::transposed_source(i, C, S)];
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t w = 0; w < W; ++w)
            ASSERT_EQ(nhwc[((n * H + h) * W + w) * C + c], x[((n * C + c) * H + h) * W + w])
                << shape_str(s) << " at n " << n << " c " << c << " h " << h << " w " << w;
    for (int64_t i = 0; i < total; ++i) back[i] = nhwc[kernel::transposed_source(i, S, C)];
    EXPECT_EQ(back, x) << shape_str(s);
  }
}

// The per-thread loops of channel_sums (bias gradients, batch-norm statistics and their gradients):
// over the whole grid, every element of a channel is visited exactly once, by a block of that channel,
// for any number of sample groups and threads, on [N, C, S] data and across rows on [N, C].
TEST(KernelElements, ChannelSumsVisitEveryElementOnce) {
  struct Visit {
    std::vector<int>* seen;
    int64_t C, S;
    int* foreign;
    void operator()(int64_t e, int64_t c, double* acc) const {
      ++(*seen)[static_cast<size_t>(e)];
      if ((e / S) % C != c) ++*foreign;
      acc[0] += 1.0;
    }
  };
  const Shape shapes[] = {{5, 3, 7}, {128, 4, 9}, {3, 2, 1}, {17, 40, 1}, {1, 5, 4}, {40, 3, 50}, {128, 70, 1}};
  for (const Shape& s : shapes) {
    const int64_t N = s[0], C = s[1], S = s[2];
    for (int64_t G : {int64_t{1}, int64_t{2}, int64_t{7}, int64_t{32}}) {
      if (G > N) continue;
      for (uint32_t threads : {256u, 3u}) {
        std::vector<int> seen(static_cast<size_t>(N * C * S), 0);
        int foreign = 0;
        const Visit visit{&seen, C, S, &foreign};
        for (int64_t c = 0; c < C; ++c) {
          double total = 0;
          for (int64_t g = 0; g < G; ++g)
            for (uint32_t t = 0; t < threads; ++t) {
              double acc[1] = {0};
              kernel::channel_thread_sums(visit, t, threads, c, g, N, C, S, G, acc);
              total += acc[0];
            }
          EXPECT_EQ(total, static_cast<double>(N * S)) << shape_str(s) << " G " << G << " channel " << c;
        }
        EXPECT_EQ(foreign, 0) << shape_str(s) << " G " << G;
        EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), static_cast<std::ptrdiff_t>(seen.size()))
            << shape_str(s) << " G " << G << " threads " << threads;
      }
      if (S != 1) continue;
      std::vector<int> seen(static_cast<size_t>(N * C), 0);
      int foreign = 0;
      const Visit visit{&seen, C, 1, &foreign};
      for (int64_t b = 0; b < (C + 31) / 32; ++b)
        for (int64_t g = 0; g < G; ++g)
          for (int row = 0; row < 8; ++row)
            for (int lane = 0; lane < 32; ++lane) {
              double acc[1] = {0};
              kernel::column_thread_sums(visit, lane, row, b, g, N, C, G, acc);
            }
      EXPECT_EQ(foreign, 0) << shape_str(s) << " G " << G << " (rows)";
      EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), static_cast<std::ptrdiff_t>(seen.size()))
          << shape_str(s) << " G " << G << " (rows)";
    }
  }
}

// The SGD step of the CUDA kernels (per tensor and over a whole arena) is sgd_update_cpu's rule, within
// float rounding (compilers may fuse its products into FMAs differently); an element decays exactly
// inside the ranges.
TEST(KernelElements, SgdIsTheCpusUpdateAndDecaysOnlyInsideTheRanges) {
  const int64_t n = 1000;
  Tensor w = uniform({n}, 71), g = uniform({n}, 72), v = uniform({n}, 73, -0.1, 0.1);
  const double lr = 0.01, momentum = 0.9, wd = 0.0005;
  const int64_t begin[] = {0, 400}, end[] = {300, 990};
  Tensor cw = w.clone(), cv = v.clone();
  // The CPU reference: the decayed ranges with weight decay, the rest without.
  for (const auto& [lo, hi, decays] : {std::tuple{int64_t{0}, int64_t{300}, true}, std::tuple{int64_t{300}, int64_t{400}, false},
                                       std::tuple{int64_t{400}, int64_t{990}, true}, std::tuple{int64_t{990}, n, false}}) {
    Tensor ws = cw.slice0(lo, hi), gs = g.slice0(lo, hi), vs = cv.slice0(lo, hi);
    sgd_update_cpu(ws, gs, vs, lr, momentum, decays ? wd : 0.0);
  }
  for (int64_t i = 0; i < n; ++i) {
    const bool decays = kernel::in_ranges(i, 2, begin, end);
    EXPECT_EQ(decays, (i < 300) || (i >= 400 && i < 990)) << i;
    kernel::sgd_element(i, w.data<float>(), g.data<float>(), v.data<float>(), static_cast<float>(momentum),
                        decays ? static_cast<float>(wd * lr) : 0.0f, static_cast<float>(lr));
  }
  EXPECT_LE(max_rel_diff(w, cw), 1e-6);
  EXPECT_LE(max_rel_diff(v, cv), 1e-6);
  EXPECT_FALSE(kernel::in_ranges(5, 0, begin, end));
}

}  // namespace
}  // namespace alexnet
