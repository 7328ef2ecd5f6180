// alexnet-worker: one data-parallel worker rank of a training job (MPMD with alexnet-data-service):
//   mpirun -np D alexnet-data-service --config C : -np W alexnet-worker --config C [--resume auto|PATH]
// alexnet-launch builds that command; docs/worker.md describes the loop, docs/checkpoint.md the files.
#include <string>

#include "comm/mpi_process.h"
#include "core/cli.h"
#include "core/log.h"
#include "data_service/job_layout.h"
#include "worker/trainer.h"

namespace {

int work(int argc, char** argv) {
  using namespace alexnet;
  ArgParser args("alexnet-worker",
                 "--config FILE [--set key=value ...] [--resume auto|PATH] [--eval-only]\n"
                 "Started by mpirun (through alexnet-launch) beside the alexnet-data-service ranks of the same\n"
                 "job. Trains the two-tower AlexNet with data parallelism across the worker ranks; rank 0 writes\n"
                 "the run directory (run.dir). SIGUSR1 or SIGTERM: checkpoint at the next step boundary and exit 75.");
  args.config_options();
  args.option("--resume", "auto: the newest intact checkpoint of the run (none: start fresh); or a checkpoint file");
  args.flag("--eval-only", "evaluate the weights (from --resume, else the initialisation) and stop");
  if (!args.parse(argc, argv)) return 0;
  const Config config = args.load_config();
  set_log_level(parse_log_level(config.log.level));
  install_stop_handlers();
  JobLayout layout = JobLayout::create(JobRole::kWorker);
  WorkerOptions options;
  options.resume = args.get_or("--resume", "");
  options.eval_only = args.has("--eval-only");
  return run_worker(config, options, layout);
}

}  // namespace

int main(int argc, char** argv) {
  alexnet::block_stop_signals();  // before MPI_Init starts its threads (worker/trainer.h)
  return alexnet::run_mpi_process("alexnet-worker", argc, argv, work);
}
