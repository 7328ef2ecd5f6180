// Element-wise ops on the CPU: ReLU, tanh, inverted dropout (counter-based masks), softmax
// cross-entropy and the paper's SGD update; float32 and float64.
#include <algorithm>
#include <cmath>

#include "model/layers.h"

namespace alexnet {
namespace {

constexpr int64_t kParallelMin = 1 << 15;

bool is_float(const Tensor& t) {
  return t.device().is_cpu() && (t.dtype() == DType::kF32 || t.dtype() == DType::kF64);
}

void check_like(const Tensor& t, const Tensor& ref, const char* op, const char* what) {
  ALEXNET_ASSERT(t.device().is_cpu() && t.dtype() == ref.dtype() && t.shape() == ref.shape(), "op ",
                 op, ": ", what, " is ", t.describe(), ", expected like ", ref.describe());
}

// Runs f.template operator()<T>() with T the float type of t.
template <class F>
void by_dtype(const Tensor& t, const char* op, F&& f) {
  ALEXNET_ASSERT(is_float(t), "op ", op, ": ", t.describe(),
                 " is not a float32/float64 CPU tensor");
  if (t.dtype() == DType::kF32) {
    f.template operator()<float>();
  } else {
    f.template operator()<double>();
  }
}

// ---- dropout ----

template <class T>
void dropout_forward_typed(const Tensor& x, Tensor& y, Tensor& mask, double p,
                           const DropoutKeying& k) {
  const int64_t N = x.dim(0), U = x.dim(1);
  const T* xp = x.data<T>();
  T* yp = y.data<T>();
  uint8_t* mp = mask.data<uint8_t>();
  const T scale = static_cast<T>(1.0 / (1.0 - p));
#pragma omp parallel for schedule(static) if (N * U >= kParallelMin / 4)
  for (int64_t r = 0; r < N; ++r) {
    // Without sample ids, row r stands for sample r (tests and single-batch tools).
    const uint64_t sample = static_cast<uint64_t>(k.sample_ids ? k.sample_ids[r] : r);
    const CounterRng rng(k.key, (k.step << 32) | sample);
    const T* xr = xp + r * U;
    T* yr = yp + r * U;
    uint8_t* mr = mp + r * U;
    // Unit u uses word u % 4 of Philox block u / 4: one block serves four units.
    Philox4 block{};
    uint64_t block_index = ~uint64_t{0};
    for (int64_t j = 0; j < U; ++j) {
      const uint64_t u = static_cast<uint64_t>(k.unit_offset + j);
      if ((u >> 2) != block_index) {
        block_index = u >> 2;
        block = rng.block(block_index);
      }
      const bool keep = static_cast<double>(uniform01(block.v[u & 3])) >= p;
      mr[j] = keep ? 1 : 0;
      yr[j] = keep ? xr[j] * scale : T(0);
    }
  }
}

template <class T>
void dropout_backward_typed(const Tensor& dy, const Tensor& mask, double p, Tensor& dx) {
  const int64_t n = dy.numel();
  const T* g = dy.data<T>();
  const uint8_t* m = mask.data<uint8_t>();
  T* o = dx.data<T>();
  const T scale = static_cast<T>(1.0 / (1.0 - p));
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) o[i] = m[i] ? g[i] * scale : T(0);
}

// ---- softmax cross-entropy ----

template <class T>
double softmax_forward_typed(const Tensor& logits, const Tensor& labels, Tensor& probs) {
  const int64_t N = logits.dim(0), K = logits.dim(1);
  const T* z = logits.data<T>();
  const int64_t* lab = labels.data<int64_t>();
  T* pr = probs.data<T>();
  for (int64_t r = 0; r < N; ++r)
    ALEXNET_CHECK(lab[r] >= 0 && lab[r] < K, "softmax_xent: label ", lab[r], " of row ", r,
                  " is outside [0, ", K, ")");
  double total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total) if (N * K >= kParallelMin)
  for (int64_t r = 0; r < N; ++r) {
    const T* zr = z + r * K;
    T* pp = pr + r * K;
    // Subtracting the row maximum keeps exp() from overflowing; the sum runs in double.
    T mx = zr[0];
    for (int64_t j = 1; j < K; ++j) mx = std::max(mx, zr[j]);
    double sum = 0;
    for (int64_t j = 0; j < K; ++j) {
      const double e = std::exp(static_cast<double>(zr[j]) - mx);
      pp[j] = static_cast<T>(e);
      sum += e;
    }
    const double inv = 1.0 / sum;
    for (int64_t j = 0; j < K; ++j) pp[j] = static_cast<T>(pp[j] * inv);
    // -log p[label] = log(sum) - (z[label] - max), exact even when p[label] underflows.
    total += std::log(sum) - (static_cast<double>(zr[lab[r]]) - mx);
  }
  return N > 0 ? total / static_cast<double>(N) : 0.0;
}

template <class T>
void softmax_backward_typed(const Tensor& probs, const Tensor& labels, Tensor& dlogits) {
  const int64_t N = probs.dim(0), K = probs.dim(1);
  const T* pr = probs.data<T>();
  const int64_t* lab = labels.data<int64_t>();
  T* d = dlogits.data<T>();
  const T inv_n = static_cast<T>(1.0 / static_cast<double>(N));
  // Checked before the parallel loop: an exception must not leave an OpenMP region.
  for (int64_t r = 0; r < N; ++r)
    ALEXNET_ASSERT(lab[r] >= 0 && lab[r] < K, "softmax_xent: label ", lab[r], " of row ", r);
#pragma omp parallel for schedule(static) if (N * K >= kParallelMin)
  for (int64_t r = 0; r < N; ++r) {
    const T* pp = pr + r * K;
    T* dr = d + r * K;
#pragma omp simd
    for (int64_t j = 0; j < K; ++j) dr[j] = pp[j] * inv_n;
    dr[lab[r]] = (pp[lab[r]] - T(1)) * inv_n;
  }
}

}  // namespace

// ---- activations ----

void relu_forward_cpu(const Tensor& x, Tensor& y) {
  check_like(y, x, "relu_forward", "y");
  by_dtype(x, "relu_forward", [&]<class T>() {
    const int64_t n = x.numel();
    const T* a = x.data<T>();
    T* b = y.data<T>();
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) b[i] = a[i] > T(0) ? a[i] : T(0);
  });
}

void relu_backward_cpu(const Tensor& y, const Tensor& dy, Tensor& dx) {
  check_like(dy, y, "relu_backward", "dy");
  check_like(dx, y, "relu_backward", "dx");
  by_dtype(y, "relu_backward", [&]<class T>() {
    const int64_t n = y.numel();
    const T* a = y.data<T>();
    const T* g = dy.data<T>();
    T* o = dx.data<T>();
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) o[i] = a[i] > T(0) ? g[i] : T(0);
  });
}

void tanh_forward_cpu(const Tensor& x, Tensor& y) {
  check_like(y, x, "tanh_forward", "y");
  by_dtype(x, "tanh_forward", [&]<class T>() {
    const int64_t n = x.numel();
    const T* a = x.data<T>();
    T* b = y.data<T>();
#pragma omp parallel for schedule(static) if (n >= kParallelMin / 8)
    for (int64_t i = 0; i < n; ++i) b[i] = std::tanh(a[i]);
  });
}

void tanh_backward_cpu(const Tensor& y, const Tensor& dy, Tensor& dx) {
  check_like(dy, y, "tanh_backward", "dy");
  check_like(dx, y, "tanh_backward", "dx");
  by_dtype(y, "tanh_backward", [&]<class T>() {
    const int64_t n = y.numel();
    const T* a = y.data<T>();
    const T* g = dy.data<T>();
    T* o = dx.data<T>();
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) o[i] = g[i] * (T(1) - a[i] * a[i]);
  });
}

// ---- dropout ----

void dropout_forward_cpu(const Tensor& x, Tensor& y, Tensor& mask, double p,
                         const DropoutKeying& k) {
  ALEXNET_ASSERT(x.ndim() == 2, "dropout: x is ", x.describe(), ", expected [N, U]");
  check_like(y, x, "dropout_forward", "y");
  ALEXNET_ASSERT(mask.device().is_cpu() && mask.dtype() == DType::kU8 && mask.shape() == x.shape(),
                 "dropout: mask is ", mask.describe(), ", expected uint8 ", shape_str(x.shape()));
  ALEXNET_ASSERT(p >= 0 && p < 1, "dropout: p = ", p);
  ALEXNET_ASSERT(k.unit_offset >= 0, "dropout: unit_offset = ", k.unit_offset);
  by_dtype(x, "dropout_forward", [&]<class T>() { dropout_forward_typed<T>(x, y, mask, p, k); });
}

void dropout_backward_cpu(const Tensor& dy, const Tensor& mask, double p, Tensor& dx) {
  check_like(dx, dy, "dropout_backward", "dx");
  ALEXNET_ASSERT(mask.device().is_cpu() && mask.dtype() == DType::kU8 && mask.shape() == dy.shape(),
                 "dropout: mask is ", mask.describe(), ", expected uint8 ", shape_str(dy.shape()));
  ALEXNET_ASSERT(p >= 0 && p < 1, "dropout: p = ", p);
  by_dtype(dy, "dropout_backward", [&]<class T>() { dropout_backward_typed<T>(dy, mask, p, dx); });
}

// ---- softmax cross-entropy ----

double softmax_xent_forward_cpu(const Tensor& logits, const Tensor& labels, Tensor& probs) {
  ALEXNET_ASSERT(logits.ndim() == 2 && logits.dim(1) > 0, "softmax_xent: logits are ",
                 logits.describe(), ", expected [N, K]");
  check_like(probs, logits, "softmax_xent_forward", "probs");
  ALEXNET_ASSERT(labels.device().is_cpu() && labels.dtype() == DType::kI64 && labels.ndim() == 1 &&
                     labels.dim(0) == logits.dim(0),
                 "softmax_xent: labels are ", labels.describe(), ", expected int64 [",
                 logits.dim(0), "]");
  double loss = 0;
  by_dtype(logits, "softmax_xent_forward",
           [&]<class T>() { loss = softmax_forward_typed<T>(logits, labels, probs); });
  return loss;
}

void softmax_xent_backward_cpu(const Tensor& probs, const Tensor& labels, Tensor& dlogits) {
  ALEXNET_ASSERT(probs.ndim() == 2, "softmax_xent: probs are ", probs.describe());
  check_like(dlogits, probs, "softmax_xent_backward", "dlogits");
  ALEXNET_ASSERT(labels.device().is_cpu() && labels.dtype() == DType::kI64 && labels.ndim() == 1 &&
                     labels.dim(0) == probs.dim(0),
                 "softmax_xent: labels are ", labels.describe());
  by_dtype(probs, "softmax_xent_backward",
           [&]<class T>() { softmax_backward_typed<T>(probs, labels, dlogits); });
}

double softmax_xent_mean(const double* row_loss, int64_t n, int64_t classes) {
  double total = 0;
  for (int64_t r = 0; r < n; ++r) {
    ALEXNET_CHECK(!(row_loss[r] < 0), "softmax_xent: the label of row ", r, " is outside [0, ", classes, ")");
    total += row_loss[r];
  }
  return n > 0 ? total / static_cast<double>(n) : 0.0;
}

// ---- SGD ----

void sgd_update_cpu(Tensor& w, const Tensor& g, Tensor& v, double lr, double momentum,
                    double weight_decay) {
  check_like(g, w, "sgd_update", "g");
  check_like(v, w, "sgd_update", "v");
  by_dtype(w, "sgd_update", [&]<class T>() {
    const int64_t n = w.numel();
    T* wp = w.data<T>();
    const T* gp = g.data<T>();
    T* vp = v.data<T>();
    const T mom = static_cast<T>(momentum);
    const T decay = static_cast<T>(weight_decay * lr);
    const T rate = static_cast<T>(lr);
    // Paper §5: v <- 0.9 v - 0.0005 lr w - lr g; w <- w + v.
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) {
      const T vi = mom * vp[i] - decay * wp[i] - rate * gp[i];
      vp[i] = vi;
      wp[i] = wp[i] + vi;
    }
  });
}

}  // namespace alexnet
