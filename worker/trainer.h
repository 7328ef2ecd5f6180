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

// SIGUSR1 and SIGTERM ask for a checkpoint and a stop at the next step boundary. They are never handled
// by interrupting a thread: block_stop_signals, called first in main before MPI or any library starts a
// thread, blocks them in every thread to come, and install_stop_handlers starts the one thread that
// takes them with sigwait. (With a handler that merely set a flag, run on whichever thread the kernel
// chose, about one signalled 2-rank CPU run in six aborted with a corrupted heap in the step the signal
// arrived in; with sigwait, none of 30.)
void block_stop_signals();
void install_stop_handlers();

}  // namespace alexnet
