// CUDA twins of the layer entry functions of model/layers.h: our own kernels for the paper-exact LRN,
// activations, max pooling, dropout with the CPU's counter-based masks, softmax cross-entropy, batch norm
// and the paper's SGD update; cuDNN for convolution and cuBLAS for the FC layers. Same argument lists
// plus a stream; float32 tensors on one CUDA device.
//
// Every call is asynchronous on `stream` (nullptr: the legacy default stream) and allocates nothing,
// except softmax_xent_forward_cuda, which returns the loss and therefore synchronises the stream.
#pragma once

#include <cstdint>

#include "core/config.h"
#include "core/tensor.h"
#include "model/layers.h"

struct CUstream_st;

namespace alexnet {

using CudaStream = CUstream_st*;

void relu_forward_cuda(const Tensor& x, Tensor& y, CudaStream stream);
void relu_backward_cuda(const Tensor& y, const Tensor& dy, Tensor& dx, CudaStream stream);
void tanh_forward_cuda(const Tensor& x, Tensor& y, CudaStream stream);
void tanh_backward_cuda(const Tensor& y, const Tensor& dy, Tensor& dx, CudaStream stream);

// As lrn_forward_cpu / lrn_backward_cpu (across channels) and lrn2d_* (within one channel).
void lrn_forward_cuda(const Tensor& x, Tensor& y, Tensor& scale, const LrnParams& p, CudaStream stream);
void lrn_backward_cuda(const Tensor& x, const Tensor& y, const Tensor& scale, const Tensor& dy, Tensor& dx,
                       const LrnParams& p, CudaStream stream);
void lrn2d_forward_cuda(const Tensor& x, Tensor& y, Tensor& scale, const LrnParams& p, CudaStream stream);
void lrn2d_backward_cuda(const Tensor& x, const Tensor& y, const Tensor& scale, const Tensor& dy, Tensor& dx,
                         const LrnParams& p, CudaStream stream);

// As maxpool_*_cpu: argmax int32 (index in the plane, first maximum in row-major order). The backward
// gathers (each input element sums, in ascending output order like the CPU, the outputs whose argmax it
// is), so it is deterministic and equal to the CPU's sums.
void maxpool_forward_cuda(const Tensor& x, Tensor& y, Tensor& argmax, const PoolParams& p, CudaStream stream);
void maxpool_backward_cuda(const Tensor& dy, const Tensor& argmax, Tensor& dx, const PoolParams& p,
                           CudaStream stream);

// As dropout_forward_cpu with the same keying, so the masks are bit-identical to the CPU's.
// sample_ids: int64 [N] on the device, or an undefined tensor (row r stands for sample r).
void dropout_forward_cuda(const Tensor& x, Tensor& y, Tensor& mask, double p, PhiloxKey key, uint64_t step,
                          const Tensor& sample_ids, int64_t unit_offset, CudaStream stream);
void dropout_backward_cuda(const Tensor& dy, const Tensor& mask, double p, Tensor& dx, CudaStream stream);

// As softmax_xent_*_cpu. row_loss: float64 [N] on the device (workspace); labels int64 [N] on the device.
// Returns the mean loss (copies N doubles to the host and synchronises the stream).
double softmax_xent_forward_cuda(const Tensor& logits, const Tensor& labels, Tensor& probs, Tensor& row_loss,
                                 CudaStream stream);
void softmax_xent_backward_cuda(const Tensor& probs, const Tensor& labels, Tensor& dlogits, CudaStream stream);

// The paper's rule: v <- momentum v - weight_decay lr w - lr g; w <- w + v (one fused pass).
void sgd_update_cuda(Tensor& w, const Tensor& g, Tensor& v, double lr, double momentum, double weight_decay,
                     CudaStream stream);

// ---- library-backed layers (model/cuda/dense_cuda.cu) ----

// float32 (default): TF32 off in cuDNN and cuBLAS; tf32: tensor cores allowed. bf16 is not available yet.
void set_cuda_precision(Precision precision);

// As conv2d_*_cpu (cuDNN; algorithms found once per shape, deterministic ones only).
void conv2d_forward_cuda(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y, const ConvParams& p,
                         bool post_relu, CudaStream stream);
void conv2d_backward_cuda(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor& dw, Tensor& db,
                          const ConvParams& p, CudaStream stream);
// As linear_*_cpu (cuBLAS SGEMM on the row-major tensors read as column-major transposes).
void linear_forward_cuda(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y, bool post_relu,
                         CudaStream stream);
void linear_backward_cuda(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor& dw, Tensor& db,
                          CudaStream stream);
// As batchnorm_*_cpu. stats_workspace: float64 [2 C] on the device (training only).
void batchnorm_forward_cuda(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                            Tensor& running_var, bool training, Tensor& y, Tensor& saved_mean, Tensor& saved_invstd,
                            const BatchNormParams& p, Tensor& stats_workspace, CudaStream stream);
void batchnorm_backward_cuda(const Tensor& x, const Tensor& gamma, const Tensor& saved_mean,
                             const Tensor& saved_invstd, const Tensor& dy, Tensor& dx, Tensor& dgamma, Tensor& dbeta,
                             CudaStream stream);

// ---- moving activations between the towers ----

// Columns [dst_col0, dst_col0 + width) of every row of dst ([N, *]) become (accumulate ? themselves : 0)
// + columns [src_col0, src_col0 + width) of src ([N, *]). float32; src and dst may live on any CUDA device
// or the host (at least one on a device). The devices involved are synchronised first and the call
// returns when the result is in place (correct before fast: the step's streams come later).
// staging: float32 [N, width] on dst's device, needed when accumulating.
void copy_columns_cuda(const Tensor& src, int64_t src_col0, Tensor& dst, int64_t dst_col0, int64_t width,
                       bool accumulate, Tensor* staging);

// Waits for everything queued on CUDA device `device` (cudaDeviceSynchronize) and throws on an error.
void cuda_sync_device(int device, const char* what);

// Waits for the stream and throws an Error naming `what` if a kernel failed.
void cuda_sync_check(CudaStream stream, const char* what);

}  // namespace alexnet
