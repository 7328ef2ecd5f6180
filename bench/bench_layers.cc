// Per-layer CPU timings of conv, linear and max-pool at the network's batch-64 shapes: median of 5
// runs of forward and backward, GFLOP/s, and ratios against PyTorch timed in the same run.
// Usage: bench_layers [--threads N] [--reps R] [--torch "CMD"]   (CMD prints "name fwd_ms bwd_ms").
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "core/threads.h"
#include "model/layers.h"

namespace {

using namespace alexnet;

double median_ms(int reps, const std::function<void()>& fn) {
  fn();  // warm-up: primitive creation, page faults
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    auto a = std::chrono::steady_clock::now();
    fn();
    auto b = std::chrono::steady_clock::now();
    t.push_back(std::chrono::duration<double, std::milli>(b - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

Tensor random_f32(const Shape& shape, uint64_t seed, double scale) {
  Tensor t = Tensor::empty(shape, DType::kF32);
  CounterRng rng(make_key(seed, RngPurpose::kTest), 0);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i)
    p[i] = static_cast<float>(scale * (2 * rng.uniform(static_cast<uint64_t>(i)) - 1));
  return t;
}

struct Row {
  std::string name;
  double fwd_ms, bwd_ms, fwd_gflop, bwd_gflop;
};

Row bench_conv(const std::string& name, Shape xs, Shape ws, ConvParams p, bool need_dx, int reps) {
  const int64_t ho = conv_out_size(xs[2], ws[2], p.stride, p.pad);
  const int64_t wo = conv_out_size(xs[3], ws[3], p.stride, p.pad);
  Shape ys{xs[0], ws[0], ho, wo};
  Tensor x = random_f32(xs, 1, 1), w = random_f32(ws, 2, 0.01), b = random_f32({ws[0]}, 3, 0.1);
  Tensor y = Tensor::empty(ys), dy = random_f32(ys, 4, 1);
  Tensor dx = Tensor::empty(xs), dw = Tensor::empty(ws), db = Tensor::empty({ws[0]});
  const double flop = 2.0 * ys[0] * ys[1] * ho * wo * ws[1] * ws[2] * ws[3];
  Row r{name, 0, 0, flop * 1e-9, flop * (need_dx ? 2 : 1) * 1e-9};
  r.fwd_ms = median_ms(reps, [&] { conv2d_forward_cpu(x, w, b, y, p, true); });
  r.bwd_ms = median_ms(reps, [&] { conv2d_backward_cpu(x, w, dy, need_dx ? &dx : nullptr, dw, db, p); });
  return r;
}

Row bench_linear(const std::string& name, int64_t n, int64_t in, int64_t out, int reps) {
  Tensor x = random_f32({n, in}, 1, 1), w = random_f32({out, in}, 2, 0.01), b = random_f32({out}, 3, 0.1);
  Tensor y = Tensor::empty({n, out}), dy = random_f32({n, out}, 4, 1);
  Tensor dx = Tensor::empty({n, in}), dw = Tensor::empty({out, in}), db = Tensor::empty({out});
  const double flop = 2.0 * n * in * out;
  Row r{name, 0, 0, flop * 1e-9, 2 * flop * 1e-9};
  r.fwd_ms = median_ms(reps, [&] { linear_forward_cpu(x, w, b, y, true); });
  r.bwd_ms = median_ms(reps, [&] { linear_backward_cpu(x, w, dy, &dx, dw, db); });
  return r;
}

Row bench_pool(const std::string& name, Shape xs, int reps) {
  const PoolParams p{3, 2};
  Shape ys{xs[0], xs[1], (xs[2] - 3) / 2 + 1, (xs[3] - 3) / 2 + 1};
  Tensor x = random_f32(xs, 1, 1), y = Tensor::empty(ys), dy = random_f32(ys, 2, 1);
  Tensor arg = Tensor::empty(ys, DType::kI32), dx = Tensor::empty(xs);
  Row r{name, 0, 0, 0, 0};
  r.fwd_ms = median_ms(reps, [&] { maxpool_forward_cpu(x, y, arg, p); });
  r.bwd_ms = median_ms(reps, [&] { maxpool_backward_cpu(dy, arg, dx); });
  return r;
}

std::map<std::string, std::pair<double, double>> run_torch(const std::string& cmd) {
  std::map<std::string, std::pair<double, double>> out;
  FILE* f = popen(cmd.c_str(), "r");
  if (f == nullptr) return out;
  char name[128];
  double a, b;
  char line[512];
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::sscanf(line, "%127s %lf %lf", name, &a, &b) == 3) out[name] = {a, b};
  }
  pclose(f);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, reps = 5;
  std::string torch_cmd;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) reps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--torch") && i + 1 < argc) torch_cmd = argv[++i];
    else {
      std::fprintf(stderr, "usage: %s [--threads N] [--reps R] [--torch \"CMD\"]\n", argv[0]);
      return 2;
    }
  }
  set_cpu_threads(threads);
  const int64_t n = 64;
  std::vector<Row> rows;
  // Per tower, as the two-tower graph runs them; conv1 needs no input gradient.
  rows.push_back(bench_conv("conv1", {n, 3, 227, 227}, {48, 3, 11, 11}, {4, 0, 1}, false, reps));
  rows.push_back(bench_conv("conv2", {n, 48, 27, 27}, {128, 48, 5, 5}, {1, 2, 1}, true, reps));
  rows.push_back(bench_conv("conv3", {n, 256, 13, 13}, {192, 256, 3, 3}, {1, 1, 1}, true, reps));
  rows.push_back(bench_conv("conv4", {n, 192, 13, 13}, {192, 192, 3, 3}, {1, 1, 1}, true, reps));
  rows.push_back(bench_conv("conv5", {n, 192, 13, 13}, {128, 192, 3, 3}, {1, 1, 1}, true, reps));
  // Both towers in one call (merged conv1, grouped conv2).
  rows.push_back(bench_conv("conv1_merged", {n, 3, 227, 227}, {96, 3, 11, 11}, {4, 0, 1}, false, reps));
  rows.push_back(bench_conv("conv2_g2", {n, 96, 27, 27}, {256, 48, 5, 5}, {1, 2, 2}, true, reps));
  rows.push_back(bench_linear("fc6", n, 9216, 2048, reps));
  rows.push_back(bench_linear("fc7", n, 4096, 2048, reps));
  rows.push_back(bench_linear("fc8", n, 4096, 500, reps));
  rows.push_back(bench_pool("pool1", {n, 48, 55, 55}, reps));
  rows.push_back(bench_pool("pool2", {n, 128, 27, 27}, reps));
  rows.push_back(bench_pool("pool5", {n, 128, 13, 13}, reps));

  std::map<std::string, std::pair<double, double>> torch;
  if (!torch_cmd.empty()) torch = run_torch(torch_cmd);

  std::printf("threads %d, batch %lld, median of %d\n", threads, static_cast<long long>(n), reps);
  std::printf("%-13s %9s %9s %8s %8s %9s %9s %7s %7s\n", "layer", "fwd_ms", "bwd_ms", "fwd_GF/s",
              "bwd_GF/s", "torch_fwd", "torch_bwd", "x_fwd", "x_bwd");
  for (const Row& r : rows) {
    std::printf("%-13s %9.2f %9.2f", r.name.c_str(), r.fwd_ms, r.bwd_ms);
    if (r.fwd_gflop > 0) {
      std::printf(" %8.1f %8.1f", r.fwd_gflop / r.fwd_ms * 1e3, r.bwd_gflop / r.bwd_ms * 1e3);
    } else {
      std::printf(" %8s %8s", "-", "-");
    }
    auto it = torch.find(r.name);
    if (it != torch.end()) {
      // Ratio > 1: we are faster than PyTorch.
      std::printf(" %9.2f %9.2f %7.2f %7.2f", it->second.first, it->second.second,
                  it->second.first / r.fwd_ms, it->second.second / r.bwd_ms);
    }
    std::printf("\n");
  }
  return 0;
}
