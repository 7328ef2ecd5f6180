// Samplers: every training image once per epoch across all workers (up to the dropped remainder),
// permutations a function of (seed, epoch), batches independent of the worker count, and every
// validation image evaluated exactly once with padding masked.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <set>
#include <vector>

#include "core/error.h"
#include "data_service/sampler.h"

namespace alexnet {
namespace {

TEST(TrainSampler, EveryImageOncePerEpochAcrossWorkers) {
  const int64_t n = 1003, batch = 96;
  for (int world : {1, 2, 3, 4}) {
    const TrainSampler s(n, batch, world, 7);
    ASSERT_EQ(s.steps_per_epoch(), n / batch);
    for (int64_t epoch : {0, 1, 5}) {
      std::vector<int64_t> seen;
      for (int64_t step = 0; step < s.steps_per_epoch(); ++step)
        for (int r = 0; r < world; ++r) {
          const std::vector<int64_t> b = s.batch(epoch, step, r);
          ASSERT_EQ(static_cast<int64_t>(b.size()), batch / world);
          seen.insert(seen.end(), b.begin(), b.end());
        }
      std::set<int64_t> unique(seen.begin(), seen.end());
      EXPECT_EQ(unique.size(), seen.size()) << "an image was visited twice, world " << world;
      EXPECT_EQ(static_cast<int64_t>(seen.size()), s.steps_per_epoch() * batch);
      // The dropped remainder is the tail of the permutation: the same images for every worker count.
      const std::vector<int64_t> p = s.permutation(epoch);
      std::set<int64_t> dropped(p.begin() + s.steps_per_epoch() * batch, p.end());
      for (int64_t i : dropped) EXPECT_EQ(unique.count(i), 0u);
      EXPECT_EQ(unique.size() + dropped.size(), static_cast<size_t>(n));
    }
  }
}

TEST(TrainSampler, PermutationIsAFunctionOfSeedAndEpoch) {
  const TrainSampler a(500, 50, 2, 11), b(500, 50, 5, 11), c(500, 50, 2, 12);
  std::vector<int64_t> sorted = a.permutation(3);
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> iota(500);
  std::iota(iota.begin(), iota.end(), 0);
  EXPECT_EQ(sorted, iota);
  EXPECT_EQ(a.permutation(3), a.permutation(3));
  EXPECT_EQ(a.permutation(3), b.permutation(3)) << "the worker count must not change the permutation";
  EXPECT_NE(a.permutation(3), a.permutation(4)) << "epochs must be shuffled differently";
  EXPECT_NE(a.permutation(3), c.permutation(3)) << "seeds must shuffle differently";
  EXPECT_NE(a.permutation(0), iota);
}

TEST(TrainSampler, GlobalBatchIndependentOfWorkerCount) {
  const int64_t n = 640, batch = 64;
  const TrainSampler one(n, batch, 1, 3);
  for (int world : {2, 4, 8}) {
    const TrainSampler s(n, batch, world, 3);
    for (int64_t step = 0; step < s.steps_per_epoch(); ++step) {
      std::vector<int64_t> joined;
      for (int r = 0; r < world; ++r) {
        const std::vector<int64_t> b = s.batch(2, step, r);
        joined.insert(joined.end(), b.begin(), b.end());
      }
      EXPECT_EQ(joined, one.batch(2, step, 0)) << "world " << world << " step " << step;
    }
  }
}

TEST(TrainSampler, RejectsBadShapes) {
  EXPECT_THROW(TrainSampler(100, 30, 4, 1), Error);   // 30 not divisible by 4
  EXPECT_THROW(TrainSampler(10, 32, 1, 1), Error);    // fewer images than a batch
  EXPECT_THROW(TrainSampler(100, 32, 0, 1), Error);
}

TEST(EvalSampler, EveryValidationImageExactlyOnce) {
  for (int64_t n : {1, 7, 50, 64, 65, 1000}) {
    for (int world : {1, 2, 3, 4}) {
      for (int64_t per_rank : {1, 4, 16}) {
        const EvalSampler s(n, per_rank, world);
        std::vector<int> count(static_cast<size_t>(n), 0);
        for (int64_t k = 0; k < s.num_batches(); ++k)
          for (int r = 0; r < world; ++r) {
            const EvalBatch b = s.batch(k, r);
            ASSERT_EQ(static_cast<int64_t>(b.samples.size()), per_rank);
            ASSERT_EQ(b.mask.size(), b.samples.size());
            for (size_t j = 0; j < b.samples.size(); ++j) {
              ASSERT_GE(b.samples[j], 0);
              ASSERT_LT(b.samples[j], n);  // padding repeats a valid index: shapes stay fixed
              if (b.mask[j]) ++count[static_cast<size_t>(b.samples[j])];
            }
          }
        for (int64_t i = 0; i < n; ++i)
          ASSERT_EQ(count[static_cast<size_t>(i)], 1) << "image " << i << " n " << n << " world " << world;
        EXPECT_EQ(s.num_batches(), (n + per_rank * world - 1) / (per_rank * world));
      }
    }
  }
}

}  // namespace
}  // namespace alexnet
