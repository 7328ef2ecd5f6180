// Which samples go where: a permutation of the training set per epoch from (seed, epoch), cut into global
// batches, each split evenly among the worker ranks; evaluation covers every validation image once.
#pragma once

#include <cstdint>
#include <vector>

namespace alexnet {

class TrainSampler {
 public:
  // num_samples training images, global_batch images per step (divisible by world), world worker ranks.
  TrainSampler(int64_t num_samples, int64_t global_batch, int world, uint64_t seed);
  // Full global batches per epoch; the remainder of the permutation is dropped (the same for every rank).
  int64_t steps_per_epoch() const;
  // Global sample indices of worker `rank`'s share of global batch `step` in `epoch`, in batch order:
  // positions [step*B + rank*B/W, step*B + (rank+1)*B/W) of the epoch's permutation.
  std::vector<int64_t> batch(int64_t epoch, int64_t step, int rank) const;
  // The whole permutation of `epoch` (Fisher-Yates driven by the counter-based RNG).
  std::vector<int64_t> permutation(int64_t epoch) const;

 private:
  int64_t num_samples_, global_batch_;
  int world_;
  uint64_t seed_;
};

// Evaluation: in round k, rank r evaluates images k*B*W + j*W + r (j < B = batch_per_rank); the last
// batches are padded (mask 0) so every rank runs the same number of batches.
struct EvalBatch {
  std::vector<int64_t> samples;  // batch_per_rank entries; padding repeats a valid index
  std::vector<uint8_t> mask;     // 1: counts, 0: padding
};
class EvalSampler {
 public:
  EvalSampler(int64_t num_samples, int64_t batch_per_rank, int world);
  int64_t num_batches() const;  // the same on every rank
  EvalBatch batch(int64_t index, int rank) const;

 private:
  int64_t num_samples_, batch_per_rank_;
  int world_;
};

}  // namespace alexnet
