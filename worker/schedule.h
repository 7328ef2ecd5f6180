// Learning-rate schedules: the paper's (divide by 10 when the validation error stops improving, §5),
// steps at given epochs, and the linear scaling rule with gradual warm-up for large global batches
// (Goyal et al. 2017, "Accurate, Large Minibatch SGD", §2.1-2.2).
#pragma once

#include <cstdint>
#include <string>

#include "core/config.h"

namespace alexnet {

// What the plateau schedule remembers between evaluations (saved in checkpoints).
struct ScheduleState {
  int drops = 0;             // drops so far (plateau schedule)
  double best_error = 2.0;   // best validation top-1 error seen (2: none yet)
  int bad_evaluations = 0;   // evaluations since the best one
};

class LrScheduler {
 public:
  LrScheduler(const TrainConfig& train, int64_t steps_per_epoch);

  // The rate for global step `step` (0-based) in `epoch`.
  double lr(int64_t step, int64_t epoch, const ScheduleState& state) const;
  // The peak rate: train.lr, times batch_size / linear_scaling_reference when that is set.
  double scaled_lr() const { return scaled_; }
  // Feeds a validation top-1 error (a fraction) to the plateau rule. Returns true when it drops the rate.
  bool on_evaluation(double top1_error, ScheduleState& state) const;
  // One line for the log: "plateau, base 0.01 (x2 linear scaling), warm-up 5 epochs".
  std::string describe() const;

 private:
  TrainConfig train_;
  int64_t steps_per_epoch_;
  double scaled_;
};

}  // namespace alexnet
