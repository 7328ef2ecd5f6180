// Local response normalisation on the CPU (paper §3.3, alpha not divided by n): across channels
// and within one channel ("2D"), forward and backward, float32 and float64.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "model/layers.h"

namespace alexnet {
namespace {

// Below this many elements a single thread beats the cost of waking the OpenMP team.
constexpr int64_t kParallelMin = 1 << 15;
// Spatial positions one task of the across-channel kernels handles: its running sums (one per
// position) stay in L1 while the task walks the channels.
constexpr int64_t kChunk = 512;

// How s^-beta is computed. The paper's beta = 0.75 and the common 0.5 and 1 have closed forms
// that vectorise; any other beta takes the general path (pow, one element at a time).
enum class PowKind { kThreeQuarters, kHalf, kOne, kGeneral };

// 1/sqrt(s) for s > 0. GCC keeps sqrtf a library call (it may set errno) unless the build says
// -fno-math-errno, and a call stops the loop from vectorising; so float32 uses a bit-level first
// guess (relative error < 4e-2) and three Newton steps (each squares the error), which reach
// float32 rounding (~1e-7).
// float64 (gradient checks, worked examples) keeps the exact library square root.
inline float rsqrt(float s) {
  float r = std::bit_cast<float>(0x5f375a86u - (std::bit_cast<uint32_t>(s) >> 1));
  const float half = 0.5f * s;
  r = r * (1.5f - half * r * r);
  r = r * (1.5f - half * r * r);
  r = r * (1.5f - half * r * r);
  return r;
}
inline double rsqrt(double s) { return 1.0 / std::sqrt(s); }

template <class T, PowKind K>
inline T neg_pow(T s, T beta) {
  if constexpr (K == PowKind::kThreeQuarters) {
    // s^-3/4 = r^2 r^-1/2 with r = s^-1/2 (no product that could overflow for large s).
    const T r = rsqrt(s);
    return r * r * rsqrt(r);
  } else if constexpr (K == PowKind::kHalf) {
    return rsqrt(s);
  } else if constexpr (K == PowKind::kOne) {
    return T(1) / s;
  } else {
    return std::pow(s, -beta);
  }
}

// Calls f(std::integral_constant<PowKind, ...>) for the kind that fits beta.
template <class F>
void dispatch_pow(double beta, F&& f) {
  if (beta == 0.75) {
    f(std::integral_constant<PowKind, PowKind::kThreeQuarters>{});
  } else if (beta == 0.5) {
    f(std::integral_constant<PowKind, PowKind::kHalf>{});
  } else if (beta == 1.0) {
    f(std::integral_constant<PowKind, PowKind::kOne>{});
  } else {
    f(std::integral_constant<PowKind, PowKind::kGeneral>{});
  }
}

void check_same(const Tensor& a, const Tensor& ref, const char* what) {
  ALEXNET_ASSERT(a.device().is_cpu() && a.dtype() == ref.dtype() && a.shape() == ref.shape(),
                 "lrn: ", what, " is ", a.describe(), ", expected like ", ref.describe());
}

void check_lrn_args(const Tensor& x, const LrnParams& p) {
  ALEXNET_ASSERT(x.device().is_cpu() && x.ndim() == 4, "lrn: x is ", x.describe());
  ALEXNET_ASSERT(x.dtype() == DType::kF32 || x.dtype() == DType::kF64, "lrn: x is ", x.describe());
  ALEXNET_ASSERT(p.n >= 1, "lrn: n = ", p.n);
}

// Split of the spatial positions of one image into near-equal chunks of at most kChunk.
struct Chunking {
  int64_t count;
  int64_t size;
};

Chunking chunking(int64_t positions) {
  int64_t count = std::max<int64_t>(1, (positions + kChunk - 1) / kChunk);
  int64_t size = (positions + count - 1) / count;
  size = std::min(kChunk, (size + 15) / 16 * 16);
  count = (positions + size - 1) / size;
  return {count, size};
}

// ---- across channels: a running sum over the channel window, one per spatial position ----

template <class T, PowKind K>
void across_forward(const T* x, T* y, T* scale, int64_t N, int64_t C, int64_t S,
                    const LrnParams& p) {
  const int64_t h = p.n / 2;
  const T k = static_cast<T>(p.k), alpha = static_cast<T>(p.alpha), beta = static_cast<T>(p.beta);
  const Chunking ch = chunking(S);
#pragma omp parallel for schedule(static) if (N * C * S >= kParallelMin)
  for (int64_t task = 0; task < N * ch.count; ++task) {
    const int64_t n = task / ch.count;
    const int64_t s0 = (task % ch.count) * ch.size;
    const int64_t len = std::min(ch.size, S - s0);
    const int64_t base = n * C * S + s0;
    alignas(64) T acc[kChunk];
    for (int64_t i = 0; i < len; ++i) acc[i] = T(0);
    for (int64_t j = 0; j <= std::min(C - 1, h); ++j) {
      const T* __restrict xj = x + base + j * S;
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) acc[i] += xj[i] * xj[i];
    }
    for (int64_t c = 0; c < C; ++c) {
      const T* __restrict xc = x + base + c * S;
      T* __restrict yc = y + base + c * S;
      T* __restrict sc = scale + base + c * S;
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) {
        T s = k + alpha * acc[i];
        sc[i] = s;
        yc[i] = xc[i] * neg_pow<T, K>(s, beta);
      }
      // Slide the window [c-h, c+h] to [c+1-h, c+1+h].
      if (c + h + 1 < C) {
        const T* __restrict xa = x + base + (c + h + 1) * S;
#pragma omp simd
        for (int64_t i = 0; i < len; ++i) acc[i] += xa[i] * xa[i];
      }
      if (c - h >= 0) {
        const T* __restrict xr = x + base + (c - h) * S;
#pragma omp simd
        for (int64_t i = 0; i < len; ++i) acc[i] -= xr[i] * xr[i];
      }
    }
  }
}

// dx[i] = dy[i] scale[i]^-beta - 2 alpha beta x[i] sum_{j in window(i)} dy[j] y[j] / scale[j]:
// the window is symmetric, so i is in window(j) exactly when j is in window(i). The terms
// dy y / scale of the channels in the window are kept in a ring of rows, so each is computed once.
template <class T, PowKind K>
void across_backward(const T* x, const T* y, const T* scale, const T* dy, T* dx, int64_t N,
                     int64_t C, int64_t S, const LrnParams& p) {
  const int64_t h = p.n / 2;
  const T beta = static_cast<T>(p.beta);
  const T coef = static_cast<T>(2.0 * p.alpha * p.beta);
  const Chunking ch = chunking(S);
  // At most 2h+1 channels are in a window (fewer when C is smaller), so rows j % ring_rows of
  // the live channels never collide.
  const int64_t ring_rows = std::min(C, 2 * h + 1);
#pragma omp parallel if (N * C * S >= kParallelMin)
  {
    std::vector<T> ring(static_cast<size_t>(ring_rows * ch.size));
#pragma omp for schedule(static)
    for (int64_t task = 0; task < N * ch.count; ++task) {
      const int64_t n = task / ch.count;
      const int64_t s0 = (task % ch.count) * ch.size;
      const int64_t len = std::min(ch.size, S - s0);
      const int64_t base = n * C * S + s0;
      alignas(64) T acc[kChunk];
      for (int64_t i = 0; i < len; ++i) acc[i] = T(0);
      auto add = [&](int64_t j) {
        const int64_t o = base + j * S;
        const T* __restrict dyj = dy + o;
        const T* __restrict yj = y + o;
        const T* __restrict sj = scale + o;
        T* __restrict t = ring.data() + (j % ring_rows) * ch.size;
#pragma omp simd
        for (int64_t i = 0; i < len; ++i) {
          t[i] = dyj[i] * yj[i] / sj[i];
          acc[i] += t[i];
        }
      };
      auto remove = [&](int64_t j) {
        const T* __restrict t = ring.data() + (j % ring_rows) * ch.size;
#pragma omp simd
        for (int64_t i = 0; i < len; ++i) acc[i] -= t[i];
      };
      for (int64_t j = 0; j <= std::min(C - 1, h); ++j) add(j);
      for (int64_t c = 0; c < C; ++c) {
        const int64_t o = base + c * S;
        const T* __restrict xc = x + o;
        const T* __restrict sc = scale + o;
        const T* __restrict dyc = dy + o;
        T* __restrict dxc = dx + o;
#pragma omp simd
        for (int64_t i = 0; i < len; ++i)
          dxc[i] = dyc[i] * neg_pow<T, K>(sc[i], beta) - coef * xc[i] * acc[i];
        // Remove before adding, so no more than 2h+1 rows are live.
        if (c - h >= 0) remove(c - h);
        if (c + h + 1 < C) add(c + h + 1);
      }
    }
  }
}

// ---- within one channel: separable box sums over the clipped (2h+1) x (2h+1) window ----

// Per-thread scratch for box_sum.
template <class T>
struct BoxScratch {
  std::vector<T> rows, pad, acc;
  BoxScratch(int64_t H, int64_t W, int64_t h)
      : rows(H * W), pad(W + 2 * std::min(h, W - 1)), acc(W) {}
};

// out[r, c] = sum of in over rows [r-h, r+h] and columns [c-h, c+h], clipped to the plane.
// out may alias in. The horizontal pass sums shifted copies of a zero-padded row (vectorises
// along the row); the vertical pass keeps a running sum of rows.
template <class T>
void box_sum(const T* in, T* out, int64_t H, int64_t W, int64_t h, BoxScratch<T>& b) {
  // A window wider than the plane covers it all; clamping keeps the cost independent of n.
  const int64_t hw = std::min(h, W - 1), hh = std::min(h, H - 1);
  T* __restrict pad = b.pad.data();
  T* __restrict rows = b.rows.data();
  T* __restrict acc = b.acc.data();
  for (int64_t i = 0; i < hw; ++i) pad[i] = pad[hw + W + i] = T(0);
  for (int64_t r = 0; r < H; ++r) {
    std::copy(in + r * W, in + (r + 1) * W, pad + hw);
    T* __restrict row = rows + r * W;
#pragma omp simd
    for (int64_t c = 0; c < W; ++c) row[c] = pad[c];
    for (int64_t d = 1; d <= 2 * hw; ++d) {
#pragma omp simd
      for (int64_t c = 0; c < W; ++c) row[c] += pad[c + d];
    }
  }
  for (int64_t c = 0; c < W; ++c) acc[c] = T(0);
  for (int64_t r = 0; r <= hh; ++r) {
#pragma omp simd
    for (int64_t c = 0; c < W; ++c) acc[c] += rows[r * W + c];
  }
  for (int64_t r = 0; r < H; ++r) {
    T* o = out + r * W;
#pragma omp simd
    for (int64_t c = 0; c < W; ++c) o[c] = acc[c];
    if (r + hh + 1 < H) {
      const T* __restrict a = rows + (r + hh + 1) * W;
#pragma omp simd
      for (int64_t c = 0; c < W; ++c) acc[c] += a[c];
    }
    if (r - hh >= 0) {
      const T* __restrict s = rows + (r - hh) * W;
#pragma omp simd
      for (int64_t c = 0; c < W; ++c) acc[c] -= s[c];
    }
  }
}

template <class T, PowKind K>
void within_forward(const T* x, T* y, T* scale, int64_t planes, int64_t H, int64_t W,
                    const LrnParams& p) {
  const int64_t h = p.n / 2, S = H * W;
  const T k = static_cast<T>(p.k), alpha = static_cast<T>(p.alpha), beta = static_cast<T>(p.beta);
#pragma omp parallel if (planes * S >= kParallelMin)
  {
    BoxScratch<T> scratch(H, W, h);
#pragma omp for schedule(static)
    for (int64_t pl = 0; pl < planes; ++pl) {
      const T* __restrict xp = x + pl * S;
      T* __restrict yp = y + pl * S;
      T* __restrict sp = scale + pl * S;
#pragma omp simd
      for (int64_t i = 0; i < S; ++i) sp[i] = xp[i] * xp[i];
      box_sum(sp, sp, H, W, h, scratch);
#pragma omp simd
      for (int64_t i = 0; i < S; ++i) {
        T s = k + alpha * sp[i];
        sp[i] = s;
        yp[i] = xp[i] * neg_pow<T, K>(s, beta);
      }
    }
  }
}

template <class T, PowKind K>
void within_backward(const T* x, const T* y, const T* scale, const T* dy, T* dx, int64_t planes,
                     int64_t H, int64_t W, const LrnParams& p) {
  const int64_t h = p.n / 2, S = H * W;
  const T beta = static_cast<T>(p.beta);
  const T coef = static_cast<T>(2.0 * p.alpha * p.beta);
#pragma omp parallel if (planes * S >= kParallelMin)
  {
    BoxScratch<T> scratch(H, W, h);
#pragma omp for schedule(static)
    for (int64_t pl = 0; pl < planes; ++pl) {
      const T* __restrict xp = x + pl * S;
      const T* __restrict yp = y + pl * S;
      const T* __restrict sp = scale + pl * S;
      const T* __restrict dyp = dy + pl * S;
      T* __restrict dxp = dx + pl * S;
      // dx holds the per-position terms dy y / scale, then their window sums, then the result.
#pragma omp simd
      for (int64_t i = 0; i < S; ++i) dxp[i] = dyp[i] * yp[i] / sp[i];
      box_sum(dxp, dxp, H, W, h, scratch);
#pragma omp simd
      for (int64_t i = 0; i < S; ++i)
        dxp[i] = dyp[i] * neg_pow<T, K>(sp[i], beta) - coef * xp[i] * dxp[i];
    }
  }
}

template <class T>
void forward_typed(const Tensor& x, Tensor& y, Tensor& scale, const LrnParams& p, bool within) {
  const int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3);
  const T* xp = x.data<T>();
  T* yp = y.data<T>();
  T* sp = scale.data<T>();
  dispatch_pow(p.beta, [&](auto kind) {
    if (within) {
      within_forward<T, decltype(kind)::value>(xp, yp, sp, N * C, H, W, p);
    } else {
      across_forward<T, decltype(kind)::value>(xp, yp, sp, N, C, H * W, p);
    }
  });
}

template <class T>
void backward_typed(const Tensor& x, const Tensor& y, const Tensor& scale, const Tensor& dy,
                    Tensor& dx, const LrnParams& p, bool within) {
  const int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3);
  dispatch_pow(p.beta, [&](auto kind) {
    if (within) {
      within_backward<T, decltype(kind)::value>(x.data<T>(), y.data<T>(), scale.data<T>(),
                                                dy.data<T>(), dx.data<T>(), N * C, H, W, p);
    } else {
      across_backward<T, decltype(kind)::value>(x.data<T>(), y.data<T>(), scale.data<T>(),
                                                dy.data<T>(), dx.data<T>(), N, C, H * W, p);
    }
  });
}

void forward(const Tensor& x, Tensor& y, Tensor& scale, const LrnParams& p, bool within) {
  check_lrn_args(x, p);
  check_same(y, x, "y");
  check_same(scale, x, "scale");
  ALEXNET_ASSERT(!y.overlaps(x) && !scale.overlaps(x) && !y.overlaps(scale),
                 "lrn: outputs alias x");
  if (x.dtype() == DType::kF32) {
    forward_typed<float>(x, y, scale, p, within);
  } else {
    forward_typed<double>(x, y, scale, p, within);
  }
}

void backward(const Tensor& x, const Tensor& y, const Tensor& scale, const Tensor& dy, Tensor& dx,
              const LrnParams& p, bool within) {
  check_lrn_args(x, p);
  check_same(y, x, "y");
  check_same(scale, x, "scale");
  check_same(dy, x, "dy");
  check_same(dx, x, "dx");
  ALEXNET_ASSERT(!dx.overlaps(dy) && !dx.overlaps(x) && !dx.overlaps(y) && !dx.overlaps(scale),
                 "lrn: dx aliases an input");
  if (x.dtype() == DType::kF32) {
    backward_typed<float>(x, y, scale, dy, dx, p, within);
  } else {
    backward_typed<double>(x, y, scale, dy, dx, p, within);
  }
}

}  // namespace

void lrn_forward_cpu(const Tensor& x, Tensor& y, Tensor& scale, const LrnParams& p) {
  forward(x, y, scale, p, /*within=*/false);
}

void lrn_backward_cpu(const Tensor& x, const Tensor& y, const Tensor& scale, const Tensor& dy,
                      Tensor& dx, const LrnParams& p) {
  backward(x, y, scale, dy, dx, p, /*within=*/false);
}

void lrn2d_forward_cpu(const Tensor& x, Tensor& y, Tensor& scale, const LrnParams& p) {
  forward(x, y, scale, p, /*within=*/true);
}

void lrn2d_backward_cpu(const Tensor& x, const Tensor& y, const Tensor& scale, const Tensor& dy,
                        Tensor& dx, const LrnParams& p) {
  backward(x, y, scale, dy, dx, p, /*within=*/true);
}

}  // namespace alexnet
