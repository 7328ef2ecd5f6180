// The CUDA kernels of model/cuda/layers_cuda.h against the CPU backend: fresh random inputs each run
// (seeded from the clock, printed), device outputs poisoned with NaN before each call so an element a
// kernel fails to write shows up, and the dropout masks bit-identical to the CPU's. Label gpu: every test
// skips when no CUDA device is present.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "core/config.h"
#include "core/device.h"
#include "core/rng.h"
#include "data_service/augment.h"
#include "model/cuda/layers_cuda.h"
#include "model/layers.h"
#include "model/ops.h"
#include "tests/common/expect.h"
#include "tests/common/gradcheck.h"
#include "tests/common/precision_scope.h"
#include "tests/common/random_crops.h"

namespace alexnet {
namespace {

using testing::random_tensor;

uint64_t fresh_seed() {
  static const uint64_t base = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  static uint64_t n = 0;
  return base + 7919 * (++n);
}

struct ConvCase {
  Shape x, w;
  ConvParams p;
};

class CudaLayers : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device: " << device_summary();
    seed_ = fresh_seed();
    RecordProperty("seed", std::to_string(seed_));
    std::printf("seed %llu\n", static_cast<unsigned long long>(seed_));
  }
  // A float32 CPU tensor in [lo, hi).
  Tensor host(const Shape& shape, double lo = -1.0, double hi = 1.0) {
    return random_tensor(shape, seed_ + (++draws_), lo, hi).to(DType::kF32);
  }
  static Tensor gpu(const Tensor& t) { return t.clone(Device::cuda(0)); }
  // An output buffer on the device, filled with NaN.
  static Tensor poisoned(const Shape& shape, DType dtype = DType::kF32) {
    Tensor h = Tensor::empty(shape, dtype);
    std::memset(h.raw_data(), 0xff, h.nbytes());  // NaN for floats, -1 / 255 for integers
    return h.clone(Device::cuda(0));
  }
  static double max_rel(const Tensor& gpu_result, const Tensor& cpu) { return testing::max_rel_diff(gpu_result, cpu); }
  // A convolution forward (fused ReLU) and backward against the CPU, within `tol` of each result's
  // largest value; the bias gradient (float32 sums in every precision) within 1e-5.
  void check_conv(const ConvCase& c, double tol, const std::string& mode) {
    Tensor x = host(c.x), w = host(c.w, -0.1, 0.1), b = host({c.w[0]});
    const int64_t Ho = conv_out_size(c.x[2], c.w[2], c.p.stride, c.p.pad);
    const Shape ys{c.x[0], c.w[0], Ho, Ho};
    Tensor y = Tensor::empty(ys), dy = host(ys), dx = Tensor::empty(c.x), dw = Tensor::empty(c.w),
           db = Tensor::empty({c.w[0]});
    conv2d_forward_cpu(x, w, b, y, c.p, true);
    conv2d_backward_cpu(x, w, dy, &dx, dw, db, c.p);
    Tensor gx = gpu(x), gw = gpu(w), gy = poisoned(ys), gdx = poisoned(c.x), gdw = poisoned(c.w),
           gdb = poisoned({c.w[0]});
    conv2d_forward_cuda(gx, gw, gpu(b), gy, c.p, true, nullptr);
    conv2d_backward_cuda(gx, gw, gpu(dy), &gdx, gdw, gdb, c.p, nullptr);
    cuda_sync_check(nullptr, "conv");
    const std::string what = mode + " conv " + shape_str(c.x) + " * " + shape_str(c.w);
    EXPECT_LE(max_rel(gy, y), tol) << what;
    EXPECT_LE(max_rel(gdx, dx), tol) << what;
    EXPECT_LE(max_rel(gdw, dw), tol) << what;
    EXPECT_LE(max_rel(gdb, db), 1e-5) << what;
  }
  // An FC layer [19, 300] -> 130 forward and backward against the CPU.
  void check_fc(bool relu, double tol, const std::string& mode) {
    const int64_t N = 19, In = 300, Out = 130;
    Tensor x = host({N, In}), w = host({Out, In}, -0.1, 0.1), b = host({Out}), dy = host({N, Out});
    Tensor y = Tensor::empty({N, Out}), dx = Tensor::empty({N, In}), dw = Tensor::empty({Out, In}),
           db = Tensor::empty({Out});
    linear_forward_cpu(x, w, b, y, relu);
    linear_backward_cpu(x, w, dy, &dx, dw, db);
    Tensor gx = gpu(x), gw = gpu(w), gy = poisoned({N, Out}), gdx = poisoned({N, In}), gdw = poisoned({Out, In}),
           gdb = poisoned({Out});
    linear_forward_cuda(gx, gw, gpu(b), gy, relu, nullptr);
    linear_backward_cuda(gx, gw, gpu(dy), &gdx, gdw, gdb, nullptr);
    cuda_sync_check(nullptr, "linear");
    const std::string what = mode + " fc" + (relu ? " relu" : "");
    EXPECT_LE(max_rel(gy, y), tol) << what;
    EXPECT_LE(max_rel(gdx, dx), tol) << what;
    EXPECT_LE(max_rel(gdw, dw), tol) << what;
    EXPECT_LE(max_rel(gdb, db), 1e-5) << what;
  }
  uint64_t seed_ = 0;
  uint64_t draws_ = 0;
};

TEST_F(CudaLayers, Activations) {
  const Shape s{3, 5, 7, 9};
  Tensor x = host(s), dy = host(s);
  for (bool relu : {true, false}) {
    Tensor y = Tensor::empty(s), dx = Tensor::empty(s);
    Tensor gy = poisoned(s), gdx = poisoned(s);
    if (relu) {
      relu_forward_cpu(x, y);
      relu_backward_cpu(y, dy, dx);
      relu_forward_cuda(gpu(x), gy, nullptr);
      relu_backward_cuda(gy, gpu(dy), gdx, nullptr);
    } else {
      tanh_forward_cpu(x, y);
      tanh_backward_cpu(y, dy, dx);
      tanh_forward_cuda(gpu(x), gy, nullptr);
      tanh_backward_cuda(gy, gpu(dy), gdx, nullptr);
    }
    cuda_sync_check(nullptr, "activations");
    EXPECT_LE(max_rel(gy, y), 1e-6) << (relu ? "relu" : "tanh");
    EXPECT_LE(max_rel(gdx, dx), 1e-6) << (relu ? "relu" : "tanh");
  }
}

TEST_F(CudaLayers, LrnAcrossAndWithin) {
  for (bool within : {false, true})
    for (int n : {1, 2, 3, 5, 9})
      for (double beta : {0.75, 0.5, 1.0, 0.6}) {
        const Shape s{2, 7, 6, 5};
        const LrnParams p{2.0, n, 1e-2, beta};
        Tensor x = host(s, -3, 3), dy = host(s);
        Tensor y = Tensor::empty(s), sc = Tensor::empty(s), dx = Tensor::empty(s);
        Tensor gx = gpu(x), gy = poisoned(s), gsc = poisoned(s), gdx = poisoned(s);
        if (within) {
          lrn2d_forward_cpu(x, y, sc, p);
          lrn2d_backward_cpu(x, y, sc, dy, dx, p);
          lrn2d_forward_cuda(gx, gy, gsc, p, nullptr);
          lrn2d_backward_cuda(gx, gy, gsc, gpu(dy), gdx, p, nullptr);
        } else {
          lrn_forward_cpu(x, y, sc, p);
          lrn_backward_cpu(x, y, sc, dy, dx, p);
          lrn_forward_cuda(gx, gy, gsc, p, nullptr);
          lrn_backward_cuda(gx, gy, gsc, gpu(dy), gdx, p, nullptr);
        }
        cuda_sync_check(nullptr, "lrn");
        const std::string what = std::string(within ? "2D" : "across") + " n=" + std::to_string(n) +
                                 " beta=" + std::to_string(beta);
        EXPECT_LE(max_rel(gsc, sc), 1e-6) << what;
        EXPECT_LE(max_rel(gy, y), 2e-6) << what;
        EXPECT_LE(max_rel(gdx, dx), 1e-5) << what;
      }
}

TEST_F(CudaLayers, MaxPoolOverlappingAndNot) {
  for (bool with_nan : {false, true})
  for (PoolParams p : {PoolParams{3, 2}, PoolParams{2, 2}, PoolParams{3, 1}}) {
    const Shape s{2, 3, 13, 11};
    Tensor x = host(s);
    // Ties: a few repeated values so the first-maximum rule matters; then NaNs, which replace the
    // window's best wherever they stand (the CPU's rule), so those outputs are NaN.
    for (int64_t i = 0; i < x.numel(); i += 5) x.data<float>()[i] = 0.5f;
    if (with_nan)
      for (int64_t i = 3; i < x.numel(); i += 17) x.data<float>()[i] = std::numeric_limits<float>::quiet_NaN();
    const Shape o{2, 3, (13 - p.size) / p.stride + 1, (11 - p.size) / p.stride + 1};
    Tensor y = Tensor::empty(o), arg = Tensor::empty(o, DType::kI32), dx = Tensor::empty(s);
    Tensor dy = host(o);
    maxpool_forward_cpu(x, y, arg, p);
    maxpool_backward_cpu(dy, arg, dx);
    Tensor gy = poisoned(o), garg = poisoned(o, DType::kI32), gdx = poisoned(s);
    maxpool_forward_cuda(gpu(x), gy, garg, p, nullptr);
    maxpool_backward_cuda(gpu(dy), garg, gdx, p, nullptr);
    cuda_sync_check(nullptr, "maxpool");
    Tensor harg = garg.clone(Device::cpu());
    Tensor hy = gy.clone(Device::cpu());
    const std::string what = "pool " + std::to_string(p.size) + "/" + std::to_string(p.stride) +
                             (with_nan ? " with NaNs" : "");
    EXPECT_EQ(std::memcmp(harg.raw_data(), arg.raw_data(), arg.nbytes()), 0) << "argmax, " << what;
    EXPECT_EQ(std::memcmp(hy.raw_data(), y.raw_data(), y.nbytes()), 0) << what;  // NaNs included
    EXPECT_EQ(max_rel(gdx, dx), 0.0) << "backward, " << what << " (same sums in the same order)";
  }
}

TEST_F(CudaLayers, DropoutMasksAreTheCpus) {
  const int64_t N = 6, U = 1000;
  Tensor x = host({N, U}), dy = host({N, U});
  const std::vector<int64_t> ids = {5, 1000003, 17, 9, 123456789012, 0};
  Tensor id_host = Tensor::from_vector<int64_t>({N}, ids);
  // Unit offsets on and off a multiple of 4 (the Philox word of a unit), with and without sample ids.
  for (int64_t offset : {int64_t{2048}, int64_t{2050}})
  for (bool with_ids : {true, false})
  for (double p : {0.5, 0.1, 0.9}) {
    DropoutKeying k;
    k.key = make_key(seed_, RngPurpose::kDropout, 6);
    k.step = 4242;
    k.sample_ids = with_ids ? ids.data() : nullptr;
    k.unit_offset = offset;
    Tensor y = Tensor::empty({N, U}), mask = Tensor::empty({N, U}, DType::kU8), dx = Tensor::empty({N, U});
    dropout_forward_cpu(x, y, mask, p, k);
    dropout_backward_cpu(dy, mask, p, dx);
    Tensor gy = poisoned({N, U}), gmask = poisoned({N, U}, DType::kU8), gdx = poisoned({N, U});
    dropout_forward_cuda(gpu(x), gy, gmask, p, k.key, k.step, with_ids ? gpu(id_host) : Tensor{}, k.unit_offset,
                         nullptr);
    dropout_backward_cuda(gpu(dy), gmask, p, gdx, nullptr);
    cuda_sync_check(nullptr, "dropout");
    Tensor hmask = gmask.clone(Device::cpu());
    const std::string what = "p " + std::to_string(p) + " offset " + std::to_string(offset) +
                             (with_ids ? " with sample ids" : " without sample ids");
    EXPECT_EQ(std::memcmp(hmask.raw_data(), mask.raw_data(), mask.nbytes()), 0) << what;
    EXPECT_EQ(max_rel(gy, y), 0.0) << what;
    EXPECT_EQ(max_rel(gdx, dx), 0.0) << what;
  }
}

TEST_F(CudaLayers, SoftmaxCrossEntropy) {
  for (int64_t K : {2, 10, 1000}) {
    const int64_t N = 37;
    Tensor z = host({N, K}, -20, 20);
    std::vector<int64_t> lab(N);
    for (int64_t r = 0; r < N; ++r) lab[r] = (r * 7919 + static_cast<int64_t>(seed_ % 1000)) % K;
    Tensor labels = Tensor::from_vector<int64_t>({N}, lab);
    Tensor probs = Tensor::empty({N, K}), d = Tensor::empty({N, K});
    const double loss = softmax_xent_forward_cpu(z, labels, probs);
    softmax_xent_backward_cpu(probs, labels, d);
    Tensor gprobs = poisoned({N, K}), gd = poisoned({N, K}), rows = poisoned({N}, DType::kF64);
    Tensor glabels = gpu(labels);
    const double gloss = softmax_xent_forward_cuda(gpu(z), glabels, gprobs, rows, nullptr);
    softmax_xent_backward_cuda(gprobs, glabels, gd, nullptr);
    cuda_sync_check(nullptr, "softmax");
    EXPECT_NEAR(gloss, loss, 1e-9 * std::max(1.0, std::fabs(loss))) << "K " << K;
    EXPECT_LE(max_rel(gprobs, probs), 1e-6) << "K " << K;
    EXPECT_LE(max_rel(gd, d), 1e-6) << "K " << K;
    // The form the graph uses: the rows stay on the device until read back.
    Tensor rprobs = poisoned({N, K}), rrows = poisoned({N}, DType::kF64);
    ops::softmax_xent_rows(gpu(z), glabels, rprobs, rrows);
    Tensor host_rows = rrows.clone(Device::cpu());
    EXPECT_NEAR(softmax_xent_mean(host_rows.data<double>(), N, K), loss, 1e-9 * std::max(1.0, std::fabs(loss)))
        << "K " << K;
    EXPECT_LE(max_rel(rprobs, probs), 1e-6) << "K " << K;
  }
}

TEST_F(CudaLayers, PinnedTransfersUploadAtOnceAndDownloadAtFinish) {
  ops::PinnedTransfers io(Device::cuda(0));
  CudaStream s = cuda_create_stream(0);
  ops::StreamScope on(s);
  // Two passes, the second with larger tensors (each position's pinned block grows), three dtypes.
  for (int64_t n : {1000, 70001}) {
    Tensor f = host({n});
    Tensor b = Tensor::empty({n}, DType::kU8);
    for (int64_t i = 0; i < n; ++i) b.data<uint8_t>()[i] = static_cast<uint8_t>(i * 31 + n);
    Tensor l = Tensor::from_vector<int64_t>({3}, {n, -n, 7});
    const Tensor f0 = f.clone(), b0 = b.clone(), l0 = l.clone();
    Tensor gf = poisoned({n}), gb = poisoned({n}, DType::kU8), gl = poisoned({3}, DType::kI64);
    io.upload(f, gf);
    io.upload(b, gb);
    io.upload(l, gl);
    // The sources were read when upload returned: changing them now must not reach the device.
    std::memset(f.raw_data(), 0, f.nbytes());
    std::memset(b.raw_data(), 0, b.nbytes());
    std::memset(l.raw_data(), 0, l.nbytes());
    Tensor hf = Tensor::empty({n}), hb = Tensor::empty({n}, DType::kU8), hl = Tensor::empty({3}, DType::kI64);
    for (Tensor* t : {&hf, &hb, &hl}) std::memset(t->raw_data(), 0xff, t->nbytes());
    io.download(gf, hf);
    io.download(gb, hb);
    io.download(gl, hl);
    // Nothing is written to a download's destination before finish().
    EXPECT_TRUE(std::isnan(hf.data<float>()[0])) << n;
    EXPECT_EQ(hl.data<int64_t>()[2], -1) << n;
    io.finish();
    EXPECT_EQ(std::memcmp(hf.raw_data(), f0.raw_data(), f0.nbytes()), 0) << n;
    EXPECT_EQ(std::memcmp(hb.raw_data(), b0.raw_data(), b0.nbytes()), 0) << n;
    EXPECT_EQ(std::memcmp(hl.raw_data(), l0.raw_data(), l0.nbytes()), 0) << n;
  }
  // A mismatched pair is refused before anything is queued.
  Tensor wrong = Tensor::empty({5});
  Tensor dev = poisoned({6});
  EXPECT_THROW(io.upload(wrong, dev), InternalError);
  io.finish();
  cuda_destroy_stream(0, s);
}

// A page-locked source (the data client's received crops, at an offset in their message) is read in
// place by DMA, and the transfers keep it alive until finish(), so a batch dropped right after its upload
// still arrives whole; an ordinary source is staged as before.
TEST_F(CudaLayers, PinnedTransfersReadAPageLockedSourceInPlace) {
  CudaPinnedTransfers io(0);
  CudaStream s = cuda_create_stream(0);
  const int64_t n = 300001;
  Tensor dev = poisoned({n}, DType::kU8), dev2 = poisoned({n}, DType::kU8);
  Tensor expected = Tensor::empty({n}, DType::kU8);
  {
    Tensor src = Tensor::over(allocate_host(static_cast<size_t>(n) + 40, true), 40, {n}, DType::kU8);
    ASSERT_TRUE(src.page_locked());
    for (int64_t i = 0; i < n; ++i) src.data<uint8_t>()[i] = static_cast<uint8_t>(i * 13 + 5);
    std::memcpy(expected.raw_data(), src.raw_data(), src.nbytes());
    io.upload(src, dev, s);
  }
  EXPECT_EQ(io.direct_uploads(), 1u);
  Tensor plain = expected.clone();
  io.upload(plain, dev2, s);
  EXPECT_EQ(io.direct_uploads(), 1u);
  io.finish();
  EXPECT_EQ(std::memcmp(dev.clone(Device::cpu()).raw_data(), expected.raw_data(), expected.nbytes()), 0);
  EXPECT_EQ(std::memcmp(dev2.clone(Device::cpu()).raw_data(), expected.raw_data(), expected.nbytes()), 0);
  cuda_destroy_stream(0, s);
}

TEST_F(CudaLayers, SoftmaxNanLogitsGiveANanLossNotALabelError) {
  // Divergence: a NaN logit makes the mean loss NaN (as on the CPU, where the worker reports it as such).
  Tensor z = host({5, 4});
  z.data<float>()[3 * 4 + 2] = std::numeric_limits<float>::quiet_NaN();
  Tensor labels = Tensor::from_vector<int64_t>({5}, {0, 1, 2, 3, 0});
  Tensor probs = Tensor::empty({5, 4});
  EXPECT_TRUE(std::isnan(softmax_xent_forward_cpu(z, labels, probs)));
  Tensor gprobs = poisoned({5, 4}), rows = poisoned({5}, DType::kF64);
  EXPECT_TRUE(std::isnan(softmax_xent_forward_cuda(gpu(z), gpu(labels), gprobs, rows, nullptr)));
}

TEST_F(CudaLayers, SoftmaxRejectsABadLabel) {
  Tensor z = host({3, 4});
  Tensor labels = Tensor::from_vector<int64_t>({3}, {0, 4, 1});
  Tensor gprobs = poisoned({3, 4}), rows = poisoned({3}, DType::kF64);
  try {
    softmax_xent_forward_cuda(gpu(z), gpu(labels), gprobs, rows, nullptr);
    FAIL() << "label 4 of 4 classes accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("row 1"), std::string::npos) << e.what();
  }
}

TEST_F(CudaLayers, PaperSgdUpdate) {
  const Shape s{4097};
  Tensor w = host(s), g = host(s), v = host(s, -0.01, 0.01);
  Tensor gw = gpu(w), gg = gpu(g), gv = gpu(v);
  for (int step = 0; step < 3; ++step) {
    sgd_update_cpu(w, g, v, 0.01, 0.9, 0.0005);
    sgd_update_cuda(gw, gg, gv, 0.01, 0.9, 0.0005, nullptr);
  }
  cuda_sync_check(nullptr, "sgd");
  EXPECT_LE(max_rel(gw, w), 1e-6);
  EXPECT_LE(max_rel(gv, v), 1e-5);
}

// The one-launch SGD over an arena against sgd_update_cuda tensor by tensor: weight decay exactly inside
// the ranges, none between them (biases) or in the padding, whose zeros stay zero.
TEST_F(CudaLayers, ArenaSgdIsThePerTensorUpdate) {
  const int64_t n = 5000;
  Tensor w = host({n}), g = host({n}), v = host({n}, -0.01, 0.01);
  for (int64_t i = 4000; i < n; ++i) w.data<float>()[i] = g.data<float>()[i] = v.data<float>()[i] = 0.0f;  // padding
  Tensor aw = gpu(w), ag = gpu(g), av = gpu(v), tw = gpu(w), tg = gpu(g), tv = gpu(v);
  SgdDecayRanges decay;
  decay.count = 2;
  decay.begin[0] = 0, decay.end[0] = 1500, decay.begin[1] = 2000, decay.end[1] = 3900;
  const std::vector<std::tuple<int64_t, int64_t, bool>> tensors = {
      {0, 1500, true}, {1500, 2000, false}, {2000, 3900, true}, {3900, 4000, false}};
  for (int step = 0; step < 3; ++step) {
    sgd_update_arena_cuda(aw, ag, av, decay, 0.01, 0.9, 0.0005, nullptr);
    for (const auto& [lo, hi, decays] : tensors) {
      Tensor ws = tw.slice0(lo, hi), gs = tg.slice0(lo, hi), vs = tv.slice0(lo, hi);
      sgd_update_cuda(ws, gs, vs, 0.01, 0.9, decays ? 0.0005 : 0.0, nullptr);
    }
  }
  cuda_sync_check(nullptr, "arena sgd");
  EXPECT_LE(max_rel(aw, tw), 1e-6);
  EXPECT_LE(max_rel(av, tv), 1e-6);
  const Tensor pad = aw.clone(Device::cpu()).slice0(4000, n);
  for (int64_t i = 0; i < pad.numel(); ++i) ASSERT_EQ(pad.data<float>()[i], 0.0f) << "padding element " << i;
  SgdDecayRanges bad;
  bad.count = 1;
  bad.begin[0] = 10, bad.end[0] = n + 1;
  EXPECT_THROW(sgd_update_arena_cuda(aw, ag, av, bad, 0.01, 0.9, 0.0005, nullptr), InternalError);
}

// conv1 (11/4/0), conv2 (5/1/2, groups 2), conv3 (3/1/1), conv4/5 (3/1/1, groups 2), small batches.
const ConvCase kConvCases[] = {{{2, 3, 67, 67}, {16, 3, 11, 11}, {4, 0, 1}},
                               {{2, 8, 13, 13}, {12, 4, 5, 5}, {1, 2, 2}},
                               {{3, 10, 7, 7}, {6, 10, 3, 3}, {1, 1, 1}},
                               {{2, 12, 6, 6}, {8, 6, 3, 3}, {1, 1, 2}}};

TEST_F(CudaLayers, ConvolutionsOfTheNetwork) {
  const testing::PrecisionScope scope(Precision::kFloat32);
  for (const ConvCase& c : kConvCases) check_conv(c, 1e-5, "float32");
  // parallel.deterministic false: cuDNN's fastest algorithms (atomics reorder some sums).
  const testing::DeterministicScope fastest(false);
  for (const ConvCase& c : kConvCases) check_conv(c, 1e-5, "float32, fastest algorithms");
}

TEST_F(CudaLayers, FullyConnected) {
  const testing::PrecisionScope scope(Precision::kFloat32);
  for (bool relu : {false, true}) check_fc(relu, 1e-5, "float32");
}

// The same cases in TF32 and bf16 (grouped convolutions included): within the rounding of the operands
// (10 and 7 explicit mantissa bits; bf16 also rounds the convolution outputs), measured against the
// largest value of each result. The bf16 operand arena, the widening kernels and the bf16 bias path run
// here.
TEST_F(CudaLayers, ConvolutionsAndFcInTf32AndBf16) {
  for (const auto& [precision, tol] : {std::pair{Precision::kTf32, 5e-3}, std::pair{Precision::kBf16, 3e-2}}) {
    const testing::PrecisionScope scope(precision);
    for (const ConvCase& c : kConvCases) check_conv(c, tol, enum_name(precision));
    check_fc(true, tol, enum_name(precision));
  }
}

// bf16 with the operands in each layout on its own (the default times both and keeps the faster): the
// transposing conversions, the NHWC bias epilogue and the widening of NHWC gradients run here. With
// channel counts per group that are multiples of 8 (ungrouped, and grouped as conv2, conv4 and conv5
// are), cuDNN must offer algorithms in the forced layout for both passes, and the plans must say so.
TEST_F(CudaLayers, Bf16ConvolutionsInEachLayout) {
  const testing::PrecisionScope scope(Precision::kBf16);
  const ConvCase wide[] = {{{4, 16, 13, 13}, {32, 16, 3, 3}, {1, 1, 1}}, {{2, 32, 13, 13}, {32, 16, 5, 5}, {1, 2, 2}}};
  for (Bf16ConvLayout layout : {Bf16ConvLayout::kNchw, Bf16ConvLayout::kNhwc}) {
    const testing::Bf16LayoutScope use(layout);
    const bool nhwc = layout == Bf16ConvLayout::kNhwc;
    const std::string mode = nhwc ? "bf16 NHWC" : "bf16 NCHW";
    for (const ConvCase& c : kConvCases) check_conv(c, 3e-2, mode);
    for (const ConvCase& c : wide) {
      check_conv(c, 3e-2, mode);
      const ConvPlanReport report = cuda_conv_plan_report();
      const ConvPlanInfo* plan = nullptr;
      for (const ConvPlanInfo& p : report.plans)
        if (p.x == c.x && p.w == c.w && p.precision == Precision::kBf16 && p.layouts == layout) plan = &p;
      ASSERT_NE(plan, nullptr) << mode << ": no bf16 plan for " << shape_str(c.x) << " * " << shape_str(c.w);
      EXPECT_FALSE(plan->unsupported) << plan->text;
      EXPECT_EQ(plan->passes, 2) << plan->text;
      EXPECT_EQ(plan->nhwc_passes, nhwc ? 2 : 0) << plan->text;
      std::printf("%s\n", plan->text.c_str());
    }
  }
}

TEST_F(CudaLayers, BatchNormTrainingAndEval) {
  for (const Shape& s : {Shape{4, 6, 5, 7}, Shape{9, 11}}) {
    const int64_t C = s[1];
    const BatchNormParams p;
    Tensor x = host(s, -2, 3), g = host({C}, 0.5, 1.5), be = host({C}), dy = host(s);
    Tensor rm = host({C}), rv = host({C}, 0.5, 2);
    Tensor y = Tensor::empty(s), sm = Tensor::empty({C}), si = Tensor::empty({C}), dx = Tensor::empty(s),
           dg = Tensor::empty({C}), db = Tensor::empty({C}), ye = Tensor::empty(s);
    Tensor grm = gpu(rm), grv = gpu(rv);
    batchnorm_forward_cpu(x, g, be, rm, rv, true, y, sm, si, p);
    batchnorm_backward_cpu(x, g, sm, si, dy, dx, dg, db);
    batchnorm_forward_cpu(x, g, be, rm, rv, false, ye, sm, si, p);
    Tensor gx = gpu(x), gg = gpu(g), gbe = gpu(be), gy = poisoned(s), gsm = poisoned({C}), gsi = poisoned({C}),
           gdx = poisoned(s), gdg = poisoned({C}), gdb = poisoned({C}), gye = poisoned(s),
           ws = poisoned({2 * C}, DType::kF64);
    batchnorm_forward_cuda(gx, gg, gbe, grm, grv, true, gy, gsm, gsi, p, ws, nullptr);
    batchnorm_backward_cuda(gx, gg, gsm, gsi, gpu(dy), gdx, gdg, gdb, nullptr);
    batchnorm_forward_cuda(gx, gg, gbe, grm, grv, false, gye, gsm, gsi, p, ws, nullptr);
    cuda_sync_check(nullptr, "batchnorm");
    const std::string what = "batchnorm " + shape_str(s);
    EXPECT_LE(max_rel(gy, y), 1e-5) << what;
    EXPECT_LE(max_rel(grm, rm), 1e-6) << what;
    EXPECT_LE(max_rel(grv, rv), 1e-6) << what;
    EXPECT_LE(max_rel(gdx, dx), 1e-5) << what;
    EXPECT_LE(max_rel(gdg, dg), 1e-5) << what;
    EXPECT_LE(max_rel(gdb, db), 1e-5) << what;
    EXPECT_LE(max_rel(gye, ye), 1e-5) << what;
  }
}

// The input step on the device is normalize_crop bit for bit: mean image (mirrored with the crop) and
// channel means, random placements, flips and lighting.
TEST_F(CudaLayers, NormalizeCropsAreTheCpus) {
  const int64_t n = 5, crop = 31, side = 40;
  std::vector<uint8_t> pixels(static_cast<size_t>(n * 3 * crop * crop));
  const CounterRng pix(make_key(seed_, RngPurpose::kLighting), 1);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(pix.bits(i) & 0xff);
  Tensor crops = Tensor::from_vector<uint8_t>({n, 3, crop, crop}, pixels);
  ImageStats stats;
  stats.side = static_cast<int>(side);
  Tensor mimg = host({3, side, side}, 0, 255);
  stats.mean_image.assign(mimg.data<float>(), mimg.data<float>() + mimg.numel());
  stats.channel_mean = {123.675, 116.28, 103.53};
  const testing::RandomCrops rc = testing::random_crops(seed_, n, crop, side);
  const std::vector<SampleAugment>& aug = rc.aug;
  Tensor dplace = gpu(Tensor::from_vector<int32_t>({n, 3}, rc.place));
  Tensor dlight = gpu(Tensor::from_vector<float>({n, 3}, rc.light));
  std::vector<float> cmean{static_cast<float>(stats.channel_mean[0]), static_cast<float>(stats.channel_mean[1]),
                           static_cast<float>(stats.channel_mean[2])};
  for (const bool use_image : {true, false}) {
    Tensor expect = Tensor::empty({n, 3, crop, crop}, DType::kF32);
    for (int64_t i = 0; i < n; ++i)
      normalize_crop(crops.data<uint8_t>() + i * 3 * crop * crop, static_cast<int>(crop), aug[i], stats, use_image,
                     expect.data<float>() + i * 3 * crop * crop);
    Tensor out = poisoned({n, 3, crop, crop});
    Tensor mean = use_image ? gpu(mimg) : gpu(Tensor::from_vector<float>({3}, cmean));
    normalize_crops_cuda(gpu(crops), dplace, dlight, mean, out, nullptr);
    cuda_sync_check(nullptr, "normalize_crops");
    Tensor got = out.clone(Device::cpu());
    EXPECT_EQ(std::memcmp(got.data<float>(), expect.data<float>(), expect.nbytes()), 0)
        << (use_image ? "mean image" : "channel means") << ": max rel diff " << max_rel(out, expect);
  }
}

}  // namespace
}  // namespace alexnet
