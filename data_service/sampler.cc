// Epoch permutations and the split of global batches among worker ranks.
#include "data_service/sampler.h"

#include <numeric>

#include "core/error.h"
#include "core/rng.h"

namespace alexnet {

TrainSampler::TrainSampler(int64_t num_samples, int64_t global_batch, int world, uint64_t seed)
    : num_samples_(num_samples), global_batch_(global_batch), world_(world), seed_(seed) {
  ALEXNET_CHECK(world >= 1, "worker count must be >= 1, got ", world);
  ALEXNET_CHECK(global_batch >= 1 && global_batch % world == 0, "train.batch_size ", global_batch,
                " must be a positive multiple of the number of worker ranks (", world, ")");
  ALEXNET_CHECK(num_samples >= global_batch, "the training set has ", num_samples,
                " images, fewer than one global batch (train.batch_size ", global_batch, ")");
}

int64_t TrainSampler::steps_per_epoch() const { return num_samples_ / global_batch_; }

std::vector<int64_t> TrainSampler::permutation(int64_t epoch) const {
  std::vector<int64_t> p(static_cast<size_t>(num_samples_));
  std::iota(p.begin(), p.end(), int64_t{0});
  // Fisher-Yates; draw i is element i of the epoch's counter stream, so the permutation depends on
  // (seed, epoch) alone. 64 random bits make the modulo bias negligible (< 2^-40 for 2^24 images).
  const CounterRng rng(make_key(seed_, RngPurpose::kShuffle), static_cast<uint64_t>(epoch));
  for (int64_t i = num_samples_ - 1; i > 0; --i) {
    const Philox4 r = rng.block(static_cast<uint64_t>(i));
    const uint64_t bits = (static_cast<uint64_t>(r.v[0]) << 32) | r.v[1];
    const int64_t j = static_cast<int64_t>(bits % static_cast<uint64_t>(i + 1));
    std::swap(p[i], p[j]);
  }
  return p;
}

std::vector<int64_t> TrainSampler::batch(int64_t epoch, int64_t step, int rank) const {
  ALEXNET_ASSERT(rank >= 0 && rank < world_, "rank ", rank, " of ", world_);
  ALEXNET_ASSERT(step >= 0 && step < steps_per_epoch(), "step ", step, " of ", steps_per_epoch());
  const std::vector<int64_t> p = permutation(epoch);
  const int64_t per_rank = global_batch_ / world_;
  const int64_t first = step * global_batch_ + rank * per_rank;
  return std::vector<int64_t>(p.begin() + first, p.begin() + first + per_rank);
}

EvalSampler::EvalSampler(int64_t num_samples, int64_t batch_per_rank, int world)
    : num_samples_(num_samples), batch_per_rank_(batch_per_rank), world_(world) {
  ALEXNET_CHECK(world >= 1, "worker count must be >= 1, got ", world);
  ALEXNET_CHECK(batch_per_rank >= 1, "evaluation batch per rank must be >= 1, got ", batch_per_rank);
  ALEXNET_CHECK(num_samples >= 1, "the validation set is empty");
}

int64_t EvalSampler::num_batches() const {
  const int64_t per_round = batch_per_rank_ * world_;
  return (num_samples_ + per_round - 1) / per_round;
}

EvalBatch EvalSampler::batch(int64_t index, int rank) const {
  ALEXNET_ASSERT(rank >= 0 && rank < world_, "rank ", rank, " of ", world_);
  ALEXNET_ASSERT(index >= 0 && index < num_batches(), "eval batch ", index, " of ", num_batches());
  // Batch `index` covers images [index*B*W, (index+1)*B*W); rank r takes every W-th of them.
  EvalBatch b;
  b.samples.resize(static_cast<size_t>(batch_per_rank_));
  b.mask.resize(static_cast<size_t>(batch_per_rank_));
  const int64_t base = index * batch_per_rank_ * world_;
  for (int64_t k = 0; k < batch_per_rank_; ++k) {
    const int64_t i = base + k * world_ + rank;
    const bool valid = i < num_samples_;
    b.samples[k] = valid ? i : num_samples_ - 1;
    b.mask[k] = valid ? 1 : 0;
  }
  return b;
}

}  // namespace alexnet
