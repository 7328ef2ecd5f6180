// The training loop of one worker rank: batches from the data service, the two-tower model, bucketed
// gradient averaging across the worker ranks, the paper's SGD rule with a learning-rate schedule,
// evaluation, progress and metrics, checkpoints, signals and resume (docs/worker.md).
#pragma once

#include <string>

#include "core/config.h"
#include "data_service/job_layout.h"

namespace alexnet {

struct WorkerOptions {
  std::string resume;        // "", "auto" or a checkpoint path
  bool eval_only = false;    // evaluate the resumed (or initial) weights and stop
};

// Runs the worker; returns the process exit status (0, or kExitCheckpointedOnSignal when a signal
// asked it to stop). Collective over the job's workers.
int run_worker(const Config& config, const WorkerOptions& options, const JobLayout& layout);

// Installs the SIGUSR1/SIGTERM handlers that ask for a checkpoint and stop at the next step boundary.
void install_stop_handlers();

}  // namespace alexnet
