// Test helpers: random tensors and the finite-difference gradient checker (float64, central
// differences), the same body for every layer.
#pragma once

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"

namespace alexnet::testing {

// Uniform in [lo, hi), float64 or float32, reproducible from `seed`.
inline Tensor random_tensor(const Shape& shape, uint64_t seed, double lo = -1.0, double hi = 1.0,
                            DType dtype = DType::kF64) {
  Tensor t = Tensor::empty(shape, DType::kF64);
  CounterRng rng(make_key(seed, RngPurpose::kTest), 0);
  double* p = t.data<double>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = lo + (hi - lo) * rng.uniform(static_cast<uint64_t>(i));
  return dtype == DType::kF64 ? t : t.to(dtype);
}

// Sum of x * r over all elements (float64 tensors): the scalar the checker differentiates.
inline double dot(const Tensor& x, const Tensor& r) {
  const double* a = x.data<double>();
  const double* b = r.data<double>();
  double s = 0;
  for (int64_t i = 0; i < x.numel(); ++i) s += a[i] * b[i];
  return s;
}

struct GradCheckResult {
  double max_abs_error = 0;
  double max_rel_error = 0;  // |a - n| / max(1e-3 * scale, |a| + |n|)
  std::string worst;         // "input 0 element 17: analytic 0.1 numeric 0.2"
};

// For each input tensor (float64, CPU) and its analytic gradient, compares against central
// differences of `loss()` with step `eps`. `loss` must read the inputs each time it is called.
inline GradCheckResult check_gradients(const std::vector<Tensor>& inputs,
                                       const std::vector<Tensor>& analytic,
                                       const std::function<double()>& loss, double eps = 1e-6) {
  GradCheckResult result;
  double scale = 0;
  for (const Tensor& g : analytic)
    for (int64_t i = 0; i < g.numel(); ++i) scale = std::max(scale, std::fabs(g.data<double>()[i]));
  for (size_t t = 0; t < inputs.size(); ++t) {
    double* x = inputs[t].data<double>();
    const double* a = analytic[t].data<double>();
    for (int64_t i = 0; i < inputs[t].numel(); ++i) {
      double saved = x[i];
      x[i] = saved + eps;
      double up = loss();
      x[i] = saved - eps;
      double down = loss();
      x[i] = saved;
      double numeric = (up - down) / (2 * eps);
      double abs_err = std::fabs(numeric - a[i]);
      double rel_err = abs_err / std::max(1e-3 * scale + 1e-12, std::fabs(numeric) + std::fabs(a[i]));
      result.max_abs_error = std::max(result.max_abs_error, abs_err);
      if (rel_err > result.max_rel_error) {
        result.max_rel_error = rel_err;
        result.worst = "input " + std::to_string(t) + " element " + std::to_string(i) +
                       ": analytic " + std::to_string(a[i]) + " numeric " + std::to_string(numeric);
      }
    }
  }
  return result;
}

}  // namespace alexnet::testing
