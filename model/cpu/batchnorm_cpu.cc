// Batch normalisation on the CPU: per channel over (N, H, W) for [N, C, H, W], per feature over N
// for [N, C]; training (batch statistics, running update) and eval; float32 and float64.
#include <algorithm>
#include <cmath>
#include <vector>

#include "model/layers.h"

namespace alexnet {
namespace {

constexpr int64_t kParallelMin = 1 << 15;
// Features one task of the [N, C] kernels owns: a block of columns walked row by row, so the
// loads are contiguous and vectorise.
constexpr int64_t kFeatureBlock = 256;

void check_vec(const Tensor& t, const Tensor& x, int64_t C, const char* what) {
  ALEXNET_ASSERT(t.device().is_cpu() && t.dtype() == x.dtype() && t.ndim() == 1 && t.dim(0) == C,
                 "batchnorm: ", what, " is ", t.describe(), ", expected [", C, "] ",
                 dtype_name(x.dtype()));
}

void check_like(const Tensor& t, const Tensor& x, const char* what) {
  ALEXNET_ASSERT(t.device().is_cpu() && t.dtype() == x.dtype() && t.shape() == x.shape(),
                 "batchnorm: ", what, " is ", t.describe(), ", expected like ", x.describe());
}

// x viewed as [N, C, S] with S = H*W (2D) or 1 (1D).
struct Dims {
  int64_t N, C, S;
};

Dims dims_of(const Tensor& x) {
  ALEXNET_ASSERT(x.device().is_cpu() && (x.ndim() == 2 || x.ndim() == 4) &&
                     (x.dtype() == DType::kF32 || x.dtype() == DType::kF64),
                 "batchnorm: x is ", x.describe(), ", expected [N, C, H, W] or [N, C] float");
  Dims d{x.dim(0), x.dim(1), 1};
  if (x.ndim() == 4) d.S = x.dim(2) * x.dim(3);
  return d;
}

// Batch mean and biased variance per channel of the [N, C, S] layout with S > 1, one channel per
// task (two passes: the mean, then squared deviations). Statistics accumulate in double so float32
// batches keep their precision.
template <class T>
void channel_stats(const T* x, const Dims& d, std::vector<double>& mean, std::vector<double>& var) {
  const double M = static_cast<double>(d.N * d.S);
#pragma omp parallel for schedule(static) if (d.N * d.C * d.S >= kParallelMin)
  for (int64_t c = 0; c < d.C; ++c) {
    double sum = 0;
    for (int64_t n = 0; n < d.N; ++n) {
      const T* __restrict p = x + (n * d.C + c) * d.S;
#pragma omp simd reduction(+ : sum)
      for (int64_t s = 0; s < d.S; ++s) sum += static_cast<double>(p[s]);
    }
    const double m = sum / M;
    double sq = 0;
    for (int64_t n = 0; n < d.N; ++n) {
      const T* __restrict p = x + (n * d.C + c) * d.S;
#pragma omp simd reduction(+ : sq)
      for (int64_t s = 0; s < d.S; ++s) {
        double v = static_cast<double>(p[s]) - m;
        sq += v * v;
      }
    }
    mean[c] = m;
    var[c] = sq / M;
  }
}

// The same for [N, C] (S = 1): blocks of features, rows walked in order.
template <class T>
void feature_stats(const T* x, const Dims& d, std::vector<double>& mean, std::vector<double>& var) {
  const int64_t C = d.C, blocks = (C + kFeatureBlock - 1) / kFeatureBlock;
  const double M = static_cast<double>(d.N);
#pragma omp parallel for schedule(static) if (d.N * C >= kParallelMin)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t c0 = b * kFeatureBlock, len = std::min(kFeatureBlock, C - c0);
    double* __restrict m = mean.data() + c0;
    double* __restrict v = var.data() + c0;
    for (int64_t i = 0; i < len; ++i) m[i] = v[i] = 0;
    for (int64_t n = 0; n < d.N; ++n) {
      const T* __restrict p = x + n * C + c0;
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) m[i] += static_cast<double>(p[i]);
    }
    for (int64_t i = 0; i < len; ++i) m[i] /= M;
    for (int64_t n = 0; n < d.N; ++n) {
      const T* __restrict p = x + n * C + c0;
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) {
        double e = static_cast<double>(p[i]) - m[i];
        v[i] += e * e;
      }
    }
    for (int64_t i = 0; i < len; ++i) v[i] /= M;
  }
}

// y = (x - m[c]) * a[c] + b[c] for every element of channel c (the difference first, so that a
// large mean does not cancel away float32 digits).
template <class T>
void apply_affine(const T* x, T* y, const Dims& d, const std::vector<T>& m, const std::vector<T>& a,
                  const std::vector<T>& b) {
  if (d.S == 1) {
    // [N, C]: row by row, so the loop over features is contiguous.
#pragma omp parallel for schedule(static) if (d.N * d.C >= kParallelMin)
    for (int64_t n = 0; n < d.N; ++n) {
      const T* __restrict xp = x + n * d.C;
      T* __restrict yp = y + n * d.C;
      const T* __restrict ap = a.data();
      const T* __restrict bp = b.data();
      const T* __restrict mp = m.data();
#pragma omp simd
      for (int64_t c = 0; c < d.C; ++c) yp[c] = (xp[c] - mp[c]) * ap[c] + bp[c];
    }
    return;
  }
#pragma omp parallel for schedule(static) if (d.N * d.C * d.S >= kParallelMin)
  for (int64_t nc = 0; nc < d.N * d.C; ++nc) {
    const int64_t c = nc % d.C;
    const T mc = m[c], ac = a[c], bc = b[c];
    const T* __restrict xp = x + nc * d.S;
    T* __restrict yp = y + nc * d.S;
#pragma omp simd
    for (int64_t s = 0; s < d.S; ++s) yp[s] = (xp[s] - mc) * ac + bc;
  }
}

template <class T>
void forward_typed(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                   Tensor& running_var, bool training, Tensor& y, Tensor& saved_mean,
                   Tensor& saved_invstd, const BatchNormParams& p) {
  const Dims d = dims_of(x);
  const T* g = gamma.data<T>();
  const T* bt = beta.data<T>();
  T* rm = running_mean.data<T>();
  T* rv = running_var.data<T>();
  std::vector<T> m(d.C), a(d.C), b(d.C);
  if (training) {
    std::vector<double> mean(d.C), var(d.C);
    if (d.S == 1) {
      feature_stats(x.data<T>(), d, mean, var);
    } else {
      channel_stats(x.data<T>(), d, mean, var);
    }
    const double M = static_cast<double>(d.N * d.S);
    // The running variance is the unbiased estimate (as PyTorch); with one value per channel
    // there is none, and the biased one (0) is used.
    const double unbias = M > 1 ? M / (M - 1) : 1.0;
    T* sm = saved_mean.data<T>();
    T* si = saved_invstd.data<T>();
    for (int64_t c = 0; c < d.C; ++c) {
      const double invstd = 1.0 / std::sqrt(var[c] + p.eps);
      sm[c] = static_cast<T>(mean[c]);
      si[c] = static_cast<T>(invstd);
      m[c] = static_cast<T>(mean[c]);
      a[c] = static_cast<T>(g[c] * invstd);
      b[c] = bt[c];
      rm[c] = static_cast<T>((1.0 - p.momentum) * rm[c] + p.momentum * mean[c]);
      rv[c] = static_cast<T>((1.0 - p.momentum) * rv[c] + p.momentum * var[c] * unbias);
    }
  } else {
    for (int64_t c = 0; c < d.C; ++c) {
      const double invstd = 1.0 / std::sqrt(static_cast<double>(rv[c]) + p.eps);
      m[c] = rm[c];
      a[c] = static_cast<T>(g[c] * invstd);
      b[c] = bt[c];
    }
  }
  apply_affine(x.data<T>(), y.data<T>(), d, m, a, b);
}

// With xhat = (x - mean) invstd over the M values of a channel:
// dbeta = sum dy, dgamma = sum dy xhat, dx = gamma invstd / M (M dy - dbeta - xhat dgamma).
template <class T>
void backward_typed(const Tensor& x, const Tensor& gamma, const Tensor& saved_mean,
                    const Tensor& saved_invstd, const Tensor& dy, Tensor& dx, Tensor& dgamma,
                    Tensor& dbeta) {
  const Dims d = dims_of(x);
  const T* xp = x.data<T>();
  const T* dyp = dy.data<T>();
  T* dxp = dx.data<T>();
  const T* g = gamma.data<T>();
  const T* sm = saved_mean.data<T>();
  const T* si = saved_invstd.data<T>();
  std::vector<double> sum_dy(d.C), sum_dy_xhat(d.C);
  if (d.S == 1) {
    const int64_t C = d.C, blocks = (C + kFeatureBlock - 1) / kFeatureBlock;
#pragma omp parallel for schedule(static) if (d.N * C >= kParallelMin)
    for (int64_t bl = 0; bl < blocks; ++bl) {
      const int64_t c0 = bl * kFeatureBlock, len = std::min(kFeatureBlock, C - c0);
      double* __restrict s1 = sum_dy.data() + c0;
      double* __restrict s2 = sum_dy_xhat.data() + c0;
      for (int64_t n = 0; n < d.N; ++n) {
        const T* __restrict xr = xp + n * C + c0;
        const T* __restrict dyr = dyp + n * C + c0;
#pragma omp simd
        for (int64_t i = 0; i < len; ++i) {
          s1[i] += dyr[i];
          s2[i] += static_cast<double>(dyr[i]) * ((xr[i] - sm[c0 + i]) * si[c0 + i]);
        }
      }
    }
  } else {
#pragma omp parallel for schedule(static) if (d.N * d.C * d.S >= kParallelMin)
    for (int64_t c = 0; c < d.C; ++c) {
      const T m = sm[c], is = si[c];
      double s1 = 0, s2 = 0;
      for (int64_t n = 0; n < d.N; ++n) {
        const T* __restrict xr = xp + (n * d.C + c) * d.S;
        const T* __restrict dyr = dyp + (n * d.C + c) * d.S;
#pragma omp simd reduction(+ : s1, s2)
        for (int64_t s = 0; s < d.S; ++s) {
          s1 += dyr[s];
          s2 += static_cast<double>(dyr[s]) * ((xr[s] - m) * is);
        }
      }
      sum_dy[c] = s1;
      sum_dy_xhat[c] = s2;
    }
  }
  T* dg = dgamma.data<T>();
  T* db = dbeta.data<T>();
  const double M = static_cast<double>(d.N * d.S);
  // dx = k1 dy + k2 (x - mean) + k3 per channel, expanded from the formula above; x - mean is
  // kept as a difference so a large mean does not cancel away float32 digits.
  std::vector<T> k1(d.C), k2(d.C), k3(d.C);
  for (int64_t c = 0; c < d.C; ++c) {
    dg[c] = static_cast<T>(sum_dy_xhat[c]);
    db[c] = static_cast<T>(sum_dy[c]);
    const double gi = static_cast<double>(g[c]) * si[c];
    k1[c] = static_cast<T>(gi);
    k2[c] = static_cast<T>(-gi * si[c] * sum_dy_xhat[c] / M);
    k3[c] = static_cast<T>(-gi * sum_dy[c] / M);
  }
  if (d.S == 1) {
#pragma omp parallel for schedule(static) if (d.N * d.C >= kParallelMin)
    for (int64_t n = 0; n < d.N; ++n) {
      const T* __restrict xr = xp + n * d.C;
      const T* __restrict dyr = dyp + n * d.C;
      T* __restrict dxr = dxp + n * d.C;
#pragma omp simd
      for (int64_t c = 0; c < d.C; ++c) dxr[c] = k1[c] * dyr[c] + k2[c] * (xr[c] - sm[c]) + k3[c];
    }
  } else {
#pragma omp parallel for schedule(static) if (d.N * d.C * d.S >= kParallelMin)
    for (int64_t nc = 0; nc < d.N * d.C; ++nc) {
      const int64_t c = nc % d.C;
      const T a1 = k1[c], a2 = k2[c], a3 = k3[c], m = sm[c];
      const T* __restrict xr = xp + nc * d.S;
      const T* __restrict dyr = dyp + nc * d.S;
      T* __restrict dxr = dxp + nc * d.S;
#pragma omp simd
      for (int64_t s = 0; s < d.S; ++s) dxr[s] = a1 * dyr[s] + a2 * (xr[s] - m) + a3;
    }
  }
}

}  // namespace

void batchnorm_forward_cpu(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                           Tensor& running_mean, Tensor& running_var, bool training, Tensor& y,
                           Tensor& saved_mean, Tensor& saved_invstd, const BatchNormParams& p) {
  const Dims d = dims_of(x);
  check_like(y, x, "y");
  check_vec(gamma, x, d.C, "gamma");
  check_vec(beta, x, d.C, "beta");
  check_vec(running_mean, x, d.C, "running_mean");
  check_vec(running_var, x, d.C, "running_var");
  if (training) {
    ALEXNET_ASSERT(d.N * d.S > 0, "batchnorm: empty batch ", x.describe());
    check_vec(saved_mean, x, d.C, "saved_mean");
    check_vec(saved_invstd, x, d.C, "saved_invstd");
  }
  if (x.dtype() == DType::kF32) {
    forward_typed<float>(x, gamma, beta, running_mean, running_var, training, y, saved_mean,
                         saved_invstd, p);
  } else {
    forward_typed<double>(x, gamma, beta, running_mean, running_var, training, y, saved_mean,
                          saved_invstd, p);
  }
}

void batchnorm_backward_cpu(const Tensor& x, const Tensor& gamma, const Tensor& saved_mean,
                            const Tensor& saved_invstd, const Tensor& dy, Tensor& dx,
                            Tensor& dgamma, Tensor& dbeta) {
  const Dims d = dims_of(x);
  check_like(dy, x, "dy");
  check_like(dx, x, "dx");
  check_vec(gamma, x, d.C, "gamma");
  check_vec(saved_mean, x, d.C, "saved_mean");
  check_vec(saved_invstd, x, d.C, "saved_invstd");
  check_vec(dgamma, x, d.C, "dgamma");
  check_vec(dbeta, x, d.C, "dbeta");
  if (x.dtype() == DType::kF32) {
    backward_typed<float>(x, gamma, saved_mean, saved_invstd, dy, dx, dgamma, dbeta);
  } else {
    backward_typed<double>(x, gamma, saved_mean, saved_invstd, dy, dx, dgamma, dbeta);
  }
}

}  // namespace alexnet
