// Communicator and GradBuckets under mpirun (2 and 4 ranks): exact and float64-referenced reductions,
// asynchronous and out-of-order completion, overlap on/off agreement, layout-mismatch detection, and the
// deadline of every wait (parallel.comm_timeout_s) against a stuck rank.
// `test_comm_mpi --kill-rank R` instead loops allreduces until rank R kills itself (comm_kill_rank.sh).
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cfloat>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "comm/grad_buckets.h"
#include "core/error.h"
#include "tests/comm/comm_values.h"
#include "tests/comm/mpi_test_main.h"

namespace alexnet {
namespace {

class CommMpi : public ::testing::Test {
 protected:
  CommMpi() : comm(MPI_COMM_WORLD) {}
  MpiCommunicator comm;
  int rank() const { return comm.rank(); }
  int size() const { return comm.size(); }

  void fill_exact(std::vector<float>& v) {
    for (size_t i = 0; i < v.size(); ++i) v[i] = exact_value(rank(), i);
  }
  float exact_sum(size_t i) const { return alexnet::exact_sum(size(), i); }
  void expect_keyed_average(const float* got, size_t n, uint64_t seed, size_t offset = 0) {
    EXPECT_EQ(alexnet::expect_keyed_average(got, n, seed, size(), offset), 0u) << "on " << comm.describe();
  }
};

TEST_F(CommMpi, ExactSumAndAverage) {
  ASSERT_GE(size(), 2);
  for (size_t n : {size_t{1}, size_t{1000}, size_t{1000003}}) {
    std::vector<float> v(n);
    fill_exact(v);
    comm.allreduce(v.data(), n, ReduceOp::kSum);
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(v[i], exact_sum(i)) << "sum, element " << i;
    fill_exact(v);
    comm.allreduce(v.data(), n, ReduceOp::kAverage);
    // size 2 or 4: dividing by a power of two is exact.
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(v[i], exact_sum(i) / size()) << "average, element " << i;
  }
}

TEST_F(CommMpi, RandomAverageMatchesFloat64) {
  std::vector<float> v(300001);
  for (size_t i = 0; i < v.size(); ++i) v[i] = keyed_value(11, rank(), i);
  comm.allreduce(v.data(), v.size(), ReduceOp::kAverage);
  expect_keyed_average(v.data(), v.size(), 11);
}

TEST_F(CommMpi, AsyncManyInFlight) {
  std::vector<std::vector<float>> bufs(6);
  std::vector<std::unique_ptr<CommRequest>> reqs;
  for (size_t b = 0; b < bufs.size(); ++b) {
    bufs[b].resize(1000 * (b + 1) * (b + 1));
    for (size_t i = 0; i < bufs[b].size(); ++i) bufs[b][i] = keyed_value(20 + b, rank(), i);
    reqs.push_back(comm.allreduce_async(bufs[b].data(), bufs[b].size(), ReduceOp::kAverage));
  }
  // Complete in reverse order, polling the first ones.
  for (size_t b = bufs.size(); b-- > 0;) {
    reqs[0]->test();
    reqs[b]->wait();
    EXPECT_TRUE(reqs[b]->test());
    expect_keyed_average(bufs[b].data(), bufs[b].size(), 20 + b);
  }
}

TEST_F(CommMpi, BroadcastBarrierMetricsAllgather) {
  std::vector<float> v(777);
  for (size_t i = 0; i < v.size(); ++i) v[i] = exact_value(rank(), i);
  const int root = size() - 1;
  comm.broadcast(v.data(), v.size(), root);
  for (size_t i = 0; i < v.size(); ++i) ASSERT_EQ(v[i], exact_value(root, i));
  EXPECT_THROW(comm.broadcast(v.data(), v.size(), size()), Error);
  comm.barrier();
  double m[3] = {1.0 * rank(), 2.5, -1.0};
  comm.allreduce_metrics(m, 3, ReduceOp::kSum);
  EXPECT_EQ(m[0], size() * (size() - 1) / 2.0);
  EXPECT_EQ(m[1], 2.5 * size());
  double a[1] = {static_cast<double>(rank() + 1)};
  comm.allreduce_metrics(a, 1, ReduceOp::kAverage);
  EXPECT_DOUBLE_EQ(a[0], (size() + 1) / 2.0);
  std::vector<uint64_t> all = comm.allgather({static_cast<uint64_t>(rank()), 1ull << 63});
  ASSERT_EQ(all.size(), 2u * size());
  for (int r = 0; r < size(); ++r) {
    EXPECT_EQ(all[2 * r], static_cast<uint64_t>(r));
    EXPECT_EQ(all[2 * r + 1], 1ull << 63);
  }
}

// An AlexNet-like tensor list, in backward order, in one arena (plus optionally tensors outside it).
struct Grads {
  std::vector<float> arena, outside_a, outside_b;
  std::vector<GradTensor> tensors;
  explicit Grads(bool with_outside) {
    const std::vector<size_t>& sizes = grad_sizes();
    arena.resize(std::accumulate(sizes.begin(), sizes.end(), size_t{0}));
    size_t off = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      tensors.push_back({str_cat("layer", i / 2, i % 2 ? "/bias" : "/weight"), arena.data() + off,
                         sizes[i]});
      off += sizes[i];
    }
    if (with_outside) {
      // Separate allocations between arena tensors: their buckets go through the staging copy.
      outside_a.resize(700);
      outside_b.resize(31);
      tensors.insert(tensors.begin() + 3, GradTensor{"outside_a", outside_a.data(), outside_a.size()});
      tensors.insert(tensors.begin() + 9, GradTensor{"outside_b", outside_b.data(), outside_b.size()});
    }
  }
  void fill(uint64_t seed, int rank) {
    size_t off = 0;
    for (GradTensor& t : tensors) {
      for (size_t i = 0; i < t.count; ++i) t.data[i] = keyed_value(seed, rank, off + i);
      off += t.count;
    }
  }
  std::vector<float> flat() const {
    std::vector<float> v;
    for (const GradTensor& t : tensors) v.insert(v.end(), t.data, t.data + t.count);
    return v;
  }
};

TEST_F(CommMpi, BucketsOutOfOrderMatchFloat64) {
  for (bool outside : {false, true}) {
    for (size_t bucket_bytes : {size_t{0}, size_t{40000}, size_t{200000}}) {
      Grads g(outside);
      GradBuckets gb(comm, g.tensors, {.bucket_bytes = bucket_bytes, .overlap = true});
      std::mt19937 rng(1234 + 77 * rank());  // a different completion order on every rank
      for (int step = 0; step < 3; ++step) {
        const uint64_t seed = 100 + step + 10 * bucket_bytes + outside;
        g.fill(seed, rank());
        std::vector<size_t> order(g.tensors.size());
        std::iota(order.begin(), order.end(), size_t{0});
        std::shuffle(order.begin(), order.end(), rng);
        for (size_t i : order) gb.mark_ready(i);
        gb.wait_all();
        const std::vector<float> got = g.flat();
        expect_keyed_average(got.data(), got.size(), seed);
        EXPECT_EQ(gb.last_timing().reductions, static_cast<int>(gb.buckets().size()));
        EXPECT_GE(gb.last_timing().in_flight_s, 0.0);
      }
    }
  }
}

TEST_F(CommMpi, OverlapOffEqualsOverlapOnBitwise) {
  for (bool outside : {false, true}) {
    Grads on(outside), off(outside);
    GradBuckets gb_on(comm, on.tensors, {.bucket_bytes = 60000, .overlap = true});
    GradBuckets gb_off(comm, off.tensors, {.bucket_bytes = 60000, .overlap = false});
    ASSERT_GE(gb_on.buckets().size(), 3u);
    for (int step = 0; step < 2; ++step) {
      on.fill(300 + step, rank());
      off.fill(300 + step, rank());
      for (size_t i = 0; i < on.tensors.size(); ++i) {
        gb_on.mark_ready(i);
        gb_off.mark_ready(on.tensors.size() - 1 - i);
      }
      gb_on.wait_all();
      gb_off.wait_all();
      const std::vector<float> a = on.flat(), b = off.flat();
      ASSERT_EQ(a.size(), b.size());
      EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
      // Without overlap nothing was in flight outside wait_all.
      EXPECT_NEAR(gb_off.last_timing().hidden_fraction(), 0.0, 0.05);
    }
  }
}

TEST_F(CommMpi, DifferentLayoutIsAnError) {
  Grads g(false);
  // The last rank drops a tensor; then, separately, uses another bucket size.
  std::vector<GradTensor> mine = g.tensors;
  if (rank() == size() - 1) mine.pop_back();
  try {
    GradBuckets gb(comm, mine, {.bucket_bytes = 40000});
    ADD_FAILURE() << "no error on " << comm.describe();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layout differs across ranks"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("rank " + std::to_string(size() - 1) + " has 11 tensors"),
              std::string::npos)
        << e.what();
  }
  const size_t bytes = rank() == 0 ? 40000 : 200000;  // 10000 vs 50000 floats: other boundaries
  EXPECT_THROW(GradBuckets(comm, g.tensors, {.bucket_bytes = bytes}), Error);
  // The same layout everywhere is accepted (and the communicator still works afterwards).
  GradBuckets ok(comm, g.tensors, {.bucket_bytes = 40000});
  EXPECT_GT(ok.buckets().size(), 1u);
}

// ---- Deadline (parallel.comm_timeout_s) ----
// These come last: once a wait has timed out, comm_timed_out() holds for the rest of the process, and
// destructors of unfinished requests stop waiting.

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

TEST_F(CommMpi, StuckRankTimesOutEveryCall) {
  // The last rank stands for a stuck peer: alive (it waits on MPI_COMM_WORLD, which the communicators
  // under test duplicate), it joins their collectives only after every other rank has seen each call time
  // out. It waits without a deadline; the others give up after 0.3 s.
  constexpr double kTimeout = 0.3;
  const int stuck = size() - 1;
  MpiCommunicator c(MPI_COMM_WORLD, rank() == stuck ? 0 : kTimeout);
  const size_t n = 1000;
  std::vector<float> async_buf(n), sum(n), bcast(n);
  fill_exact(async_buf);
  fill_exact(sum);
  fill_exact(bcast);
  std::unique_ptr<CommRequest> req;
  double metrics[2] = {1.0 * rank(), 2.0};
  std::vector<uint64_t> gathered;
  struct Call {
    const char* name;
    std::function<void()> run;
  };
  const std::vector<Call> calls = {
      {"MPI_Iallreduce of an asynchronous allreduce",
       [&] {
         if (!req) req = c.allreduce_async(async_buf.data(), n, ReduceOp::kSum);
         req->wait();
       }},
      {"MPI_Iallreduce of an allreduce", [&] { c.allreduce(sum.data(), n, ReduceOp::kSum); }},
      {"MPI_Ibarrier of a barrier", [&] { c.barrier(); }},
      // Rooted at the stuck rank: a root elsewhere may finish its part without the stuck rank.
      {"MPI_Ibcast of a broadcast", [&] { c.broadcast(bcast.data(), n, stuck); }},
      {"MPI_Iallreduce of metrics", [&] { c.allreduce_metrics(metrics, 2, ReduceOp::kSum); }},
      {"MPI_Iallgather of an allgather", [&] { gathered = c.allgather({static_cast<uint64_t>(rank())}); }},
  };
  if (rank() == stuck) {
    MPI_Barrier(MPI_COMM_WORLD);
    for (const Call& call : calls) call.run();
  } else {
    for (const Call& call : calls) {
      const Clock::time_point t0 = Clock::now();
      try {
        call.run();
        ADD_FAILURE() << call.name << " completed without the stuck rank on " << c.describe();
      } catch (const Error& e) {
        const double waited = seconds_since(t0);
        const std::string what = e.what();
        EXPECT_NE(what.find(call.name), std::string::npos) << what;
        EXPECT_NE(what.find(c.describe()), std::string::npos) << what;
        EXPECT_NE(what.find("parallel.comm_timeout_s"), std::string::npos) << what;
        EXPECT_NE(what.find("peer rank is stuck"), std::string::npos) << what;
        EXPECT_GE(waited, kTimeout) << what;
        // The stuck rank only joins after this, so the bound just has to hold on a loaded 2-core machine
        // running 4 ranks beside other tests.
        EXPECT_LT(waited, kTimeout + 2.0) << what;
      }
    }
    EXPECT_TRUE(comm_timed_out());
    MPI_Barrier(MPI_COMM_WORLD);  // the stuck rank joins now
    // The operations were left pending, not lost: they complete, the blocking calls' through
    // wait_timed_out, the request through a second wait.
    c.wait_timed_out();
    req->wait();
    // The blocking calls that threw wrote nothing the caller sees; metrics were reduced in a copy.
    EXPECT_EQ(metrics[0], 1.0 * rank());
    EXPECT_TRUE(gathered.empty());
  }
  for (size_t i = 0; i < n; ++i) {
    ASSERT_EQ(async_buf[i], exact_sum(i)) << "asynchronous allreduce, element " << i;
    ASSERT_EQ(sum[i], exact_sum(i)) << "allreduce, element " << i;
    ASSERT_EQ(bcast[i], exact_value(stuck, i)) << "broadcast, element " << i;
  }
  if (rank() == stuck) {
    EXPECT_EQ(metrics[0], size() * (size() - 1) / 2.0);
    EXPECT_EQ(metrics[1], 2.0 * size());
    ASSERT_EQ(gathered.size(), static_cast<size_t>(size()));
    for (int r = 0; r < size(); ++r) EXPECT_EQ(gathered[r], static_cast<uint64_t>(r));
  }
}

TEST_F(CommMpi, LateRankWithinTheDeadline) {
  // The last rank joins 0.2 s late: waits with a 5 s deadline succeed, and so do waits without one (0).
  for (double timeout_s : {5.0, 0.0}) {
    MpiCommunicator c(MPI_COMM_WORLD, timeout_s);
    std::vector<float> v(1000), w(1000);
    fill_exact(v);
    fill_exact(w);
    double m[1] = {1.0};
    if (rank() == size() - 1) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const Clock::time_point t0 = Clock::now();
    c.allreduce_async(v.data(), v.size(), ReduceOp::kSum)->wait();
    c.allreduce(w.data(), w.size(), ReduceOp::kSum);
    c.allreduce_metrics(m, 1, ReduceOp::kSum);
    c.barrier();
    if (rank() != size() - 1) {
      EXPECT_GE(seconds_since(t0), 0.1) << "timeout " << timeout_s;
    }
    for (size_t i = 0; i < v.size(); ++i) {
      ASSERT_EQ(v[i], exact_sum(i)) << "timeout " << timeout_s << ", element " << i;
      ASSERT_EQ(w[i], exact_sum(i)) << "timeout " << timeout_s << ", element " << i;
    }
    EXPECT_EQ(m[0], 1.0 * size());
  }
  for (double bad : {-1.0, static_cast<double>(NAN), static_cast<double>(INFINITY)}) {
    try {
      MpiCommunicator c(MPI_COMM_WORLD, bad);
      ADD_FAILURE() << "timeout " << bad << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("parallel.comm_timeout_s"), std::string::npos) << e.what();
    }
  }
}

int kill_rank_loop(int victim) {
  MpiCommunicator comm(MPI_COMM_WORLD);
  std::vector<float> v(1 << 20, 1.0f);
  for (int it = 0;; ++it) {
    if (it == 3 && comm.rank() == victim) std::raise(SIGKILL);
    try {
      comm.allreduce(v.data(), v.size(), ReduceOp::kAverage);
    } catch (const Error& e) {
      // What the worker's main() does: report, then end the job so no rank hangs.
      std::fprintf(stderr, "%s\n", e.what());
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
  }
}

}  // namespace
}  // namespace alexnet

int main(int argc, char** argv) {
  alexnet::testing::mpi_test_init(&argc, &argv);
  if (argc == 3 && std::string(argv[1]) == "--kill-rank") return alexnet::kill_rank_loop(std::stoi(argv[2]));
  return alexnet::testing::mpi_test_run(&argc, argv);
}
