// 2-D convolution on the CPU: oneDNN primitives for float32 (blocked layouts chosen by oneDNN,
// reorders to and from plain NCHW/OIHW), direct reference loops for float64.
#include <algorithm>
#include <string>

#include "core/error.h"
#include "model/cpu/dnnl_util.h"
#include "model/layers.h"

namespace alexnet {

int64_t conv_out_size(int64_t in, int64_t kernel, int stride, int pad) {
  return (in + 2 * pad - kernel) / stride + 1;
}

namespace {

using dnnl::memory;
using Tag = memory::format_tag;
namespace du = dnnl_util;

struct ConvGeom {
  int64_t n, cin, h, w, cout, kh, kw, ho, wo;
  int stride, pad, groups;

  // Multiply-adds of the forward pass.
  int64_t macs() const { return n * cout * ho * wo * (cin / groups) * kh * kw; }

  std::string key() const {
    return str_cat(n, ',', cin, ',', h, ',', w, ',', cout, ',', kh, ',', kw, ',', stride, ',', pad, ',',
                   groups);
  }
};

// Checks x, w, b and the output-side tensor y (or dy) against each other.
ConvGeom conv_geom(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& y,
                   const ConvParams& p) {
  ALEXNET_ASSERT(x.ndim() == 4 && w.ndim() == 4 && b.ndim() == 1 && y.ndim() == 4, "conv2d: x ",
                 x.describe(), " w ", w.describe(), " b ", b.describe(), " y ", y.describe());
  ALEXNET_ASSERT(p.stride >= 1 && p.pad >= 0 && p.groups >= 1, "conv2d: stride ", p.stride, " pad ",
                 p.pad, " groups ", p.groups);
  ConvGeom g{x.dim(0), x.dim(1), x.dim(2), x.dim(3), w.dim(0), w.dim(2), w.dim(3), 0, 0,
             p.stride, p.pad, p.groups};
  g.ho = conv_out_size(g.h, g.kh, p.stride, p.pad);
  g.wo = conv_out_size(g.w, g.kw, p.stride, p.pad);
  ALEXNET_ASSERT(g.cin % p.groups == 0 && g.cout % p.groups == 0 && w.dim(1) * p.groups == g.cin,
                 "conv2d: x ", x.describe(), " w ", w.describe(), " groups ", p.groups);
  ALEXNET_ASSERT(g.ho >= 1 && g.wo >= 1, "conv2d: kernel larger than padded input");
  ALEXNET_ASSERT(b.dim(0) == g.cout, "conv2d: b ", b.describe(), " for ", g.cout, " outputs");
  ALEXNET_ASSERT(y.shape() == Shape({g.n, g.cout, g.ho, g.wo}), "conv2d: y/dy ", y.describe(),
                 " expected ", shape_str({g.n, g.cout, g.ho, g.wo}));
  for (const Tensor* t : {&w, &b, &y}) {
    ALEXNET_ASSERT(t->dtype() == x.dtype() && t->device().is_cpu(), "conv2d: ", t->describe(),
                   " with x ", x.describe());
  }
  ALEXNET_ASSERT(x.device().is_cpu() && (x.dtype() == DType::kF32 || x.dtype() == DType::kF64),
                 "conv2d: x ", x.describe());
  return g;
}

// ---- float32: oneDNN ----

memory::dims weight_dims(const ConvGeom& g) {
  if (g.groups == 1) return {g.cout, g.cin, g.kh, g.kw};
  return {g.groups, g.cout / g.groups, g.cin / g.groups, g.kh, g.kw};
}
Tag weight_tag(const ConvGeom& g) { return g.groups == 1 ? Tag::oihw : Tag::goihw; }

struct ConvDescs {
  memory::desc src, wei, bias, dst;         // plain, as the caller holds them
  memory::desc src_any, wei_any, dst_any;  // let oneDNN pick its layout
  memory::dims strides, pad;

  explicit ConvDescs(const ConvGeom& g)
      : src({g.n, g.cin, g.h, g.w}, memory::data_type::f32, Tag::nchw),
        wei(weight_dims(g), memory::data_type::f32, weight_tag(g)),
        bias({g.cout}, memory::data_type::f32, Tag::x),
        dst({g.n, g.cout, g.ho, g.wo}, memory::data_type::f32, Tag::nchw),
        src_any({g.n, g.cin, g.h, g.w}, memory::data_type::f32, Tag::any),
        wei_any(weight_dims(g), memory::data_type::f32, Tag::any),
        dst_any({g.n, g.cout, g.ho, g.wo}, memory::data_type::f32, Tag::any),
        strides{g.stride, g.stride},
        pad{g.pad, g.pad} {}
};

dnnl::convolution_forward::primitive_desc make_fwd_pd(const ConvDescs& d, bool post_relu) {
  dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_training,
                                       dnnl::algorithm::convolution_direct, d.src_any, d.wei_any,
                                       d.bias, d.dst_any, d.strides, d.pad, d.pad);
  dnnl::primitive_attr attr;
  if (post_relu) {
    dnnl::post_ops ops;
    ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
    attr.set_post_ops(ops);
  }
  return dnnl::convolution_forward::primitive_desc(desc, attr, du::engine());
}

struct ConvFwd {
  dnnl::convolution_forward prim;
  du::Reorder src, wei, dst;
};

ConvFwd make_conv_fwd(const ConvGeom& g, bool post_relu) {
  ConvDescs d(g);
  auto pd = make_fwd_pd(d, post_relu);
  return ConvFwd{dnnl::convolution_forward(pd), du::Reorder(d.src, pd.src_desc()),
                 du::Reorder(d.wei, pd.weights_desc()), du::Reorder(pd.dst_desc(), d.dst)};
}

void conv_forward_f32(const ConvGeom& g, const Tensor& x, const Tensor& w, const Tensor& b,
                      Tensor& y, bool post_relu) {
  auto c = du::cache().get<ConvFwd>(str_cat("conv_fwd:", g.key(), ',', post_relu),
                                    [&] { return make_conv_fwd(g, post_relu); });
  ConvDescs d(g);
  memory x_m = du::plain_memory(x, d.src.dims(), Tag::nchw);
  memory w_m = du::plain_memory(w, d.wei.dims(), weight_tag(g));
  memory b_m = du::plain_memory(b, d.bias.dims(), Tag::x);
  memory y_m = du::plain_memory(y, d.dst.dims(), Tag::nchw);
  memory src = c->src.to_scratch(x_m, 0);
  memory wei = c->wei.to_scratch(w_m, 1);
  memory dst = c->dst.out_buffer(y_m, 2);
  c->prim.execute(du::stream(), {{DNNL_ARG_SRC, src},
                                 {DNNL_ARG_WEIGHTS, wei},
                                 {DNNL_ARG_BIAS, b_m},
                                 {DNNL_ARG_DST, dst}});
  c->dst.finish(dst, y_m);
  du::stream().wait();
}

struct ConvBwd {
  dnnl::convolution_backward_data data;
  du::Reorder data_dy, data_wei, data_dx;
  dnnl::convolution_backward_weights weights;
  du::Reorder weights_x, weights_dy, weights_dw;
};

ConvBwd make_conv_bwd(const ConvGeom& g) {
  ConvDescs d(g);
  auto fwd_pd = make_fwd_pd(d, false);
  dnnl::convolution_backward_data::desc data_desc(dnnl::algorithm::convolution_direct, d.src_any,
                                                  d.wei_any, d.dst_any, d.strides, d.pad, d.pad);
  dnnl::convolution_backward_data::primitive_desc data_pd(data_desc, du::engine(), fwd_pd);
  dnnl::convolution_backward_weights::desc weights_desc(dnnl::algorithm::convolution_direct,
                                                        d.src_any, d.wei_any, d.bias, d.dst_any,
                                                        d.strides, d.pad, d.pad);
  dnnl::convolution_backward_weights::primitive_desc weights_pd(weights_desc, du::engine(), fwd_pd);
  return ConvBwd{dnnl::convolution_backward_data(data_pd),
                 du::Reorder(d.dst, data_pd.diff_dst_desc()),
                 du::Reorder(d.wei, data_pd.weights_desc()),
                 du::Reorder(data_pd.diff_src_desc(), d.src),
                 dnnl::convolution_backward_weights(weights_pd),
                 du::Reorder(d.src, weights_pd.src_desc()),
                 du::Reorder(d.dst, weights_pd.diff_dst_desc()),
                 du::Reorder(weights_pd.diff_weights_desc(), d.wei)};
}

void conv_backward_f32(const ConvGeom& g, const Tensor& x, const Tensor& w, const Tensor& dy,
                       Tensor* dx, Tensor& dw, Tensor& db) {
  auto c = du::cache().get<ConvBwd>(str_cat("conv_bwd:", g.key()), [&] { return make_conv_bwd(g); });
  ConvDescs d(g);
  memory dy_m = du::plain_memory(dy, d.dst.dims(), Tag::nchw);
  memory x_m = du::plain_memory(x, d.src.dims(), Tag::nchw);
  memory dw_m = du::plain_memory(dw, d.wei.dims(), weight_tag(g));
  memory db_m = du::plain_memory(db, d.bias.dims(), Tag::x);

  memory dy_w = c->weights_dy.to_scratch(dy_m, 0);
  memory src = c->weights_x.to_scratch(x_m, 1);
  memory diff_wei = c->weights_dw.out_buffer(dw_m, 2);
  c->weights.execute(du::stream(), {{DNNL_ARG_SRC, src},
                                    {DNNL_ARG_DIFF_DST, dy_w},
                                    {DNNL_ARG_DIFF_WEIGHTS, diff_wei},
                                    {DNNL_ARG_DIFF_BIAS, db_m}});
  c->weights_dw.finish(diff_wei, dw_m);

  if (dx != nullptr) {
    memory w_m = du::plain_memory(w, d.wei.dims(), weight_tag(g));
    memory dx_m = du::plain_memory(*dx, d.src.dims(), Tag::nchw);
    // The two backward primitives usually want diff_dst in the same layout: reorder it once.
    memory dy_d = c->data_dy.to_desc == dy_w.get_desc() ? dy_w : c->data_dy.to_scratch(dy_m, 3);
    memory wei = c->data_wei.to_scratch(w_m, 4);
    memory diff_src = c->data_dx.out_buffer(dx_m, 5);
    c->data.execute(du::stream(), {{DNNL_ARG_DIFF_DST, dy_d},
                                   {DNNL_ARG_WEIGHTS, wei},
                                   {DNNL_ARG_DIFF_SRC, diff_src}});
    c->data_dx.finish(diff_src, dx_m);
  }
  du::stream().wait();
}

// ---- float64: direct loops (the reference) ----

// Below this many multiply-adds a loop runs on one thread: the gradient checks call tiny
// convolutions thousands of times, where waking the thread team costs more than the work.
constexpr int64_t kParallelMacs = 1 << 16;

void conv_forward_f64(const ConvGeom& g, const Tensor& xt, const Tensor& wt, const Tensor& bt,
                      Tensor& yt, bool post_relu) {
  const double* x = xt.data<double>();
  const double* w = wt.data<double>();
  const double* b = bt.data<double>();
  double* y = yt.data<double>();
  const int64_t cin_g = g.cin / g.groups, cout_g = g.cout / g.groups;
#pragma omp parallel for collapse(2) schedule(static) if (g.macs() > kParallelMacs)
  for (int64_t n = 0; n < g.n; ++n) {
    for (int64_t co = 0; co < g.cout; ++co) {
      const int64_t c0 = co / cout_g * cin_g;
      for (int64_t oh = 0; oh < g.ho; ++oh) {
        for (int64_t ow = 0; ow < g.wo; ++ow) {
          double acc = b[co];
          for (int64_t ci = 0; ci < cin_g; ++ci) {
            for (int64_t kh = 0; kh < g.kh; ++kh) {
              const int64_t ih = oh * g.stride - g.pad + kh;
              if (ih < 0 || ih >= g.h) continue;
              for (int64_t kw = 0; kw < g.kw; ++kw) {
                const int64_t iw = ow * g.stride - g.pad + kw;
                if (iw < 0 || iw >= g.w) continue;
                acc += x[((n * g.cin + c0 + ci) * g.h + ih) * g.w + iw] *
                       w[((co * cin_g + ci) * g.kh + kh) * g.kw + kw];
              }
            }
          }
          y[((n * g.cout + co) * g.ho + oh) * g.wo + ow] = post_relu ? std::max(acc, 0.0) : acc;
        }
      }
    }
  }
}

void conv_backward_f64(const ConvGeom& g, const Tensor& xt, const Tensor& wt, const Tensor& dyt,
                       Tensor* dxt, Tensor& dwt, Tensor& dbt) {
  const double* x = xt.data<double>();
  const double* w = wt.data<double>();
  const double* dy = dyt.data<double>();
  double* dw = dwt.data<double>();
  double* db = dbt.data<double>();
  const int64_t cin_g = g.cin / g.groups, cout_g = g.cout / g.groups;
  const int64_t plane = g.ho * g.wo;

#pragma omp parallel for schedule(static) if (g.macs() > kParallelMacs)
  for (int64_t co = 0; co < g.cout; ++co) {
    const int64_t c0 = co / cout_g * cin_g;
    double bsum = 0;
    for (int64_t n = 0; n < g.n; ++n)
      for (int64_t i = 0; i < plane; ++i) bsum += dy[(n * g.cout + co) * plane + i];
    db[co] = bsum;
    for (int64_t ci = 0; ci < cin_g; ++ci) {
      for (int64_t kh = 0; kh < g.kh; ++kh) {
        for (int64_t kw = 0; kw < g.kw; ++kw) {
          double acc = 0;
          for (int64_t n = 0; n < g.n; ++n) {
            for (int64_t oh = 0; oh < g.ho; ++oh) {
              const int64_t ih = oh * g.stride - g.pad + kh;
              if (ih < 0 || ih >= g.h) continue;
              for (int64_t ow = 0; ow < g.wo; ++ow) {
                const int64_t iw = ow * g.stride - g.pad + kw;
                if (iw < 0 || iw >= g.w) continue;
                acc += dy[((n * g.cout + co) * g.ho + oh) * g.wo + ow] *
                       x[((n * g.cin + c0 + ci) * g.h + ih) * g.w + iw];
              }
            }
          }
          dw[((co * cin_g + ci) * g.kh + kh) * g.kw + kw] = acc;
        }
      }
    }
  }

  if (dxt == nullptr) return;
  double* dx = dxt->data<double>();
#pragma omp parallel for schedule(static) if (g.macs() > kParallelMacs)
  for (int64_t n = 0; n < g.n; ++n) {
    std::fill(dx + n * g.cin * g.h * g.w, dx + (n + 1) * g.cin * g.h * g.w, 0.0);
    for (int64_t co = 0; co < g.cout; ++co) {
      const int64_t c0 = co / cout_g * cin_g;
      for (int64_t oh = 0; oh < g.ho; ++oh) {
        for (int64_t ow = 0; ow < g.wo; ++ow) {
          const double d = dy[((n * g.cout + co) * g.ho + oh) * g.wo + ow];
          for (int64_t ci = 0; ci < cin_g; ++ci) {
            for (int64_t kh = 0; kh < g.kh; ++kh) {
              const int64_t ih = oh * g.stride - g.pad + kh;
              if (ih < 0 || ih >= g.h) continue;
              for (int64_t kw = 0; kw < g.kw; ++kw) {
                const int64_t iw = ow * g.stride - g.pad + kw;
                if (iw < 0 || iw >= g.w) continue;
                dx[((n * g.cin + c0 + ci) * g.h + ih) * g.w + iw] +=
                    d * w[((co * cin_g + ci) * g.kh + kh) * g.kw + kw];
              }
            }
          }
        }
      }
    }
  }
}

}  // namespace

void conv2d_forward_cpu(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y,
                        const ConvParams& p, bool post_relu) {
  const ConvGeom g = conv_geom(x, w, b, y, p);
  if (x.dtype() == DType::kF32) {
    conv_forward_f32(g, x, w, b, y, post_relu);
  } else {
    conv_forward_f64(g, x, w, b, y, post_relu);
  }
}

void conv2d_backward_cpu(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor& dw,
                         Tensor& db, const ConvParams& p) {
  const ConvGeom g = conv_geom(x, w, db, dy, p);
  ALEXNET_ASSERT(dw.shape() == w.shape() && dw.dtype() == w.dtype() && dw.device().is_cpu(),
                 "conv2d backward: dw ", dw.describe(), " w ", w.describe());
  if (dx != nullptr) {
    ALEXNET_ASSERT(dx->shape() == x.shape() && dx->dtype() == x.dtype() && dx->device().is_cpu(),
                   "conv2d backward: dx ", dx->describe(), " x ", x.describe());
  }
  if (x.dtype() == DType::kF32) {
    conv_backward_f32(g, x, w, dy, dx, dw, db);
  } else {
    conv_backward_f64(g, x, w, dy, dx, dw, db);
  }
}

}  // namespace alexnet
