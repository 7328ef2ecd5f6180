// alexnet-data-service: the data-service ranks of a training job (MPMD with alexnet-worker).
//   mpirun -np D alexnet-data-service --config C [--set k=v ...] : -np W alexnet-worker --config C ...
#include <mpi.h>
#include <unistd.h>

#include <csignal>
#include <exception>
#include <iostream>

#include "core/cli.h"
#include "comm/mpi_process.h"
#include "core/error.h"
#include "core/log.h"
#include "data_service/job_layout.h"
#include "data_service/service.h"

namespace {

int serve(int argc, char** argv) {
  using namespace alexnet;
  ArgParser args("alexnet-data-service",
                 "--config FILE [--set key=value ...]\n"
                 "Started by mpirun beside the alexnet-worker ranks of the same job; reads the prepared\n"
                 "dataset folder and serves augmented batches to its node's workers.");
  args.config_options();
  if (!args.parse(argc, argv)) return 0;
  const Config config = args.load_config();
  set_log_level(parse_log_level(config.log.level));
  JobLayout layout = JobLayout::create(JobRole::kService);
  if (layout.index() == 0) log_info("job layout: ", layout.describe());
  if (layout.served_workers().empty()) {
    log_warn("data service ", layout.index(), " serves no worker (more services than workers); exiting");
    return 0;
  }
  const auto producer = open_prepared_producer(config.data);
  log_info("data service ", layout.index(), " (pid ", getpid(), "): ", producer->num_train(), " training and ",
           producer->num_val(), " validation images, ", producer->num_classes(), " classes; serving ",
           layout.served_workers().size(), " workers");
  ServiceStats stats;
  {
    DataService service(layout, *producer, ServiceOptions::from_config(config));
    stats = service.run();
  }
  log_info("data service ", layout.index(), " done: ", stats.summary());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // SIGUSR1 asks the workers to checkpoint and stop (docs/launch.md); mpirun sends it to every rank. The
  // service ignores it and keeps serving until its workers say they are done.
  std::signal(SIGUSR1, SIG_IGN);
  return alexnet::run_mpi_process("alexnet-data-service", argc, argv, serve);
}
