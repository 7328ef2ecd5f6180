// Communicator and bucket tests that need no MPI job: LocalCommunicator, bucket planning, contiguity,
// GradBuckets over a size-1 communicator, and the GPU placement rules (tower GPUs, NCCL's one GPU per rank).
#include <gtest/gtest.h>

#include <array>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/grad_buckets.h"
#include "comm/placement.h"
#include "core/config.h"
#include "core/error.h"
#include "tests/common/expect.h"

namespace alexnet {
namespace {

std::vector<float> ramp(size_t n, float base) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = base + 0.25f * static_cast<float>(i % 1013) - 7.0f;
  return v;
}

TEST(LocalCommunicator, AveragingIsTheIdentity) {
  LocalCommunicator comm;
  EXPECT_EQ(comm.rank(), 0);
  EXPECT_EQ(comm.size(), 1);
  std::vector<float> x = ramp(5000, 1.5f), ref = x;
  comm.allreduce(x.data(), x.size(), ReduceOp::kAverage);
  EXPECT_EQ(x, ref);
  comm.allreduce(x.data(), x.size(), ReduceOp::kSum);
  EXPECT_EQ(x, ref);
  auto req = comm.allreduce_async(x.data(), x.size(), ReduceOp::kAverage);
  EXPECT_TRUE(req->test());
  req->wait();
  EXPECT_EQ(x, ref);
  comm.broadcast(x.data(), x.size(), 0);
  EXPECT_EQ(x, ref);
  EXPECT_THROW(comm.broadcast(x.data(), x.size(), 1), Error);
  double m[2] = {3.5, -2.0};
  comm.allreduce_metrics(m, 2, ReduceOp::kAverage);
  EXPECT_EQ(m[0], 3.5);
  EXPECT_EQ(m[1], -2.0);
  EXPECT_EQ(comm.allgather({7, 9}), (std::vector<uint64_t>{7, 9}));
  comm.barrier();
}

TEST(ScaleByInverse, PowerOfTwoIsExact) {
  std::vector<float> x = {4.0f, -6.0f, 1.0f, 3.0f};
  scale_by_inverse(x.data(), x.size(), 4);
  EXPECT_EQ(x, (std::vector<float>{1.0f, -1.5f, 0.25f, 0.75f}));
  scale_by_inverse(x.data(), x.size(), 1);
  EXPECT_EQ(x, (std::vector<float>{1.0f, -1.5f, 0.25f, 0.75f}));
}

// Tensors of the given sizes laid out back to back in one arena.
std::vector<GradTensor> arena_tensors(std::vector<float>& arena, const std::vector<size_t>& sizes) {
  arena.assign(std::accumulate(sizes.begin(), sizes.end(), size_t{0}), 0.0f);
  std::vector<GradTensor> t;
  size_t off = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    t.push_back({str_cat("t", i), arena.data() + off, sizes[i]});
    off += sizes[i];
  }
  return t;
}

TEST(PlanBuckets, SizesOrderAndBigTensorsAlone) {
  std::vector<float> arena;
  // Bucket limit 100 floats (400 bytes).
  auto t = arena_tensors(arena, {30, 50, 40, 250, 10, 100, 1, 99});
  auto plan = plan_buckets(t, 400);
  ASSERT_EQ(plan.size(), 6u);
  // [30, 50] | [40] (adding 250 would exceed) | [250] alone | [10] (10 + 100 > 100) | [100] | [1, 99]
  EXPECT_EQ(plan[0].first, 0u);
  EXPECT_EQ(plan[0].last, 2u);
  EXPECT_EQ(plan[0].count, 80u);
  EXPECT_EQ(plan[1].first, 2u);
  EXPECT_EQ(plan[1].last, 3u);
  EXPECT_EQ(plan[2].first, 3u);
  EXPECT_EQ(plan[2].last, 4u);
  EXPECT_EQ(plan[2].count, 250u);
  EXPECT_EQ(plan[3].first, 4u);
  EXPECT_EQ(plan[3].last, 5u);
  EXPECT_EQ(plan[4].first, 5u);
  EXPECT_EQ(plan[4].last, 6u);
  EXPECT_EQ(plan[5].first, 6u);
  EXPECT_EQ(plan[5].last, 8u);
  EXPECT_EQ(plan[5].count, 100u);
  // One float more per bucket: the 1 joins the 100 instead.
  auto plan2 = plan_buckets(t, 404);
  ASSERT_EQ(plan2.size(), 6u);
  EXPECT_EQ(plan2[4].last, 7u);
  EXPECT_EQ(plan2[5].first, 7u);
  size_t covered = 0;
  for (size_t b = 0; b < plan.size(); ++b) {
    EXPECT_EQ(plan[b].first, covered);
    covered = plan[b].last;
    EXPECT_TRUE(plan[b].contiguous);
  }
  EXPECT_EQ(plan_buckets(t, 0).size(), 1u);
  EXPECT_EQ(plan_buckets(t, 0)[0].count, arena.size());
  EXPECT_TRUE(plan_buckets(t, 0)[0].contiguous);
  EXPECT_TRUE(plan_buckets({}, 400).empty());
}

TEST(PlanBuckets, DetectsContiguity) {
  std::vector<float> a(10), b(10), arena(30);
  // Separate allocations: not contiguous.
  auto plan = plan_buckets({{"a", a.data(), 10}, {"b", b.data(), 10}}, 0);
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_FALSE(plan[0].contiguous);
  // Same arena, but in reverse memory order: not contiguous either.
  plan = plan_buckets({{"x", arena.data() + 10, 10}, {"y", arena.data(), 10}}, 0);
  EXPECT_FALSE(plan[0].contiguous);
  // A gap of one float.
  plan = plan_buckets({{"x", arena.data(), 10}, {"y", arena.data() + 11, 10}}, 0);
  EXPECT_FALSE(plan[0].contiguous);
  plan = plan_buckets({{"x", arena.data(), 10}, {"y", arena.data() + 10, 10}, {"z", arena.data() + 20, 10}}, 0);
  EXPECT_TRUE(plan[0].contiguous);
  // One bucket per tensor: each is contiguous on its own.
  plan = plan_buckets({{"a", a.data(), 10}, {"b", b.data(), 10}}, 40);
  ASSERT_EQ(plan.size(), 2u);
  EXPECT_TRUE(plan[0].contiguous && plan[1].contiguous);
}

TEST(GradBuckets, LocalAverageIsIdentityInAnyOrder) {
  LocalCommunicator comm;
  std::vector<float> arena;
  auto t = arena_tensors(arena, {300, 20, 700, 5, 64});
  // Plus a tensor outside the arena, so one bucket is staged through a copy.
  std::vector<float> extra = ramp(33, 2.0f);
  t.push_back({"extra", extra.data(), extra.size()});
  for (size_t i = 0; i < arena.size(); ++i) arena[i] = static_cast<float>(i) * 0.5f - 100.0f;
  const std::vector<float> ref = arena, ref_extra = extra;
  for (bool overlap : {true, false}) {
    GradBuckets gb(comm, t, {.bucket_bytes = 1200, .overlap = overlap});
    ASSERT_GE(gb.buckets().size(), 3u);
    EXPECT_FALSE(gb.buckets().back().contiguous);
    for (int step = 0; step < 2; ++step) {
      for (size_t i : {4, 0, 5, 2, 1, 3}) gb.mark_ready(i);
      gb.wait_all();
      EXPECT_EQ(arena, ref);
      EXPECT_EQ(extra, ref_extra);
      EXPECT_EQ(gb.last_timing().reductions, static_cast<int>(gb.buckets().size()));
      EXPECT_EQ(gb.last_timing().bytes, static_cast<double>((arena.size() + extra.size()) * sizeof(float)));
      EXPECT_GE(gb.last_timing().exposed_s, 0.0);
    }
  }
}

TEST(GradBuckets, MisuseIsReported) {
  LocalCommunicator comm;
  std::vector<float> arena;
  auto t = arena_tensors(arena, {10, 10});
  GradBuckets gb(comm, t, {.bucket_bytes = 40});
  gb.mark_ready(0);
  EXPECT_THROW(gb.mark_ready(0), Error);
  EXPECT_THROW(gb.mark_ready(2), Error);
  EXPECT_THROW(gb.wait_all(), Error);
  gb.mark_ready(1);
  gb.wait_all();
  std::vector<GradTensor> bad = {{"null", nullptr, 4}};
  EXPECT_THROW(GradBuckets(comm, bad), Error);
}

TEST(GradBuckets, HiddenFraction) {
  CommTiming t;
  EXPECT_EQ(t.hidden_fraction(), 0.0);
  t.in_flight_s = 2.0;
  t.exposed_s = 0.5;
  EXPECT_DOUBLE_EQ(t.hidden_fraction(), 0.75);
  t.exposed_s = 3.0;
  EXPECT_EQ(t.hidden_fraction(), 0.0);
}

TEST(GradBuckets, ConfigKey) {
  EXPECT_EQ(default_config().parallel.bucket_mb, 25.0);
  EXPECT_EQ(default_config({"parallel.bucket_mb=4"}).parallel.bucket_mb, 4.0);
  EXPECT_THROW(default_config({"parallel.bucket_mb=-1"}), Error);
}

using testing::error_of;

TEST(Placement, TwoGpusPerRankPutTowerTOnGpu2rPlusT) {
  // Four workers on a node of eight GPUs: the paper's two GPUs per network copy.
  for (int r = 0; r < 4; ++r) {
    const std::array<int, 2> g = tower_gpus(r, 4, 2, 8);
    EXPECT_EQ(g[0], 2 * r);
    EXPECT_EQ(g[1], 2 * r + 1);
  }
  // More GPUs than needed: the first ones are used.
  EXPECT_EQ(tower_gpus(0, 1, 2, 8), (std::array<int, 2>{0, 1}));
}

TEST(Placement, OneGpuPerRankPutsBothTowersOnGpuR) {
  for (int r = 0; r < 8; ++r) EXPECT_EQ(tower_gpus(r, 8, 1, 8), (std::array<int, 2>{r, r}));
}

TEST(Placement, TooFewGpusNamesTheKeyAndTheCounts) {
  const std::string e = error_of([] { tower_gpus(0, 4, 2, 4); });
  EXPECT_NE(e.find("parallel.devices_per_rank"), std::string::npos) << e;
  EXPECT_NE(e.find("4 worker rank(s) on this node x 2 GPU(s) each need 8 GPUs; 4 visible"), std::string::npos) << e;
  EXPECT_NE(e.find("or devices_per_rank 1"), std::string::npos) << e;
  const std::string one = error_of([] { tower_gpus(1, 3, 1, 2); });
  EXPECT_NE(one.find("need 3 GPUs; 2 visible"), std::string::npos) << one;
  EXPECT_EQ(one.find("or devices_per_rank 1"), std::string::npos) << one;  // already 1
  const std::string bad = error_of([] { tower_gpus(0, 1, 3, 8); });
  EXPECT_NE(bad.find("'parallel.devices_per_rank': 3 (expected 1 or 2)"), std::string::npos) << bad;
}

TEST(Placement, RanksGivenGpusOfTheirOwnTakeTheirFirstOnes) {
  // srun --gpus-per-task: four workers each see one or two GPUs, all different ones.
  EXPECT_TRUE(ranks_see_own_gpus({0x3b00, 0x5e00, 0x8600, 0xaf00}, 1));
  EXPECT_TRUE(ranks_see_own_gpus({0x1800, 0x2a00, 0x3b00, 0x5e00}, 2));
  // Every rank sees the same GPUs (a node with fewer than it needs), or two ranks were given one GPU.
  EXPECT_FALSE(ranks_see_own_gpus({0x3b00, 0x3b00}, 1));
  EXPECT_FALSE(ranks_see_own_gpus({0x1800, 0x2a00, 0x2a00, 0x5e00}, 2));
  EXPECT_TRUE(ranks_see_own_gpus({0x1800}, 1));
  for (int r = 0; r < 4; ++r) {
    EXPECT_EQ(tower_gpus(r, 4, 1, 1, true), (std::array<int, 2>{0, 0}));
    EXPECT_EQ(tower_gpus(r, 4, 2, 2, true), (std::array<int, 2>{0, 1}));
  }
  // Enough GPUs visible to every rank: the node-wide placement, whatever own_gpus says.
  EXPECT_EQ(tower_gpus(3, 4, 2, 8, true), (std::array<int, 2>{6, 7}));
  const std::string e = error_of([] { tower_gpus(1, 4, 2, 1, true); });
  EXPECT_NE(e.find("2 GPUs per worker rank, but this rank was given 1 of its own"), std::string::npos) << e;
}

TEST(Placement, PciLocationsReadAsNvidiaSmiWritesThem) {
  EXPECT_EQ(pci_location_str(0x3b00), "0000:00:3b.0");
  EXPECT_EQ(pci_location_str(uint64_t{1} << 32 | 0x3b << 16 | 0x02 << 8), "0001:3b:02.0");
}

TEST(Placement, SharedGpuIsNamedWithBothRanks) {
  // (host, PCI location) per rank: two hosts with two GPUs each.
  const uint64_t g0 = 0x18 << 16, g1 = 0x2a << 16;
  EXPECT_EQ(shared_gpu_conflict({7, g0, 7, g1, 9, g0, 9, g1}), "");
  EXPECT_EQ(shared_gpu_conflict({7, 0}), "");
  EXPECT_EQ(shared_gpu_conflict({}), "");
  // Ranks 1 and 3 both on host 7's second GPU.
  const std::string m = shared_gpu_conflict({7, g0, 7, g1, 9, g1, 7, g1});
  EXPECT_NE(m.find("ranks 1 and 3 of the gradient communicator both use the GPU at PCI 0000:2a:00.0 of one host"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("parallel.devices_per_rank 1"), std::string::npos) << m;
  // The same GPU index on different hosts is fine; the first conflicting pair is named.
  EXPECT_EQ(shared_gpu_conflict({1, 0, 2, 0, 3, 0}), "");
  // Without a readable PCI location the device index names the GPU.
  const std::string index = shared_gpu_conflict({7, kGpuIndexOnly | 0, 7, kGpuIndexOnly | 0});
  EXPECT_NE(index.find("ranks 0 and 1 of the gradient communicator both use GPU 0 of one host"), std::string::npos)
      << index;
  const std::string first = shared_gpu_conflict({5, 2, 5, 2, 5, 2});
  EXPECT_NE(first.find("ranks 0 and 1 "), std::string::npos) << first;
}

}  // namespace
}  // namespace alexnet
