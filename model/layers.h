// The layers of the network, one entry function per op on the CPU backend (CUDA twins later live
// in layers_cuda.h with the same argument lists plus a stream). Layers do not know about towers.
//
// Conventions for every function here:
// - tensors are dense, row-major, NCHW; CPU; float32 (the model) or float64 (gradient checks);
//   all tensors of one call share a dtype, except integer index/label/mask tensors.
// - outputs are allocated by the caller with the documented shape and are overwritten, never
//   accumulated into; gradients are of the loss with respect to the named tensor.
// - shapes and dtypes are checked; a mismatch is an internal error (ALEXNET_ASSERT) because only
//   the graph calls these.
#pragma once

#include <cstdint>

#include "core/rng.h"
#include "core/tensor.h"

namespace alexnet {

// ---- convolution (oneDNN for float32; a direct reference loop for float64) ----

struct ConvParams {
  int stride = 1;
  int pad = 0;
  int groups = 1;
};

// Output side: (in + 2*pad - kernel) / stride + 1.
int64_t conv_out_size(int64_t in, int64_t kernel, int stride, int pad);

// x: [N, Cin, H, W]; w: [Cout, Cin/groups, K, K]; b: [Cout]; y: [N, Cout, Ho, Wo].
// post_relu: apply max(0, .) to y in the same pass (the graph uses it when activation is ReLU
// and nothing stands between the conv and the ReLU).
void conv2d_forward_cpu(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y,
                        const ConvParams& p, bool post_relu = false);
// dy: [N, Cout, Ho, Wo]. dx (may be nullptr: the first layer needs no input gradient): like x.
// dw, db: like w, b.
void conv2d_backward_cpu(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor& dw,
                         Tensor& db, const ConvParams& p);

// ---- fully connected ----

// x: [N, In]; w: [Out, In]; b: [Out]; y: [N, Out] = x w^T + b.
void linear_forward_cpu(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y,
                        bool post_relu = false);
// dy: [N, Out]; dx (may be nullptr): [N, In]; dw: [Out, In]; db: [Out].
void linear_backward_cpu(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor& dw,
                         Tensor& db);

// ---- activations (any shape; y may alias x, dx may alias dy) ----

void relu_forward_cpu(const Tensor& x, Tensor& y);
// Uses the forward output y: dx = dy where y > 0, else 0.
void relu_backward_cpu(const Tensor& y, const Tensor& dy, Tensor& dx);
void tanh_forward_cpu(const Tensor& x, Tensor& y);
// dx = dy * (1 - y^2).
void tanh_backward_cpu(const Tensor& y, const Tensor& dy, Tensor& dx);

// ---- local response normalisation (paper §3.3, exactly: alpha not divided by n) ----

struct LrnParams {
  double k = 2.0;
  int n = 5;
  double alpha = 1e-4;
  double beta = 0.75;
};

// Across channels: scale[i] = k + alpha * sum_{j=max(0,i-n/2)}^{min(C-1,i+n/2)} x[j]^2 (integer n/2,
// so even n sums n+1 channels), y = x * scale^-beta.
// x, y, scale: [N, C, H, W]; scale is saved for the backward pass.
void lrn_forward_cpu(const Tensor& x, Tensor& y, Tensor& scale, const LrnParams& p);
void lrn_backward_cpu(const Tensor& x, const Tensor& y, const Tensor& scale, const Tensor& dy,
                      Tensor& dx, const LrnParams& p);
// Within one channel ("2D"): the sum runs over the clipped window [r-n/2, r+n/2] x [c-n/2, c+n/2].
void lrn2d_forward_cpu(const Tensor& x, Tensor& y, Tensor& scale, const LrnParams& p);
void lrn2d_backward_cpu(const Tensor& x, const Tensor& y, const Tensor& scale, const Tensor& dy,
                        Tensor& dx, const LrnParams& p);

// ---- batch normalisation ("2D": per channel over N, H, W; "1D": x is [N, C], per feature) ----

struct BatchNormParams {
  double eps = 1e-5;
  double momentum = 0.1;  // running = (1 - momentum) * running + momentum * batch
};

// x, y: [N, C, H, W] or [N, C]; gamma, beta, running_mean, running_var: [C].
// training: normalise with the batch mean and biased variance, save them (saved_mean, saved_invstd:
// [C], invstd = 1/sqrt(var + eps)), and update the running statistics with the unbiased variance.
// Not training: normalise with the running statistics; saved_* are left untouched.
void batchnorm_forward_cpu(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                           Tensor& running_mean, Tensor& running_var, bool training, Tensor& y,
                           Tensor& saved_mean, Tensor& saved_invstd, const BatchNormParams& p);
// Training-mode backward (batch statistics). dx like x; dgamma, dbeta: [C].
void batchnorm_backward_cpu(const Tensor& x, const Tensor& gamma, const Tensor& saved_mean,
                            const Tensor& saved_invstd, const Tensor& dy, Tensor& dx, Tensor& dgamma,
                            Tensor& dbeta);

// ---- max pooling (no padding; windows start at 0, stride apart; floor on the output size) ----

struct PoolParams {
  int size = 3;
  int stride = 2;
};

// x: [N, C, H, W]; y: [N, C, Ho, Wo] with Ho = (H - size) / stride + 1; argmax: int32 like y, the
// index h*W + w of the maximum within its (n, c) plane. Ties go to the first maximum in row-major
// order (as PyTorch does), so overlapping windows can share an argmax.
void maxpool_forward_cpu(const Tensor& x, Tensor& y, Tensor& argmax, const PoolParams& p);
// dx like x: each dy is added to its window's argmax (overlapping windows accumulate).
void maxpool_backward_cpu(const Tensor& dy, const Tensor& argmax, Tensor& dx);

// ---- dropout (inverted: kept units scaled by 1/(1-p)) ----

// Which random draws a dropout layer makes: unit u of sample s at step t is kept when
// uniform(CounterRng(key, (t << 32) | s).bits(u)) >= p, with u the unit's index in the whole
// (tower-merged) layer, so the mask does not depend on how the towers are placed.
struct DropoutKeying {
  PhiloxKey key;           // make_key(seed, RngPurpose::kDropout, layer id)
  uint64_t step = 0;
  const int64_t* sample_ids = nullptr;  // global sample index of each row, length N
  int64_t unit_offset = 0;              // index in the merged layer of this tensor's unit 0
};

// x, y: [N, U]; mask: uint8 [N, U] (1 kept, 0 dropped). p in [0, 1).
void dropout_forward_cpu(const Tensor& x, Tensor& y, Tensor& mask, double p, const DropoutKeying& k);
void dropout_backward_cpu(const Tensor& dy, const Tensor& mask, double p, Tensor& dx);

// ---- softmax cross-entropy ----

// logits, probs: [N, K]; labels: int64 [N] in [0, K). Returns the mean loss over the batch.
double softmax_xent_forward_cpu(const Tensor& logits, const Tensor& labels, Tensor& probs);
// dlogits = (probs - onehot(labels)) / N.
void softmax_xent_backward_cpu(const Tensor& probs, const Tensor& labels, Tensor& dlogits);
// The mean of n per-row losses computed on a device (-1 marks a row whose label is outside [0, classes):
// an error naming the row; a NaN passes through, as on the CPU).
double softmax_xent_mean(const double* row_loss, int64_t n, int64_t classes);

// ---- the paper's SGD rule (§5) ----

// v <- momentum * v - weight_decay * lr * w - lr * g;  w <- w + v.   w, g, v: same shape, float32.
void sgd_update_cpu(Tensor& w, const Tensor& g, Tensor& v, double lr, double momentum,
                    double weight_decay);

}  // namespace alexnet
