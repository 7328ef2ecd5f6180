// What one GPU thread computes for one output element of our own kernels (LRN, max pooling, dropout, the
// input step, the NCHW <-> NHWC change of bf16 convolution operands, the per-thread part of the channel
// sums, the SGD step), as host-and-device functions:
// model/cuda/layers_cuda.cu and dense_cuda.cu run them in their grid-stride kernels, and tests/model/test_kernel_elements.cc runs the same functions on the host over every
// element against the CPU backend, so their index arithmetic and formulas are checked in every build,
// with or without a GPU. Plain C++ outside nvcc (ALEXNET_HD, core/rng.h).
#pragma once

#include <cmath>
#include <cstdint>

#include "core/rng.h"

namespace alexnet::kernel {

// s^-beta for the LRN: rsqrt products for the paper's beta 0.75 and for 0.5 (the device's rsqrtf;
// 1 / sqrt on the host), 1 / s for 1, powf otherwise.
ALEXNET_HD float neg_pow(float s, float beta) {
#if defined(__CUDA_ARCH__)
  if (beta == 0.75f) {
    const float r = rsqrtf(s);
    return r * r * rsqrtf(r);
  }
  if (beta == 0.5f) return rsqrtf(s);
#else
  if (beta == 0.75f) {
    const float r = 1.0f / std::sqrt(s);
    return r * r * (1.0f / std::sqrt(r));
  }
  if (beta == 0.5f) return 1.0f / std::sqrt(s);
#endif
  if (beta == 1.0f) return 1.0f / s;
  return powf(s, -beta);
}

// LRN across channels (paper §3.3: alpha not divided by n; window [c - h, c + h] clipped, h = n / 2).
// Element i = ((n * C + c) * S + s).
ALEXNET_HD void lrn_across_fwd(int64_t i, const float* x, float* y, float* scale, int64_t C, int64_t S, int h,
                               float k, float alpha, float beta) {
  const int64_t c = (i / S) % C, base = i - c * S;
  const int64_t lo = c - h < 0 ? 0 : c - h, hi = c + h > C - 1 ? C - 1 : c + h;
  float acc = 0.0f;
  for (int64_t j = lo; j <= hi; ++j) {
    const float v = x[base + j * S];
    acc += v * v;
  }
  const float sc = k + alpha * acc;
  scale[i] = sc;
  y[i] = x[i] * neg_pow(sc, beta);
}

// dx[i] = dy[i] scale[i]^-beta - coef x[i] sum_{j in window(i)} dy[j] y[j] / scale[j], coef = 2 alpha beta.
ALEXNET_HD void lrn_across_bwd(int64_t i, const float* x, const float* y, const float* scale, const float* dy,
                               float* dx, int64_t C, int64_t S, int h, float coef, float beta) {
  const int64_t c = (i / S) % C, base = i - c * S;
  const int64_t lo = c - h < 0 ? 0 : c - h, hi = c + h > C - 1 ? C - 1 : c + h;
  float acc = 0.0f;
  for (int64_t j = lo; j <= hi; ++j) {
    const int64_t e = base + j * S;
    acc += dy[e] * y[e] / scale[e];
  }
  dx[i] = dy[i] * neg_pow(scale[i], beta) - coef * x[i] * acc;
}

// LRN within a channel (the "2D" variant): an n x n window of the plane. Element i = ((plane * H + r) * W + col).
ALEXNET_HD void lrn_2d_fwd(int64_t i, const float* x, float* y, float* scale, int64_t H, int64_t W, int h, float k,
                           float alpha, float beta) {
  const int64_t col = i % W, r = (i / W) % H, plane = i / (H * W);
  const float* xp = x + plane * H * W;
  const int64_t r0 = r - h < 0 ? 0 : r - h, r1 = r + h > H - 1 ? H - 1 : r + h;
  const int64_t c0 = col - h < 0 ? 0 : col - h, c1 = col + h > W - 1 ? W - 1 : col + h;
  float acc = 0.0f;
  for (int64_t a = r0; a <= r1; ++a)
    for (int64_t b = c0; b <= c1; ++b) {
      const float v = xp[a * W + b];
      acc += v * v;
    }
  const float sc = k + alpha * acc;
  scale[i] = sc;
  y[i] = x[i] * neg_pow(sc, beta);
}

ALEXNET_HD void lrn_2d_bwd(int64_t i, const float* x, const float* y, const float* scale, const float* dy, float* dx,
                           int64_t H, int64_t W, int h, float coef, float beta) {
  const int64_t col = i % W, r = (i / W) % H, plane = i / (H * W);
  const int64_t off = plane * H * W;
  const int64_t r0 = r - h < 0 ? 0 : r - h, r1 = r + h > H - 1 ? H - 1 : r + h;
  const int64_t c0 = col - h < 0 ? 0 : col - h, c1 = col + h > W - 1 ? W - 1 : col + h;
  float acc = 0.0f;
  for (int64_t a = r0; a <= r1; ++a)
    for (int64_t b = c0; b <= c1; ++b) {
      const int64_t e = off + a * W + b;
      acc += dy[e] * y[e] / scale[e];
    }
  dx[i] = dy[i] * neg_pow(scale[i], beta) - coef * x[i] * acc;
}

// Max pooling, output element i = ((plane * Ho + oy) * Wo + ox). As pool_cpu.cc: strictly greater, so
// the first maximum in row-major order wins, and a NaN always replaces (its window's output is NaN).
ALEXNET_HD void maxpool_fwd(int64_t i, const float* x, float* y, int32_t* arg, int64_t H, int64_t W, int64_t Ho,
                            int64_t Wo, int size, int stride) {
  const int64_t ox = i % Wo, oy = (i / Wo) % Ho, plane = i / (Ho * Wo);
  const float* xp = x + plane * H * W;
  const int64_t y0 = oy * stride, x0 = ox * stride;
  float best = xp[y0 * W + x0];
  int32_t where = static_cast<int32_t>(y0 * W + x0);
  for (int a = 0; a < size; ++a)
    for (int b = 0; b < size; ++b) {
      const int64_t e = (y0 + a) * W + x0 + b;
      const float v = xp[e];
      if (v > best || v != v) {
        best = v;
        where = static_cast<int32_t>(e);
      }
    }
  y[i] = best;
  arg[i] = where;
}

// Input element i gathers, in ascending output order (the CPU's order of additions), the gradients of
// the windows whose maximum it is.
ALEXNET_HD void maxpool_bwd(int64_t i, const float* dy, const int32_t* arg, float* dx, int64_t H, int64_t W,
                            int64_t Ho, int64_t Wo, int size, int stride) {
  const int64_t ix = i % W, iy = (i / W) % H, plane = i / (H * W);
  const int32_t me = static_cast<int32_t>(iy * W + ix);
  // Windows oy with oy*stride <= iy <= oy*stride + size - 1.
  const int64_t oy0 = iy - size + 1 <= 0 ? 0 : (iy - size + 1 + stride - 1) / stride;
  const int64_t ox0 = ix - size + 1 <= 0 ? 0 : (ix - size + 1 + stride - 1) / stride;
  const int64_t oy1 = iy / stride > Ho - 1 ? Ho - 1 : iy / stride;
  const int64_t ox1 = ix / stride > Wo - 1 ? Wo - 1 : ix / stride;
  const int64_t off = plane * Ho * Wo;
  float acc = 0.0f;
  for (int64_t oy = oy0; oy <= oy1; ++oy)
    for (int64_t ox = ox0; ox <= ox1; ++ox) {
      const int64_t o = off + oy * Wo + ox;
      if (arg[o] == me) acc += dy[o];
    }
  dx[i] = acc;
}

// Dropout with the CPU's draws (dropout_forward_cpu): element i = r * U + j; unit u = unit_offset + j of
// sample ids[r] (r without ids) uses word u % 4 of Philox block u / 4 under (key, step << 32 | sample).
ALEXNET_HD void dropout_fwd(int64_t i, const float* x, float* y, uint8_t* mask, int64_t U, double p, float scale,
                            PhiloxKey key, uint64_t step, const int64_t* ids, int64_t unit_offset) {
  const int64_t r = i / U, j = i % U;
  const uint64_t sample = static_cast<uint64_t>(ids ? ids[r] : r);
  const CounterRng rng(key, (step << 32) | sample);
  const uint64_t u = static_cast<uint64_t>(unit_offset + j);
  const bool keep = static_cast<double>(uniform01(rng.bits(u))) >= p;
  mask[i] = keep ? 1 : 0;
  y[i] = keep ? x[i] * scale : 0.0f;
}

// The input step with the mean image (normalize_crop's arithmetic: (pixel - mean) + light, the mean
// cropped at place[n] = (x, y, flip) and mirrored with the crop): element i = ((n * 3 + c) * C + y) * C + x.
ALEXNET_HD void normalize_image_mean(int64_t i, const uint8_t* crops, const int32_t* place, const float* light,
                                     const float* mean, float* out, int64_t C, int64_t side) {
  const int64_t x = i % C, y = (i / C) % C, c = (i / (C * C)) % 3, n = i / (3 * C * C);
  const int64_t cx = place[3 * n], cy = place[3 * n + 1];
  const int64_t mx = place[3 * n + 2] ? C - 1 - x : x;
  const float m = mean[(c * side + cy + y) * side + cx + mx];
  out[i] = (static_cast<float>(crops[i]) - m) + light[3 * n + c];
}

// With channel means: pixel + (light - mean).
ALEXNET_HD void normalize_channel_mean(int64_t i, const uint8_t* crops, const float* light, const float* mean,
                                       float* out, int64_t C) {
  const int64_t c = (i / (C * C)) % 3, n = i / (3 * C * C);
  out[i] = static_cast<float>(crops[i]) + (light[3 * n + c] - mean[c]);
}

// A batched transpose [B][P][Q] -> [B][Q][P] (NCHW <-> NHWC with P, Q = C, H*W or H*W, C; a KCRS
// filter to KRSC with P, Q = C, R*S): the input index that output element i = (b * Q + q) * P + p
// reads. Consecutive threads write consecutive outputs; their reads stride by Q, served by the cache.
ALEXNET_HD int64_t transposed_source(int64_t i, int64_t P, int64_t Q) {
  const int64_t p = i % P, q = (i / P) % Q, b = i / (P * Q);
  return (b * P + p) * Q + q;
}

// channel_sums (dense_cuda.cu), stage 1 over [N, C, S] data: the running sums of thread t (of
// `threads`) in the block of channel c and sample group g (of G; samples [g N / G, (g + 1) N / G)),
// which strides over the group's elements; term(e, c, acc) adds element e's M terms.
template <class Term>
ALEXNET_HD void channel_thread_sums(const Term& term, uint32_t t, uint32_t threads, int64_t c, int64_t g, int64_t N,
                                    int64_t C, int64_t S, int64_t G, double* acc) {
  const int64_t n0 = g * N / G, n1 = (g + 1) * N / G;
  const uint32_t count = static_cast<uint32_t>((n1 - n0) * S), s32 = static_cast<uint32_t>(S);
  for (uint32_t i = t; i < count; i += threads) term(((n0 + i / s32) * C + c) * S + i % s32, c, acc);
}

// The same for [N, C] data (S = 1), read across rows: block b covers channels 32 b + lane; row lane r
// (of 8) adds rows n0 + r, n0 + r + 8, ... of group g.
template <class Term>
ALEXNET_HD void column_thread_sums(const Term& term, int lane, int row, int64_t b, int64_t g, int64_t N, int64_t C,
                                   int64_t G, double* acc) {
  const int64_t c = b * 32 + lane, n0 = g * N / G, n1 = (g + 1) * N / G;
  if (c < C)
    for (int64_t n = n0 + row; n < n1; n += 8) term(n * C + c, c, acc);
}

// The paper's SGD rule for element i (sgd_update_cpu's expression): v <- mom v - decay w - rate g; w <- w + v.
ALEXNET_HD void sgd_element(int64_t i, float* w, const float* g, float* v, float mom, float decay, float rate) {
  const float vi = mom * v[i] - decay * w[i] - rate * g[i];
  v[i] = vi;
  w[i] = w[i] + vi;
}

// Whether i lies in one of `count` ranges [begin[r], end[r]) (the weight-decayed tensors of an arena).
ALEXNET_HD bool in_ranges(int64_t i, int count, const int64_t* begin, const int64_t* end) {
  bool in = false;
  for (int r = 0; r < count; ++r) in |= i >= begin[r] && i < end[r];
  return in;
}

}  // namespace alexnet::kernel
