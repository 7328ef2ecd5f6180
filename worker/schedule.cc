#include "worker/schedule.h"

#include <cmath>

#include "core/error.h"

namespace alexnet {

LrScheduler::LrScheduler(const TrainConfig& train, int64_t steps_per_epoch)
    : train_(train), steps_per_epoch_(steps_per_epoch) {
  ALEXNET_CHECK(steps_per_epoch > 0, "a schedule needs at least one step per epoch");
  scaled_ = train.lr;
  if (train.linear_scaling_reference > 0)
    scaled_ = train.lr * static_cast<double>(train.batch_size) / train.linear_scaling_reference;
}

double LrScheduler::lr(int64_t step, int64_t epoch, const ScheduleState& state) const {
  double rate = scaled_;
  const double warmup_steps = train_.warmup_epochs * static_cast<double>(steps_per_epoch_);
  if (warmup_steps > 0 && step < warmup_steps)  // Goyal et al.: from lr to k*lr, linearly per step
    rate = train_.lr + (scaled_ - train_.lr) * (static_cast<double>(step) / warmup_steps);
  switch (train_.lr_schedule) {
    case LrSchedule::kPlateau:
      rate *= std::pow(train_.lr_decay, state.drops);
      break;
    case LrSchedule::kStep: {
      int passed = 0;
      for (int e : train_.lr_steps)
        if (epoch >= e) ++passed;
      rate *= std::pow(train_.lr_decay, passed);
      break;
    }
    case LrSchedule::kConstant:
      break;
  }
  return rate;
}

bool LrScheduler::on_evaluation(double top1_error, ScheduleState& state) const {
  if (top1_error < state.best_error - train_.plateau_min_delta) {
    state.best_error = top1_error;
    state.bad_evaluations = 0;
    return false;
  }
  ++state.bad_evaluations;
  if (train_.lr_schedule != LrSchedule::kPlateau) return false;
  if (state.bad_evaluations < train_.plateau_patience || state.drops >= train_.max_lr_drops) return false;
  ++state.drops;
  state.bad_evaluations = 0;
  return true;
}

std::string LrScheduler::describe() const {
  std::string s = str_cat(enum_name(train_.lr_schedule), ", lr ", scaled_);
  if (train_.linear_scaling_reference > 0)
    s += str_cat(" (", train_.lr, " x ", train_.batch_size, "/", train_.linear_scaling_reference, " linear scaling)");
  if (train_.warmup_epochs > 0) s += str_cat(", warm-up ", train_.warmup_epochs, " epochs from ", train_.lr);
  if (train_.lr_schedule == LrSchedule::kPlateau)
    s += str_cat(", x", train_.lr_decay, " after ", train_.plateau_patience, " evaluation(s) without improvement (at most ",
                 train_.max_lr_drops, " drops)");
  if (train_.lr_schedule == LrSchedule::kStep) {
    s += str_cat(", x", train_.lr_decay, " at epochs");
    for (int e : train_.lr_steps) s += str_cat(" ", e);
  }
  return s;
}

}  // namespace alexnet
