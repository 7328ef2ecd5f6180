// alexnet-launch: validates the config and the environment, places the data-service and worker ranks
// on the nodes, and runs (or, with --dry-run, prints) the MPMD mpirun command. docs/launch.md.
#include <exception>
#include <iostream>

#include "core/cli.h"
#include "core/error.h"
#include "launcher/launch_checks.h"
#include "launcher/launch_plan.h"
#include "launcher/run_job.h"

namespace {

int launch(int argc, char** argv) {
  using namespace alexnet;
  ArgParser args("alexnet-launch",
                 "--config FILE [--set key=value ...] [--workers W] [--data-services D]\n"
                 "       [--hosts h1:slots,h2:slots | --hostfile F] [--resume auto|PATH] [--eval-only] [--dry-run]\n"
                 "       [--bin-dir DIR] [--mpirun PATH]\n"
                 "Checks the config, the dataset, the checkpoint folder and the executables, then runs the\n"
                 "training job: D alexnet-data-service and W alexnet-worker ranks under one mpirun\n"
                 "(default: one service per node, workers spread evenly; inside a SLURM allocation its nodes).");
  args.config_options();
  args.option("--workers", "worker ranks (default: per node, its slots minus one; 1 on the local machine)");
  args.option("--data-services", "data-service ranks (default: one per node that runs workers)");
  args.option("--hosts", "nodes and their slots: h1:4,h2:4 (a host without :N has 1 slot)");
  args.option("--hostfile", "Open MPI hostfile: 'host slots=N' per line");
  args.option("--resume", "passed to every worker: auto (the latest checkpoint in checkpoint.dir) or a file");
  args.flag("--eval-only", "passed to every worker: evaluate the --resume weights on the validation set and stop");
  args.flag("--dry-run", "print the mpirun command (one line) after the checks, and exit");
  args.option("--bin-dir", "folder of alexnet-worker and alexnet-data-service (default: this program's)");
  args.option("--mpirun", "the mpirun to run (default: mpirun from PATH)");
  if (!args.parse(argc, argv)) return 0;
  ALEXNET_CHECK(args.positionals().empty(), "alexnet-launch: unexpected argument '", args.positionals()[0],
                "'\n", args.help_text());

  LaunchOptions options;
  options.config_path = args.get_or("--config", "");
  options.overrides = args.get_all("--set");
  options.workers = static_cast<int>(args.get_int_or("--workers", 0));
  ALEXNET_CHECK(!args.has("--workers") || options.workers >= 1, "--workers must be >= 1, got ",
                args.get("--workers"));
  options.services = static_cast<int>(args.get_int_or("--data-services", 0));
  ALEXNET_CHECK(!args.has("--data-services") || options.services >= 1, "--data-services must be >= 1, got ",
                args.get("--data-services"));
  options.hosts = args.get_or("--hosts", "");
  options.hostfile = args.get_or("--hostfile", "");
  options.resume = args.get_or("--resume", "");
  options.eval_only = args.has("--eval-only");
  options.dry_run = args.has("--dry-run");
  options.bin_dir = args.get_or("--bin-dir", "");
  if (options.bin_dir.empty()) options.bin_dir = own_bin_dir();
  options.mpirun = args.get_or("--mpirun", "mpirun");

  // Everything is checked before anything starts.
  const Config config = args.load_config();
  const LaunchEnvironment env = LaunchEnvironment::current();
  const LaunchPlan plan = plan_launch(config, options, env);
  check_dataset(config.data);
  check_checkpoint_dir(checkpoint_dir(config));
  check_executables(options.bin_dir);
  const std::string mpirun = find_mpirun(options.mpirun, env);

  std::cerr << "alexnet-launch: " << plan.workers << " workers, " << plan.services << " data services on "
            << plan.nodes.size() << " node(s) from " << plan.host_source << ":";
  for (const NodePlan& n : plan.nodes)
    std::cerr << " " << n.host << " (" << n.services << "+" << n.workers << " of " << n.slots << " slots, "
              << n.threads_per_rank() << " threads/rank)";
  std::cerr << (plan.oversubscribe ? "; oversubscribed" : "") << "\n";
  if (options.dry_run) {
    std::cout << command_line(plan.argv) << std::endl;
    return 0;
  }
  std::vector<std::string> command = plan.argv;
  command[0] = mpirun;
  std::cerr << "alexnet-launch: " << command_line(command) << std::endl;
  const int status = run_job(command);
  std::cerr << "alexnet-launch: the job ended with status " << status
            << (status == kExitCheckpointedOnSignal ? " (checkpointed on signal; resume with --resume auto)" : "")
            << "\n";
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return launch(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "alexnet-launch: error: " << e.what() << std::endl;
    return 2;
  }
}
