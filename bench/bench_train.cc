// Training throughput of the full 1000-class two-tower AlexNet (forward, backward, paper SGD step;
// dropout on) on the CPU backend or on GPUs (--device cuda). Prints parseable lines: "ours_step_s X",
// "ours_img_per_s X", "ours_gflops X"; on the CPU this machine's measured SGEMM rate beside them
// ("sgemm_gflops X", "fraction_of_sgemm X"); on a GPU "ours_gpu_tail_s X", what a timed step allocates
// and how often it makes the host wait ("steady_allocations_per_step X", "steady_host_waits_per_step X"),
// the convolution plans
// ("conv_plan ...", "bf16_nhwc_passes K", "bf16_passes N"), the card's peak ("peak_tflops X",
// "fraction_of_peak X"), whether the steps were CUDA graph launches ("cuda_graphs on|off", with
// --set parallel.cuda_graphs=true "cuda_graph_replays N" or "cuda_graph_refused WHY") and, unless --no-crops, the worker's uint8-crops input path
// ("ours_crops_img_per_s X", or "ours_crops_error ..." without losing the lines before it).
#include <cblas.h>
#include <oneapi/dnnl/dnnl.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "core/cli.h"
#include "core/rng.h"
#include "core/threads.h"
#include "core/device.h"
#include "model/alexnet.h"
#if ALEXNET_WITH_CUDA
#include "model/cuda/layers_cuda.h"
#endif

extern "C" void openblas_set_num_threads(int threads);  // OpenBLAS keeps its own thread pool

namespace {

// GFLOP of one training image by the usual convention: three times the forward pass (forward, data
// gradient, weight gradient), 2 FLOP per multiply-add: 4.35 for the paper's network.
double train_gflop_per_image(const alexnet::ModelConfig& m) {
  const alexnet::NetShapes s = alexnet::alexnet_shapes(m);
  auto conv = [](double out_c, double in_c, double k, double side) { return out_c * in_c * k * k * side * side; };
  const double macs = conv(96, 3, 11, s.conv1) + conv(256, 48, 5, s.pool1) + conv(384, 256, 3, s.pool2) + conv(384, 192, 3, s.pool2) +
                      conv(256, 192, 3, s.pool2) + 4096.0 * s.fc6_in + 4096.0 * 4096 + 4096.0 * m.num_classes;
  return 3 * 2 * macs / 1e9;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// The better of OpenBLAS and oneDNN on a large square SGEMM, GFLOP/s (median of 5).
double sgemm_gflops() {
  const int n = 2048;
  std::vector<float> a(size_t(n) * n, 0.5f), b(size_t(n) * n, 0.25f), c(size_t(n) * n);
  double best = 0;
  for (int lib = 0; lib < 2; ++lib) {
    std::vector<double> rates;
    for (int rep = 0; rep < 6; ++rep) {
      auto t0 = std::chrono::steady_clock::now();
      if (lib == 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f,
                    c.data(), n);
      else
        dnnl_sgemm('N', 'N', n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
      if (rep > 0) rates.push_back(2.0 * n * n * n / seconds_since(t0) / 1e9);
    }
    const double r = median(rates);
    std::printf("sgemm_%s_gflops %.1f\n", lib == 0 ? "openblas" : "onednn", r);
    best = std::max(best, r);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace alexnet;
  try {
    ArgParser args("bench_train", "[--batch 64] [--threads 2] [--iters 5] [--no-sgemm] [--no-crops] [--device cpu|cuda] [--gpus 1|2] [--bf16-layout fastest|nchw|nhwc]");
    args.config_options();
    args.option("--batch", "images per step (default 64)");
    args.option("--threads", "CPU threads (default 2)");
    args.option("--iters", "timed steps (default 5, after one warm-up step on the CPU, three on a GPU)");
    args.flag("--no-sgemm", "skip the SGEMM measurement");
    args.flag("--no-crops", "with --device cuda: skip the timing of the uint8-crops input path");
    args.option("--device", "cpu (default) or cuda: where the towers run (parallel.precision applies on cuda)");
    args.option("--gpus", "with --device cuda: 1 puts both towers on GPU 0, 2 one tower per GPU (default 1)");
    args.option("--bf16-layout", "with parallel.precision bf16: the convolution operands' layout, fastest (default: "
                                 "cuDNN's timing picks NCHW or NHWC per pass), nchw or nhwc");
    if (!args.parse(argc, argv)) return 0;
    Config cfg = args.load_config();
    const int64_t batch = args.get_int_or("--batch", 64);
    const int threads = set_cpu_threads(static_cast<int>(args.get_int_or("--threads", 2)));
    openblas_set_num_threads(threads);
    const int iters = static_cast<int>(args.get_int_or("--iters", 5));
    ALEXNET_CHECK(iters >= 1, "--iters ", iters, ": at least one timed step");
    const int64_t s = cfg.model.input_size;
    std::printf("config: %d classes, norm %s, batch %ld, threads %d\n", cfg.model.num_classes,
                enum_name(cfg.model.norm), static_cast<long>(batch), threads);

    const std::string device = args.get_or("--device", "cpu");
    ALEXNET_CHECK(device == "cpu" || device == "cuda", "--device ", device, ": expected cpu or cuda");
    const bool cuda = device == "cuda";
    std::array<Device, kTowers> devices{Device::cpu(), Device::cpu()};
    if (cuda) {
      ALEXNET_CHECK(cuda_device_count() > 0, "--device cuda: ", device_summary());
      const bool two = args.get_int_or("--gpus", 1) == 2;
      ALEXNET_CHECK(!two || cuda_device_count() >= 2, "--gpus 2 needs two visible GPUs");
      devices = {Device::cuda(0), Device::cuda(two ? 1 : 0)};
#if ALEXNET_WITH_CUDA
      set_cuda_precision(cfg.parallel.precision);
      set_cuda_deterministic(cfg.parallel.deterministic);
      const std::string layout = args.get_or("--bf16-layout", "fastest");
      ALEXNET_CHECK(layout == "fastest" || layout == "nchw" || layout == "nhwc", "--bf16-layout ", layout,
                    ": expected fastest, nchw or nhwc");
      set_cuda_bf16_conv_layout(layout == "nchw"   ? Bf16ConvLayout::kNchw
                                : layout == "nhwc" ? Bf16ConvLayout::kNhwc
                                                   : Bf16ConvLayout::kFastest);
#endif
      std::printf("device: towers on %s and %s, precision %s, %s convolution algorithms\n", devices[0].str().c_str(),
                  devices[1].str().c_str(), enum_name(cfg.parallel.precision),
                  cfg.parallel.deterministic ? "deterministic" : "fastest");
    }
    auto sync = [&] {
#if ALEXNET_WITH_CUDA
      if (cuda) {
        cuda_sync_device(devices[0].index, "bench_train");
        cuda_sync_device(devices[1].index, "bench_train");
      }
#endif
    };
    AlexNet net(cfg.model, devices);
    net.init_paper(1);
    net.set_cuda_graphs(cfg.parallel.cuda_graphs);  // --set parallel.cuda_graphs=true
    Tensor x = Tensor::empty({batch, 3, s, s});
    const CounterRng rng(make_key(1, RngPurpose::kSynth), 0);
    for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = static_cast<float>(rng.normal(i));
    std::vector<int64_t> l(batch);
    for (int64_t i = 0; i < batch; ++i) l[i] = i % cfg.model.num_classes;
    Tensor y = Tensor::from_vector<int64_t>({batch}, l);

    // On a GPU the batch stays on GPU 0, as a framework benchmark keeps its tensors on the device (tower
    // 0 reads it in place; tower 1 copies it on the device or over the peer link).
    if (cuda) x = x.clone(devices[0]);
    // Median seconds of `iters` steps after the warm-up steps: one on the CPU; three on a GPU, where the
    // first searches cuDNN's algorithms and grows the workspaces, and a bf16 convolution that cuDNN
    // refuses only in backward searches its TF32 fallback's forward in the second.
    const int warmup = cuda ? 3 : 1;
    // Also the GPU's tail: how long after the host has queued the whole step (pass and SGD) the GPU
    // finishes it. Near 0, the GPU waits for the host's launches (what a CUDA graph would remove).
    double tail = 0;
    // And what the timed steps themselves (not the synchronisation after each) allocated and how often the
    // host waited for the GPU in them (cuda_activity, core/device.h).
    CudaActivity steady;
    auto time_steps = [&](const std::function<void(const PassOptions&)>& pass) {
      std::vector<double> times, tails;
      steady = CudaActivity();
      for (int it = 0; it < warmup + iters; ++it) {
        PassOptions opt;
        opt.step = static_cast<uint64_t>(it);
        const CudaActivity a0 = cuda_activity();
        auto t0 = std::chrono::steady_clock::now();
        pass(opt);
        net.sgd_step(0.01, 0.9, 0.0005);
        const double queued = seconds_since(t0);
        const CudaActivity a1 = cuda_activity();
        sync();
        if (it >= warmup) {
          times.push_back(seconds_since(t0));
          tails.push_back(times.back() - queued);
          steady += a1 - a0;
        }
      }
      tail = median(tails);
      return median(times);
    };
    const double sec = time_steps([&](const PassOptions& opt) { net.train_pass(x, y, opt); });
    if (cuda)
      std::printf("ours_gpu_tail_s %.6f\nsteady_allocations_per_step %.2f\nsteady_host_waits_per_step %.2f\n", tail,
                  static_cast<double>(steady.device_allocations + steady.host_allocations) / iters,
                  static_cast<double>(steady.host_waits) / iters);
    const double ips = batch / sec;
    const double gflop = train_gflop_per_image(cfg.model);
    std::printf("ours_step_s %.6f\nours_img_per_s %.2f\ngflop_per_image %.3f\nours_gflops %.1f\n", sec, ips,
                gflop, ips * gflop);
    if (cuda) {
      // Whether the timed steps were graph launches: the pass is captured during the warm-up.
      const AlexNet::GraphStatus g = net.graph_status();
      std::printf("cuda_graphs %s\n", g.enabled ? "on" : "off");
      if (g.enabled && !g.refused.empty()) std::printf("cuda_graph_refused %s\n", g.refused.c_str());
      if (g.enabled && g.refused.empty())
        std::printf("cuda_graph_captures %lld\ncuda_graph_replays %lld\ncuda_graph_nodes %zu\n",
                    static_cast<long long>(g.captures), static_cast<long long>(g.replays), g.nodes);
    }
    std::fflush(stdout);  // a later error or a kill by a timeout leaves these lines in the log
#if ALEXNET_WITH_CUDA
    if (cuda) {
      // What each convolution runs: layout, algorithm and cuDNN's time per pass.
      const ConvPlanReport report = cuda_conv_plan_report();
      for (const ConvPlanInfo& plan : report.plans) std::printf("conv_plan %s\n", plan.text.c_str());
      std::printf("bf16_nhwc_passes %d\nbf16_passes %d\n", report.bf16_nhwc_passes, report.bf16_passes);
      // The card's peak for this precision (an upper bound: core/device.h), and our share of it.
      // With --gpus 2 the two towers' GPUs together (the same model of card).
      const CudaDevicePeak peak = cuda_device_peak(devices[0].index);
      const int gpus = devices[0] == devices[1] ? 1 : 2;
      const double peak_tflops = gpus * (cfg.parallel.precision == Precision::kBf16   ? peak.bf16_tflops
                                         : cfg.parallel.precision == Precision::kTf32 ? peak.tf32_tflops
                                                                                      : peak.fp32_tflops);
      std::printf("gpu %d x %s, %d SMs at %.2f GHz\npeak_tflops %.1f\n", gpus, peak.name.c_str(), peak.sms,
                  peak.clock_ghz, peak_tflops);
      if (peak_tflops > 0) std::printf("fraction_of_peak %.3f\n", ips * gflop / 1000 / peak_tflops);
      std::fflush(stdout);
    }
#endif
    if (cuda && !args.has("--no-crops")) {
      // Its own error line: the figures above stay valid whatever happens here.
      try {
        // The worker's own path: uint8 crops from the host each step, normalised on the towers' devices
        // (AlexNet::CropBatch; channel means and lighting, as the data service sends them).
        CropBatch b;
        b.crops = Tensor::empty({batch, 3, s, s}, DType::kU8);
        for (int64_t i = 0; i < b.crops.numel(); ++i) b.crops.data<uint8_t>()[i] = static_cast<uint8_t>(rng.bits(i) & 0xff);
        b.placement = Tensor::zeros({batch, 3}, DType::kI32);
        b.lighting = Tensor::zeros({batch, 3}, DType::kF32);
        net.set_input_mean(Tensor::from_vector<float>({3}, {123.68f, 116.78f, 103.94f}));
        const double crops_sec = time_steps([&](const PassOptions& opt) { net.train_pass(b, y, opt); });
        std::printf("ours_crops_step_s %.6f\nours_crops_img_per_s %.2f\n", crops_sec, batch / crops_sec);
      } catch (const std::exception& e) {
        std::printf("ours_crops_error %s\n", e.what());
        std::fprintf(stderr, "bench_train: the uint8-crops pass failed: %s\n", e.what());
      }
      std::fflush(stdout);
    }
    if (!args.has("--no-sgemm") && !cuda) {
      const double peak = sgemm_gflops();
      std::printf("sgemm_gflops %.1f\nfraction_of_sgemm %.3f\n", peak, ips * gflop / peak);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_train: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
