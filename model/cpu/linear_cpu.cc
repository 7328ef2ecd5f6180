// Fully connected layer on the CPU: float32 through oneDNN (matmul forward, inner-product backward,
// plain row-major weights), reference loops for float64.
#include <algorithm>

#include "core/error.h"
#include "model/cpu/dnnl_util.h"
#include "model/layers.h"

namespace alexnet {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;
namespace du = dnnl_util;

struct LinearGeom {
  int64_t n, in, out;
};

LinearGeom linear_geom(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& y) {
  ALEXNET_ASSERT(x.ndim() == 2 && w.ndim() == 2 && b.ndim() == 1 && y.ndim() == 2, "linear: x ",
                 x.describe(), " w ", w.describe(), " b ", b.describe(), " y ", y.describe());
  LinearGeom g{x.dim(0), x.dim(1), w.dim(0)};
  ALEXNET_ASSERT(w.dim(1) == g.in && b.dim(0) == g.out && y.dim(0) == g.n && y.dim(1) == g.out,
                 "linear: x ", x.describe(), " w ", w.describe(), " b ", b.describe(), " y/dy ",
                 y.describe());
  for (const Tensor* t : {&w, &b, &y}) {
    ALEXNET_ASSERT(t->dtype() == x.dtype() && t->device().is_cpu(), "linear: ", t->describe(),
                   " with x ", x.describe());
  }
  ALEXNET_ASSERT(x.device().is_cpu() && (x.dtype() == DType::kF32 || x.dtype() == DType::kF64),
                 "linear: x ", x.describe());
  return g;
}

// ---- float32: oneDNN inner product ----

struct LinearDescs {
  memory::desc src, wei, bias, dst;
  explicit LinearDescs(const LinearGeom& g)
      : src({g.n, g.in}, memory::data_type::f32, Tag::nc),
        wei({g.out, g.in}, memory::data_type::f32, Tag::oi),
        bias({g.out}, memory::data_type::f32, Tag::x),
        dst({g.n, g.out}, memory::data_type::f32, Tag::nc) {}
};

// Forward as a matmul x [N, In] times w^T (the [Out, In] weights read as an [In, Out] "ba" view).
// On AVX-512 oneDNN's brgemm matmul runs this at about 2.5x the inner-product (GEMM) forward.
// Plain weights on purpose: a blocked layout would cost a reorder of the whole (large, changing)
// weight matrix on every call.
dnnl::matmul make_fwd(const LinearGeom& g, bool post_relu) {
  memory::desc src({g.n, g.in}, memory::data_type::f32, Tag::ab);
  memory::desc wei({g.in, g.out}, memory::data_type::f32, Tag::ba);
  memory::desc bias({1, g.out}, memory::data_type::f32, Tag::ab);
  memory::desc dst({g.n, g.out}, memory::data_type::f32, Tag::ab);
  dnnl::primitive_attr attr;
  if (post_relu) {
    dnnl::post_ops ops;
    ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
    attr.set_post_ops(ops);
  }
  return dnnl::matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wei, bias, dst), attr,
                                                   du::engine()));
}

// The backward inner-product primitives (GEMM-based) run at full speed on plain layouts.
dnnl::inner_product_forward::primitive_desc make_fwd_hint(const LinearDescs& d) {
  dnnl::inner_product_forward::desc desc(dnnl::prop_kind::forward_training, d.src, d.wei, d.bias,
                                         d.dst);
  return dnnl::inner_product_forward::primitive_desc(desc, du::engine());
}

struct LinearBwd {
  dnnl::inner_product_backward_data data;
  dnnl::inner_product_backward_weights weights;
};

LinearBwd make_linear_bwd(const LinearGeom& g) {
  LinearDescs d(g);
  auto fwd_pd = make_fwd_hint(d);
  dnnl::inner_product_backward_data::desc data_desc(d.src, d.wei, d.dst);
  dnnl::inner_product_backward_weights::desc weights_desc(d.src, d.wei, d.bias, d.dst);
  return LinearBwd{
      dnnl::inner_product_backward_data(
          dnnl::inner_product_backward_data::primitive_desc(data_desc, du::engine(), fwd_pd)),
      dnnl::inner_product_backward_weights(
          dnnl::inner_product_backward_weights::primitive_desc(weights_desc, du::engine(), fwd_pd))};
}

std::string linear_key(const LinearGeom& g) { return str_cat(g.n, ',', g.in, ',', g.out); }

void linear_forward_f32(const LinearGeom& g, const Tensor& x, const Tensor& w, const Tensor& b,
                        Tensor& y, bool post_relu) {
  auto prim = du::cache().get<dnnl::matmul>(str_cat("linear_fwd:", linear_key(g), ',', post_relu),
                                            [&] { return make_fwd(g, post_relu); });
  prim->execute(du::stream(), {{DNNL_ARG_SRC, du::plain_memory(x, {g.n, g.in}, Tag::ab)},
                               {DNNL_ARG_WEIGHTS, du::plain_memory(w, {g.in, g.out}, Tag::ba)},
                               {DNNL_ARG_BIAS, du::plain_memory(b, {1, g.out}, Tag::ab)},
                               {DNNL_ARG_DST, du::plain_memory(y, {g.n, g.out}, Tag::ab)}});
  du::stream().wait();
}

void linear_backward_f32(const LinearGeom& g, const Tensor& x, const Tensor& w, const Tensor& dy,
                         Tensor* dx, Tensor& dw, Tensor& db) {
  auto c = du::cache().get<LinearBwd>(str_cat("linear_bwd:", linear_key(g)),
                                      [&] { return make_linear_bwd(g); });
  LinearDescs d(g);
  memory dy_m = du::plain_memory(dy, d.dst.dims(), Tag::nc);
  c->weights.execute(du::stream(), {{DNNL_ARG_SRC, du::plain_memory(x, d.src.dims(), Tag::nc)},
                                    {DNNL_ARG_DIFF_DST, dy_m},
                                    {DNNL_ARG_DIFF_WEIGHTS, du::plain_memory(dw, d.wei.dims(), Tag::oi)},
                                    {DNNL_ARG_DIFF_BIAS, du::plain_memory(db, d.bias.dims(), Tag::x)}});
  if (dx != nullptr) {
    c->data.execute(du::stream(), {{DNNL_ARG_DIFF_DST, dy_m},
                                   {DNNL_ARG_WEIGHTS, du::plain_memory(w, d.wei.dims(), Tag::oi)},
                                   {DNNL_ARG_DIFF_SRC, du::plain_memory(*dx, d.src.dims(), Tag::nc)}});
  }
  du::stream().wait();
}

// ---- float64: reference loops ----

void linear_forward_f64(const LinearGeom& g, const Tensor& xt, const Tensor& wt, const Tensor& bt,
                        Tensor& yt, bool post_relu) {
  const double* x = xt.data<double>();
  const double* w = wt.data<double>();
  const double* b = bt.data<double>();
  double* y = yt.data<double>();
#pragma omp parallel for collapse(2) schedule(static) if (g.n * g.in * g.out > (1 << 16))
  for (int64_t n = 0; n < g.n; ++n) {
    for (int64_t o = 0; o < g.out; ++o) {
      double acc = b[o];
      for (int64_t i = 0; i < g.in; ++i) acc += x[n * g.in + i] * w[o * g.in + i];
      y[n * g.out + o] = post_relu ? std::max(acc, 0.0) : acc;
    }
  }
}

void linear_backward_f64(const LinearGeom& g, const Tensor& xt, const Tensor& wt, const Tensor& dyt,
                         Tensor* dxt, Tensor& dwt, Tensor& dbt) {
  const double* x = xt.data<double>();
  const double* w = wt.data<double>();
  const double* dy = dyt.data<double>();
  double* dw = dwt.data<double>();
  double* db = dbt.data<double>();
#pragma omp parallel for schedule(static) if (g.n * g.in * g.out > (1 << 16))
  for (int64_t o = 0; o < g.out; ++o) {
    double bsum = 0;
    for (int64_t n = 0; n < g.n; ++n) bsum += dy[n * g.out + o];
    db[o] = bsum;
    for (int64_t i = 0; i < g.in; ++i) {
      double acc = 0;
      for (int64_t n = 0; n < g.n; ++n) acc += dy[n * g.out + o] * x[n * g.in + i];
      dw[o * g.in + i] = acc;
    }
  }
  if (dxt == nullptr) return;
  double* dx = dxt->data<double>();
#pragma omp parallel for collapse(2) schedule(static) if (g.n * g.in * g.out > (1 << 16))
  for (int64_t n = 0; n < g.n; ++n) {
    for (int64_t i = 0; i < g.in; ++i) {
      double acc = 0;
      for (int64_t o = 0; o < g.out; ++o) acc += dy[n * g.out + o] * w[o * g.in + i];
      dx[n * g.in + i] = acc;
    }
  }
}

}  // namespace

void linear_forward_cpu(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y,
                        bool post_relu) {
  const LinearGeom g = linear_geom(x, w, b, y);
  if (x.dtype() == DType::kF32) {
    linear_forward_f32(g, x, w, b, y, post_relu);
  } else {
    linear_forward_f64(g, x, w, b, y, post_relu);
  }
}

void linear_backward_cpu(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor& dw,
                         Tensor& db) {
  const LinearGeom g = linear_geom(x, w, db, dy);
  ALEXNET_ASSERT(dw.shape() == w.shape() && dw.dtype() == w.dtype() && dw.device().is_cpu(),
                 "linear backward: dw ", dw.describe(), " w ", w.describe());
  if (dx != nullptr) {
    ALEXNET_ASSERT(dx->shape() == x.shape() && dx->dtype() == x.dtype() && dx->device().is_cpu(),
                   "linear backward: dx ", dx->describe(), " x ", x.describe());
  }
  if (x.dtype() == DType::kF32) {
    linear_backward_f32(g, x, w, dy, dx, dw, db);
  } else {
    linear_backward_f64(g, x, w, dy, dx, dw, db);
  }
}

}  // namespace alexnet
