// Gradient averaging with and without bucketing/overlap, on AlexNet's real gradient sizes (both towers,
// one communicator per tower), under a simulated backward pass: a busy loop per layer proportional to
// that layer's backward FLOPs, calibrated to a measured single-rank CPU step time.
// Usage: mpirun -np R bench_allreduce [--steps N] [--step_s S] [--compute_scale F] [--bucket_mb M] [--poll_ms P]
#include <mpi.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/grad_buckets.h"
#include "comm/mpi_process.h"
#include "core/config.h"
#include "core/error.h"
#include "model/alexnet.h"

namespace alexnet {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct Options {
  int steps = 5;              // measured steps per mode (after one warm-up step)
  double step_s = 1.3;        // single-rank CPU step at batch 64 (bench_train: 49.3 img/s)
  double backward_share = 2.0 / 3.0;  // backward ~ 2x forward FLOPs
  double compute_scale = 1.0; // < 1: a scaled-down compute (the gradient sizes stay real)
  double bucket_mb = 25;
  double poll_ms = 0;         // > 0: also poll the reductions this often during compute
};

// One table entry of one tower: its gradient and the simulated backward seconds that produce it.
struct Entry {
  size_t tensor = 0;  // index in the tower's GradTensor list (same for both towers)
  double compute_s = 0;
};

// Spins for `s` seconds (the stand-in for backward compute), polling the buckets every poll_s if > 0.
void busy(double s, double poll_s, std::vector<GradBuckets*>& gbs) {
  const Clock::time_point end = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  Clock::time_point next_poll = Clock::now();
  volatile double sink = 0;
  while (Clock::now() < end) {
    for (int i = 0; i < 256; ++i) sink = sink + 1e-9 * i;
    if (poll_s > 0 && Clock::now() >= next_poll) {
      for (GradBuckets* g : gbs) g->progress();
      next_poll = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(poll_s));
    }
  }
}

struct StepResult {
  double compute_s = 0, exposed_s = 0, in_flight_s = 0, step_s = 0;
};

struct Mode {
  const char* name;
  bool overlap;
  double bucket_mb;  // 0: one call for the whole tower
};

int run(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    ALEXNET_CHECK(i + 1 < argc, "bench_allreduce: ", a, " needs a value");
    const double v = std::stod(argv[++i]);
    if (a == "--steps") o.steps = static_cast<int>(v);
    else if (a == "--step_s") o.step_s = v;
    else if (a == "--compute_scale") o.compute_scale = v;
    else if (a == "--bucket_mb") o.bucket_mb = v;
    else if (a == "--poll_ms") o.poll_ms = v;
    else ALEXNET_FAIL("bench_allreduce: unknown option ", a);
  }
  // One communicator per tower, as the worker has.
  MpiCommunicator comm0(MPI_COMM_WORLD), comm1(MPI_COMM_WORLD);
  const int rank = comm0.rank(), size = comm0.size();

  const ModelConfig cfg = default_config().model;
  const NetShapes ns = alexnet_shapes(cfg);
  const std::vector<ParamInfo> table = alexnet_param_table(cfg);
  // Backward FLOPs per layer ~ weight size x output positions (the weight gradient and the input
  // gradient each cost about one forward; conv1 has no input gradient, ignored here).
  auto positions = [&](const std::string& layer) -> double {
    if (layer == "conv1") return double(ns.conv1 * ns.conv1);
    if (layer == "conv2") return double(ns.pool1 * ns.pool1);
    if (layer.rfind("conv", 0) == 0) return double(ns.pool2 * ns.pool2);
    return 1.0;
  };
  std::array<std::vector<float>, kTowers> arena;
  std::array<std::vector<GradTensor>, kTowers> tensors;
  std::vector<Entry> entries;
  double flops_total = 0;
  for (int t = 0; t < kTowers; ++t) {
    size_t total = 0;
    for (const ParamInfo& p : table)
      if (p.trainable) total += static_cast<size_t>(shape_numel(p.tower_shape(t)));
    arena[t].assign(total, 1.0f);
    size_t off = 0;
    for (const ParamInfo& p : table) {
      if (!p.trainable) continue;
      const size_t n = static_cast<size_t>(shape_numel(p.tower_shape(t)));
      tensors[t].push_back({p.name, arena[t].data() + off, n});
      off += n;
    }
  }
  for (size_t i = 0; i < tensors[0].size(); ++i) {
    const std::string& name = tensors[0][i].name;
    const double f = 2.0 * double(tensors[0][i].count + tensors[1][i].count) * positions(name.substr(0, name.find('/')));
    entries.push_back({i, f});
    flops_total += f;
  }
  const double backward_s = o.step_s * o.backward_share * o.compute_scale;
  const double forward_s = o.step_s * (1 - o.backward_share) * o.compute_scale;
  for (Entry& e : entries) e.compute_s = backward_s * e.compute_s / flops_total;

  size_t floats = arena[0].size() + arena[1].size();
  if (rank == 0) {
    std::printf("bench_allreduce: %d rank(s), %zu gradient floats (%.1f MB) in %zu tensors per tower x 2 towers\n",
                size, floats, floats * 4.0 / 1e6, tensors[0].size());
    std::printf("simulated compute per step: forward %.3f s + backward %.3f s (step_s %.2f x compute_scale %.2f); "
                "poll every %s\n",
                forward_s, backward_s, o.step_s, o.compute_scale,
                o.poll_ms > 0 ? (std::to_string(o.poll_ms) + " ms").c_str() : "mark_ready only");
  }

  // Raw cost: both towers' gradients in one blocking call each, no compute.
  double raw_s = 0;
  for (int rep = 0; rep < 2; ++rep) {
    comm0.barrier();
    const Clock::time_point t0 = Clock::now();
    comm0.allreduce(arena[0].data(), arena[0].size(), ReduceOp::kAverage);
    comm1.allreduce(arena[1].data(), arena[1].size(), ReduceOp::kAverage);
    double s = since(t0);
    MPI_Allreduce(MPI_IN_PLACE, &s, 1, MPI_DOUBLE, MPI_MAX, comm0.comm());
    raw_s = rep == 0 ? s : std::min(raw_s, s);
  }

  const std::vector<Mode> modes = {
      {"one call after backward", false, 0},
      {"buckets after backward", false, o.bucket_mb},
      {"buckets overlapped", true, o.bucket_mb},
  };
  if (rank == 0) {
    std::printf("raw allreduce of all gradients (no compute): %.3f s\n\n", raw_s);
    std::printf("%-26s %7s %9s %9s %10s %6s %10s %7s %9s %6s\n", "mode", "buckets", "compute_s", "exposed_s",
                "inflight_s", "hidden", "hidden_raw", "step_s", "vs_anchor", "saved");
  }
  double anchor_step = 0, anchor_exposed = 0;
  // Below a millisecond there is nothing to hide (one rank: the reductions are no-ops).
  constexpr double kNothing = 1e-3;
  for (const Mode& m : modes) {
    GradBucketOptions go;
    go.overlap = m.overlap;
    go.bucket_bytes = static_cast<size_t>(m.bucket_mb * 1024 * 1024);
    GradBuckets gb0(comm0, tensors[0], go), gb1(comm1, tensors[1], go);
    std::vector<GradBuckets*> gbs = {&gb0, &gb1};
    std::vector<StepResult> results;
    for (int step = 0; step <= o.steps; ++step) {
      comm0.barrier();
      const Clock::time_point t0 = Clock::now();
      busy(forward_s, 0, gbs);
      for (const Entry& e : entries) {
        busy(e.compute_s, o.poll_ms / 1000, gbs);
        gb0.mark_ready(e.tensor);
        gb1.mark_ready(e.tensor);
      }
      const double compute = since(t0);
      gb0.wait_all();
      gb1.wait_all();
      StepResult r;
      r.step_s = since(t0);
      r.compute_s = compute;
      r.exposed_s = gb0.last_timing().exposed_s + gb1.last_timing().exposed_s;
      // Both towers' reductions: the span during which either was in flight.
      r.in_flight_s = std::max(gb0.last_timing().end_s, gb1.last_timing().end_s) -
                      std::min(gb0.last_timing().start_s, gb1.last_timing().start_s);
      // The slowest rank sets the step.
      MPI_Allreduce(MPI_IN_PLACE, &r, 4, MPI_DOUBLE, MPI_MAX, comm0.comm());
      if (step > 0) results.push_back(r);
    }
    auto median = [&](double StepResult::*f) {
      std::vector<double> v;
      for (const StepResult& r : results) v.push_back(r.*f);
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    const double compute = median(&StepResult::compute_s), exposed = median(&StepResult::exposed_s);
    const double in_flight = median(&StepResult::in_flight_s), step = median(&StepResult::step_s);
    if (anchor_step == 0) anchor_step = step, anchor_exposed = exposed;
    // The share of the anchor's exposed communication that this mode takes off the step time (on the
    // CPU the reduction arithmetic runs on the compute cores, so hiding it costs compute time).
    const double saved = anchor_exposed > kNothing ? (anchor_step - step) / anchor_exposed : 0.0;
    const double hidden = in_flight > kNothing ? std::clamp(1 - exposed / in_flight, 0.0, 1.0) : 0.0;
    const double hidden_raw = raw_s > kNothing ? std::clamp(1 - exposed / raw_s, 0.0, 1.0) : 0.0;
    if (rank == 0)
      std::printf("%-26s %7zu %9.3f %9.3f %10.3f %6.2f %10.2f %7.3f %9.3f %6.2f\n", m.name, gb0.buckets().size(),
                  compute, exposed, in_flight, hidden, hidden_raw, step, step / anchor_step, saved);
  }
  if (rank == 0)
    std::printf("\nmedians of %d steps (max over ranks); exposed = time inside wait_all; hidden = 1 - exposed/inflight; "
                "hidden_raw = 1 - exposed/raw; vs_anchor = step time / the first mode's; saved = (anchor step - step) / anchor "
                "exposed\n",
                o.steps);
  return 0;
}

}  // namespace
}  // namespace alexnet

int main(int argc, char** argv) { return alexnet::run_mpi_process("bench_allreduce", argc, argv, alexnet::run); }
