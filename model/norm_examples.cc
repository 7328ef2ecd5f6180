// Worked examples of the normalisation layers: builds the two documented inputs, runs LRN, 2D
// LRN, BN2d and BN1d on them in float64, and prints a summary table.
#include "model/norm_examples.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <limits>
#include <sstream>

namespace alexnet {
namespace {

constexpr int64_t kBatch = 10, kSide = 10;

int64_t channels_of(int example) {
  ALEXNET_CHECK(example == 1 || example == 2, "norm examples: no example ", example,
                " (there are 1 and 2)");
  return example == 1 ? 3 : 4;
}

Tensor run_bn(const Tensor& x) {
  const int64_t C = x.dim(1);
  Tensor gamma = Tensor::empty({C}, DType::kF64);
  Tensor beta = Tensor::zeros({C}, DType::kF64);
  Tensor running_mean = Tensor::zeros({C}, DType::kF64);
  Tensor running_var = Tensor::empty({C}, DType::kF64);
  gamma.fill(1.0);
  running_var.fill(1.0);
  Tensor y = Tensor::empty(x.shape(), DType::kF64);
  Tensor saved_mean = Tensor::empty({C}, DType::kF64);
  Tensor saved_invstd = Tensor::empty({C}, DType::kF64);
  batchnorm_forward_cpu(x, gamma, beta, running_mean, running_var, /*training=*/true, y, saved_mean,
                        saved_invstd, norm_example_bn_params());
  return y;
}

struct Summary {
  double sum = 0, sum_sq = 0;
  double min = std::numeric_limits<double>::infinity();
  double max = -std::numeric_limits<double>::infinity();
};

Summary summarise(const Tensor& t) {
  Summary s;
  const double* p = t.data<double>();
  for (int64_t i = 0; i < t.numel(); ++i) {
    s.sum += p[i];
    s.sum_sq += p[i] * p[i];
    s.min = std::min(s.min, p[i]);
    s.max = std::max(s.max, p[i]);
  }
  return s;
}

std::string fmt(double v) {
  std::ostringstream os;
  os << std::setprecision(12) << std::showpos << v;
  return os.str();
}

}  // namespace

Tensor norm_example_input(int example) {
  const int64_t C = channels_of(example);
  Tensor x = Tensor::empty({kBatch, C, kSide, kSide}, DType::kF64);
  double* p = x.data<double>();
  for (int64_t n = 0; n < kBatch; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t h = 0; h < kSide; ++h)
        for (int64_t w = 0; w < kSide; ++w) {
          const double dn = static_cast<double>(n), dc = static_cast<double>(c),
                       dh = static_cast<double>(h), dw = static_cast<double>(w);
          *p++ = example == 1 ? std::sin(0.1 * (dn + 1) + 0.37 * dc + 0.05 * dh * dw)
                              : (dc + 1) * std::cos(0.3 * dn - 0.2 * dc + 0.1 * dh) + 0.05 * dw;
        }
  return x;
}

std::string norm_example_formula(int example) {
  channels_of(example);
  return example == 1 ? "x[n,c,h,w] = sin(0.1*(n+1) + 0.37*c + 0.05*h*w)"
                      : "x[n,c,h,w] = (c+1) * cos(0.3*n - 0.2*c + 0.1*h) + 0.05*w";
}

LrnParams norm_example_lrn_params() {
  LrnParams p;
  p.k = 1.0;
  p.alpha = 0.01;
  p.beta = 0.5;
  p.n = 2;
  return p;
}

BatchNormParams norm_example_bn_params() {
  BatchNormParams p;
  p.eps = 1e-5;
  p.momentum = 0.1;
  return p;
}

NormExampleResult run_norm_example(int example) {
  NormExampleResult r;
  r.example = example;
  r.x = norm_example_input(example);
  const Shape& shape = r.x.shape();
  const LrnParams lp = norm_example_lrn_params();
  Tensor scale = Tensor::empty(shape, DType::kF64);
  r.lrn = Tensor::empty(shape, DType::kF64);
  lrn_forward_cpu(r.x, r.lrn, scale, lp);
  r.lrn2d = Tensor::empty(shape, DType::kF64);
  lrn2d_forward_cpu(r.x, r.lrn2d, scale, lp);
  r.bn2d = run_bn(r.x);
  r.bn1d = run_bn(r.x.view({shape[0], shape[1] * shape[2] * shape[3]}));
  return r;
}

std::vector<NormExampleResult> run_norm_examples() {
  return {run_norm_example(1), run_norm_example(2)};
}

void print_norm_examples(std::ostream& os) {
  const LrnParams lp = norm_example_lrn_params();
  const BatchNormParams bp = norm_example_bn_params();
  std::ostringstream out;
  out << "Normalisation worked examples (float64)\n"
      << "  lrn    across channels: y = x / (k + alpha * sum_{j=c-n/2..c+n/2, clipped} "
         "x[j]^2)^beta,"
      << " k=" << lp.k << " alpha=" << lp.alpha << " beta=" << lp.beta << " n=" << lp.n
      << " (alpha not divided by n)\n"
      << "  lrn2d  the same within each channel over the clipped " << (lp.n / 2) * 2 + 1 << "x"
      << (lp.n / 2) * 2 + 1 << " spatial window\n"
      << "  bn2d   per channel over (n,h,w), batch mean and biased variance, gamma=1 beta=0 eps="
      << bp.eps << "\n"
      << "  bn1d   per feature over n, x viewed as [N, C*H*W], same parameters\n";
  for (const NormExampleResult& r : run_norm_examples()) {
    const int64_t C = r.x.dim(1), H = r.x.dim(2), W = r.x.dim(3);
    out << "\nExample " << r.example << ": " << norm_example_formula(r.example) << ", shape "
        << shape_str(r.x.shape()) << "\n";
    struct Row {
      const char* name;
      const Tensor* t;
    };
    const Row rows[] = {{"input", &r.x},
                        {"lrn", &r.lrn},
                        {"lrn2d", &r.lrn2d},
                        {"bn2d", &r.bn2d},
                        {"bn1d", &r.bn1d}};
    out << "  " << std::left << std::setw(7) << "op" << std::setw(18) << "shape" << std::setw(21)
        << "sum" << std::setw(21) << "sum of squares" << std::setw(21) << "min"
        << "max\n";
    for (const Row& row : rows) {
      const Summary s = summarise(*row.t);
      out << "  " << std::setw(7) << row.name << std::setw(18) << shape_str(row.t->shape())
          << std::setw(21) << fmt(s.sum) << std::setw(21) << fmt(s.sum_sq) << std::setw(21)
          << fmt(s.min) << fmt(s.max) << "\n";
    }
    // The same (n, c, h, w) positions in every op; bn1d's flat index is c*H*W + h*W + w.
    struct Pick {
      int64_t n, h, w0;
    };
    const Pick picks[] = {{0, 0, 0}, {4, 5, 3}, {kBatch - 1, H - 1, W - 3}};
    for (const Pick& pk : picks) {
      out << "  elements y[" << pk.n << ", c, " << pk.h << ", " << pk.w0 << ".." << pk.w0 + 2
          << "]:\n";
      for (const Row& row : rows) {
        const double* p = row.t->data<double>();
        for (int64_t c = 0; c < C; ++c) {
          out << "    " << std::setw(7) << row.name << "c=" << c << " ";
          for (int64_t w = pk.w0; w < pk.w0 + 3; ++w)
            out << " " << std::setw(w < pk.w0 + 2 ? 21 : 0)
                << fmt(p[((pk.n * C + c) * H + pk.h) * W + w]);
          out << "\n";
        }
      }
    }
  }
  os << out.str();
}

}  // namespace alexnet
