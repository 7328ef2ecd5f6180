// Max pooling on the CPU (float32 and float64): OpenMP over (n, c) planes, unrolled window loops
// for the network's sizes; int32 argmax with PyTorch's tie rule for the backward pass.
#include <algorithm>
#include <cstdint>

#include "core/error.h"
#include "model/layers.h"

namespace alexnet {
namespace {

// PyTorch's rule: a strictly larger value, or a NaN, replaces the current best. Scanning a window
// in row-major order with it keeps the first maximum on ties.
template <class T>
inline bool replaces(T v, T best) {
  return v > best || v != v;
}

// One (n, c) plane. K and S are the window size and stride when known at compile time (0: use
// `size` / `stride`): the window loops then unroll fully, which measured faster than vectorising
// along output columns (rows here are 6 to 27 outputs long).
template <class T, int K, int S>
void maxpool_plane(const T* xp, T* yp, int32_t* ap, int64_t w, int64_t ho, int64_t wo, int size,
                   int stride) {
  const int k = K != 0 ? K : size;
  const int64_t s = S != 0 ? S : stride;
  for (int64_t oh = 0; oh < ho; ++oh) {
    for (int64_t ow = 0; ow < wo; ++ow) {
      const int64_t corner = oh * s * w + ow * s;
      T best = xp[corner];
      int64_t at = corner;
      for (int kh = 0; kh < k; ++kh) {
        for (int kw = 0; kw < k; ++kw) {
          const int64_t i = corner + kh * w + kw;
          const bool take = replaces(xp[i], best);
          best = take ? xp[i] : best;
          at = take ? i : at;
        }
      }
      yp[oh * wo + ow] = best;
      ap[oh * wo + ow] = static_cast<int32_t>(at);
    }
  }
}

template <class T>
void maxpool_forward(const Tensor& xt, Tensor& yt, Tensor& at, const PoolParams& p) {
  const int64_t planes = xt.dim(0) * xt.dim(1);
  const int64_t h = xt.dim(2), w = xt.dim(3), ho = yt.dim(2), wo = yt.dim(3);
  const T* x = xt.data<T>();
  T* y = yt.data<T>();
  int32_t* arg = at.data<int32_t>();
#pragma omp parallel for schedule(static) if (planes * h * w > (1 << 14))
  for (int64_t pl = 0; pl < planes; ++pl) {
    const T* xp = x + pl * h * w;
    T* yp = y + pl * ho * wo;
    int32_t* ap = arg + pl * ho * wo;
    if (p.size == 3 && p.stride == 2) {
      maxpool_plane<T, 3, 2>(xp, yp, ap, w, ho, wo, p.size, p.stride);
    } else if (p.size == 2 && p.stride == 2) {
      maxpool_plane<T, 2, 2>(xp, yp, ap, w, ho, wo, p.size, p.stride);
    } else {
      maxpool_plane<T, 0, 0>(xp, yp, ap, w, ho, wo, p.size, p.stride);
    }
  }
}

template <class T>
void maxpool_backward(const Tensor& dyt, const Tensor& at, Tensor& dxt) {
  const int64_t planes = dxt.dim(0) * dxt.dim(1);
  const int64_t in_plane = dxt.dim(2) * dxt.dim(3), out_plane = dyt.dim(2) * dyt.dim(3);
  const T* dy = dyt.data<T>();
  const int32_t* arg = at.data<int32_t>();
  T* dx = dxt.data<T>();
#pragma omp parallel for schedule(static) if (planes * in_plane > (1 << 14))
  for (int64_t pl = 0; pl < planes; ++pl) {
    T* dxp = dx + pl * in_plane;
    std::fill(dxp, dxp + in_plane, T(0));
    const T* dyp = dy + pl * out_plane;
    const int32_t* ap = arg + pl * out_plane;
    for (int64_t i = 0; i < out_plane; ++i) dxp[ap[i]] += dyp[i];
  }
}

}  // namespace

void maxpool_forward_cpu(const Tensor& x, Tensor& y, Tensor& argmax, const PoolParams& p) {
  ALEXNET_ASSERT(p.size >= 1 && p.stride >= 1, "maxpool: size ", p.size, " stride ", p.stride);
  ALEXNET_ASSERT(x.ndim() == 4 && x.dim(2) >= p.size && x.dim(3) >= p.size, "maxpool: x ",
                 x.describe(), " window ", p.size);
  ALEXNET_ASSERT(x.dim(2) * x.dim(3) <= INT32_MAX, "maxpool: plane too large for int32 argmax");
  const Shape out{x.dim(0), x.dim(1), (x.dim(2) - p.size) / p.stride + 1,
                  (x.dim(3) - p.size) / p.stride + 1};
  ALEXNET_ASSERT(y.shape() == out && argmax.shape() == out, "maxpool: y ", y.describe(), " argmax ",
                 argmax.describe(), " expected ", shape_str(out));
  ALEXNET_ASSERT(x.device().is_cpu() && y.device().is_cpu() && argmax.device().is_cpu() &&
                     y.dtype() == x.dtype() && argmax.dtype() == DType::kI32,
                 "maxpool: x ", x.describe(), " y ", y.describe(), " argmax ", argmax.describe());
  if (x.dtype() == DType::kF32) {
    maxpool_forward<float>(x, y, argmax, p);
  } else {
    ALEXNET_ASSERT(x.dtype() == DType::kF64, "maxpool: x ", x.describe());
    maxpool_forward<double>(x, y, argmax, p);
  }
}

void maxpool_backward_cpu(const Tensor& dy, const Tensor& argmax, Tensor& dx) {
  ALEXNET_ASSERT(dy.ndim() == 4 && dx.ndim() == 4 && argmax.shape() == dy.shape() &&
                     dy.dim(0) == dx.dim(0) && dy.dim(1) == dx.dim(1) && dy.dim(2) <= dx.dim(2) &&
                     dy.dim(3) <= dx.dim(3),
                 "maxpool backward: dy ", dy.describe(), " argmax ", argmax.describe(), " dx ",
                 dx.describe());
  ALEXNET_ASSERT(dy.device().is_cpu() && dx.device().is_cpu() && argmax.device().is_cpu() &&
                     dy.dtype() == dx.dtype() && argmax.dtype() == DType::kI32,
                 "maxpool backward: dy ", dy.describe(), " argmax ", argmax.describe(), " dx ",
                 dx.describe());
  if (dx.dtype() == DType::kF32) {
    maxpool_backward<float>(dy, argmax, dx);
  } else {
    ALEXNET_ASSERT(dx.dtype() == DType::kF64, "maxpool backward: dx ", dx.describe());
    maxpool_backward<double>(dy, argmax, dx);
  }
}

}  // namespace alexnet
