// alexnet-launch's plan: where the data-service and worker ranks go (hosts from --hosts, --hostfile,
// a SLURM allocation or the local machine) and the MPMD mpirun command that puts them there.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "core/config.h"

namespace alexnet {

// Exit status a worker uses when it wrote a checkpoint because of a signal (SIGUSR1) and stopped
// early: "resume me". 75 is EX_TEMPFAIL (sysexits.h); slurm/alexnet.sbatch requeues on it.
constexpr int kExitCheckpointedOnSignal = 75;

struct HostSlots {
  std::string name;
  int slots = 1;  // ranks the host takes before oversubscription (Open MPI's slots)
};

// What the launcher reads from the machine it runs on; injected so that tests are deterministic.
struct LaunchEnvironment {
  int uid = 0;
  int local_cores = 1;                       // cores of this machine
  std::map<std::string, std::string> vars;   // the environment
  static LaunchEnvironment current();
  bool has(const std::string& name) const { return vars.count(name) != 0; }
  std::string get(const std::string& name) const;  // "" when unset
};

struct LaunchOptions {
  std::string config_path;                // --config (empty: defaults)
  std::vector<std::string> overrides;     // --set, in order
  int workers = 0;                        // --workers (0: default)
  int services = 0;                       // --data-services (0: one per node)
  std::string hosts;                      // --hosts h1:slots,h2:slots
  std::string hostfile;                   // --hostfile F
  std::string resume;                     // --resume, passed to the workers ("auto", a path)
  bool eval_only = false;                 // --eval-only, passed to the workers
  bool dry_run = false;
  std::string bin_dir;                    // folder holding alexnet-worker and alexnet-data-service
  std::string mpirun = "mpirun";
};

// One node of the job and the ranks it runs.
struct NodePlan {
  std::string host;
  int slots = 1;
  int cores = 1;
  int services = 0;
  int workers = 0;
  int ranks() const { return services + workers; }
  int threads_per_rank() const;  // max(1, cores / ranks)
};

struct LaunchPlan {
  std::string host_source;   // "--hosts", "--hostfile F", "SLURM job 123", "local machine"
  bool explicit_hosts = false;  // false: one local node, no --host options
  std::vector<NodePlan> nodes;  // only nodes that run a rank
  int workers = 0;
  int services = 0;
  bool oversubscribe = false;
  std::vector<std::string> argv;  // the mpirun command
};

// "h1:4,h2,h3:2" (a host without :N has 1 slot, as in Open MPI). Errors name the bad item.
std::vector<HostSlots> parse_host_list(const std::string& text);
// Open MPI hostfile: "host [slots=N] [max_slots=M]" per line, '#' comments.
std::vector<HostSlots> read_hostfile(const std::string& path);
// SLURM host list: "n[01-03,07],gpu5" -> n01 n02 n03 n07 gpu5 (zero padding kept).
std::vector<std::string> expand_slurm_hostlist(const std::string& text);
// SLURM per-node counts: "4(x2),8" -> 4 4 8.
std::vector<int> expand_slurm_counts(const std::string& text);

// The hosts the job may use and where they came from: --hosts, --hostfile, the SLURM allocation
// (SLURM_JOB_ID with SLURM_JOB_NODELIST or SLURM_NODELIST; slots from SLURM_TASKS_PER_NODE or
// SLURM_NTASKS_PER_NODE, cores from SLURM_JOB_CPUS_PER_NODE), or none (the local machine).
struct HostSet {
  std::string source;
  std::vector<HostSlots> hosts;
  std::vector<int> cores;  // per host
  bool explicit_hosts = false;
};
HostSet resolve_hosts(const LaunchOptions& options, const LaunchEnvironment& env);

// Places the ranks and builds the command. Checks the rank counts (workers >= 1, 1 <= services <=
// workers, train.batch_size divisible by workers, devices per node); errors name the option or key.
LaunchPlan plan_launch(const Config& config, const LaunchOptions& options, const LaunchEnvironment& env);

// POSIX shell quoting; command_line() joins argv into one copy-pasteable line.
std::string shell_quote(const std::string& word);
std::string command_line(const std::vector<std::string>& argv);

}  // namespace alexnet
