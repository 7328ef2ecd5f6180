// Host lists (--hosts, Open MPI hostfiles, SLURM allocations), rank placement and the mpirun command.
#include "launcher/launch_plan.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "core/error.h"

extern char** environ;

namespace alexnet {
namespace {

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// A whole decimal integer, or -1.
long parse_count(const std::string& text) {
  if (text.empty() || text.size() > 9) return -1;
  for (char c : text)
    if (!std::isdigit(static_cast<unsigned char>(c))) return -1;
  return std::stol(text);
}

// Splits at commas outside brackets ("n[1-2,5],m" -> "n[1-2,5]", "m").
std::vector<std::string> split_top_level(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  int depth = 0;
  for (char c : text) {
    if (c == '[') ++depth;
    if (c == ']') --depth;
    if (c == ',' && depth == 0) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(cur);
  return out;
}

void check_unique(const std::vector<HostSlots>& hosts, const std::string& source) {
  std::set<std::string> seen;
  for (const HostSlots& h : hosts)
    ALEXNET_CHECK(seen.insert(h.name).second, source, ": host '", h.name, "' is listed twice");
}

// Splits `total` into `parts` runs, the first `total % parts` one larger.
int even_share(int total, int parts, int i) { return total / parts + (i < total % parts ? 1 : 0); }

// GPUs per node when the environment says (SLURM_GPUS_ON_NODE, else CUDA_VISIBLE_DEVICES); -1: unknown.
int known_gpus_per_node(const LaunchEnvironment& env, std::string* from) {
  if (env.has("SLURM_GPUS_ON_NODE")) {
    long n = parse_count(trim(env.get("SLURM_GPUS_ON_NODE")));
    if (n >= 0) {
      *from = "SLURM_GPUS_ON_NODE=" + env.get("SLURM_GPUS_ON_NODE");
      return static_cast<int>(n);
    }
  }
  if (env.has("CUDA_VISIBLE_DEVICES")) {
    const std::string v = trim(env.get("CUDA_VISIBLE_DEVICES"));
    int n = 0;
    if (!v.empty() && v != "-1" && v != "none") {
      for (const std::string& item : split_top_level(v))
        if (!trim(item).empty()) ++n;
    }
    *from = "CUDA_VISIBLE_DEVICES='" + v + "'";
    return n;
  }
  return -1;
}

bool forwarded_variable(const std::string& name) {
  static const std::set<std::string> kNames = {"PATH", "LD_LIBRARY_PATH", "TMPDIR", "OMP_PROC_BIND",
                                                "OMP_PLACES"};
  static const char* kPrefixes[] = {"NCCL_", "UCX_", "ALEXNET_"};
  if (kNames.count(name)) return true;
  for (const char* p : kPrefixes)
    if (name.rfind(p, 0) == 0) return true;
  return false;
}

}  // namespace

LaunchEnvironment LaunchEnvironment::current() {
  LaunchEnvironment env;
  env.uid = static_cast<int>(getuid());
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  env.local_cores = cores > 0 ? static_cast<int>(cores) : 1;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string kv = *e;
    size_t eq = kv.find('=');
    if (eq == std::string::npos) continue;
    env.vars[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return env;
}

std::string LaunchEnvironment::get(const std::string& name) const {
  auto it = vars.find(name);
  return it == vars.end() ? "" : it->second;
}

int NodePlan::threads_per_rank() const { return std::max(1, ranks() > 0 ? cores / ranks() : cores); }

std::vector<HostSlots> parse_host_list(const std::string& text) {
  std::vector<HostSlots> hosts;
  for (const std::string& raw : split_top_level(text)) {
    const std::string item = trim(raw);
    ALEXNET_CHECK(!item.empty(), "--hosts '", text, "': empty host name (expected h1:slots,h2:slots)");
    HostSlots h;
    size_t colon = item.rfind(':');
    h.name = item.substr(0, colon);
    if (colon != std::string::npos) {
      long n = parse_count(item.substr(colon + 1));
      ALEXNET_CHECK(n >= 1, "--hosts: '", item, "': the slot count after ':' must be a whole number >= 1");
      h.slots = static_cast<int>(n);
    }
    ALEXNET_CHECK(!h.name.empty(), "--hosts: '", item, "' has no host name");
    hosts.push_back(h);
  }
  check_unique(hosts, "--hosts");
  return hosts;
}

std::vector<HostSlots> read_hostfile(const std::string& path) {
  std::ifstream in(path);
  ALEXNET_CHECK(in.good(), "--hostfile ", path, ": cannot be read");
  std::vector<HostSlots> hosts;
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    line = trim(line.substr(0, line.find('#')));
    if (line.empty()) continue;
    std::istringstream words(line);
    HostSlots h;
    words >> h.name;
    std::string word;
    while (words >> word) {
      size_t eq = word.find('=');
      const std::string key = word.substr(0, eq);
      long n = eq == std::string::npos ? -1 : parse_count(word.substr(eq + 1));
      if (key == "slots" || key == "max_slots" || key == "max-slots") {
        ALEXNET_CHECK(n >= 1, "--hostfile ", path, " line ", number, ": '", word, "' needs a whole number >= 1");
        if (key == "slots") h.slots = static_cast<int>(n);
      } else {
        ALEXNET_FAIL("--hostfile ", path, " line ", number, ": unknown field '", word,
                     "' (expected: host [slots=N] [max_slots=M])");
      }
    }
    hosts.push_back(h);
  }
  ALEXNET_CHECK(!hosts.empty(), "--hostfile ", path, ": lists no host");
  check_unique(hosts, "--hostfile " + path);
  return hosts;
}

std::vector<std::string> expand_slurm_hostlist(const std::string& text) {
  std::vector<std::string> out;
  for (const std::string& raw : split_top_level(trim(text))) {
    const std::string item = trim(raw);
    if (item.empty()) continue;
    size_t open = item.find('[');
    if (open == std::string::npos) {
      out.push_back(item);
      continue;
    }
    size_t close = item.find(']', open);
    ALEXNET_CHECK(close != std::string::npos, "SLURM host list '", text, "': unbalanced '[' in '", item, "'");
    const std::string prefix = item.substr(0, open);
    const std::string suffix = item.substr(close + 1);
    for (const std::string& range : split_top_level(item.substr(open + 1, close - open - 1))) {
      size_t dash = range.find('-');
      const std::string lo = range.substr(0, dash);
      const std::string hi = dash == std::string::npos ? lo : range.substr(dash + 1);
      long a = parse_count(lo), b = parse_count(hi);
      ALEXNET_CHECK(a >= 0 && b >= a, "SLURM host list '", text, "': bad range '", range, "'");
      for (long k = a; k <= b; ++k) {
        std::string digits = std::to_string(k);
        if (digits.size() < lo.size()) digits.insert(0, lo.size() - digits.size(), '0');
        // Further bracket groups in the suffix ("r[1-2]n[1-3]") expand recursively.
        for (const std::string& tail : expand_slurm_hostlist(suffix.empty() ? "" : suffix))
          out.push_back(prefix + digits + tail);
        if (suffix.empty()) out.push_back(prefix + digits);
      }
    }
  }
  return out;
}

std::vector<int> expand_slurm_counts(const std::string& text) {
  std::vector<int> out;
  for (const std::string& raw : split_top_level(trim(text))) {
    const std::string item = trim(raw);
    size_t paren = item.find("(x");
    long n = parse_count(item.substr(0, paren));
    long repeat = 1;
    if (paren != std::string::npos) {
      ALEXNET_CHECK(item.back() == ')', "SLURM count list '", text, "': bad item '", item, "'");
      repeat = parse_count(item.substr(paren + 2, item.size() - paren - 3));
    }
    ALEXNET_CHECK(n >= 0 && repeat >= 1, "SLURM count list '", text, "': bad item '", item, "'");
    for (long r = 0; r < repeat; ++r) out.push_back(static_cast<int>(n));
  }
  return out;
}

HostSet resolve_hosts(const LaunchOptions& options, const LaunchEnvironment& env) {
  HostSet set;
  ALEXNET_CHECK(options.hosts.empty() || options.hostfile.empty(),
                "--hosts and --hostfile exclude each other; give one");
  if (!options.hosts.empty() || !options.hostfile.empty()) {
    set.hosts = !options.hosts.empty() ? parse_host_list(options.hosts) : read_hostfile(options.hostfile);
    set.source = !options.hosts.empty() ? "--hosts" : "--hostfile " + options.hostfile;
    set.cores.assign(set.hosts.size(), env.local_cores);  // nodes assumed alike this one
    set.explicit_hosts = true;
    return set;
  }
  const std::string nodelist =
      env.has("SLURM_JOB_NODELIST") ? env.get("SLURM_JOB_NODELIST") : env.get("SLURM_NODELIST");
  if (env.has("SLURM_JOB_ID") && !nodelist.empty()) {
    const std::vector<std::string> names = expand_slurm_hostlist(nodelist);
    ALEXNET_CHECK(!names.empty(), "SLURM_JOB_NODELIST '", nodelist, "' names no node");
    std::vector<int> slots(names.size(), 1);
    if (env.has("SLURM_TASKS_PER_NODE")) {
      std::vector<int> per = expand_slurm_counts(env.get("SLURM_TASKS_PER_NODE"));
      ALEXNET_CHECK(per.size() == names.size(), "SLURM_TASKS_PER_NODE '", env.get("SLURM_TASKS_PER_NODE"),
                    "' gives ", per.size(), " counts for ", names.size(), " nodes (", nodelist, ")");
      slots = per;
    } else if (env.has("SLURM_NTASKS_PER_NODE")) {
      long n = parse_count(trim(env.get("SLURM_NTASKS_PER_NODE")));
      ALEXNET_CHECK(n >= 1, "SLURM_NTASKS_PER_NODE '", env.get("SLURM_NTASKS_PER_NODE"), "' is not a count >= 1");
      slots.assign(names.size(), static_cast<int>(n));
    }
    set.cores.assign(names.size(), env.local_cores);
    if (env.has("SLURM_JOB_CPUS_PER_NODE")) {
      std::vector<int> cpus = expand_slurm_counts(env.get("SLURM_JOB_CPUS_PER_NODE"));
      if (cpus.size() == names.size()) set.cores = cpus;
    }
    for (size_t i = 0; i < names.size(); ++i) set.hosts.push_back({names[i], std::max(1, slots[i])});
    set.source = "SLURM job " + env.get("SLURM_JOB_ID");
    set.explicit_hosts = true;
    return set;
  }
  set.hosts.push_back({"localhost", env.local_cores});
  set.cores.push_back(env.local_cores);
  set.source = "local machine";
  return set;
}

LaunchPlan plan_launch(const Config& config, const LaunchOptions& options, const LaunchEnvironment& env) {
  const HostSet hosts = resolve_hosts(options, env);
  ALEXNET_CHECK(options.workers >= 0, "--workers must be >= 1, got ", options.workers);
  ALEXNET_CHECK(options.services >= 0, "--data-services must be >= 1, got ", options.services);
  const int num_hosts = static_cast<int>(hosts.hosts.size());

  // Workers per host: given, spread evenly; by default one per slot left after the host's service
  // (at least one), or a single worker on the local machine.
  std::vector<int> workers(num_hosts, 0);
  if (options.workers > 0) {
    for (int i = 0; i < num_hosts; ++i) workers[i] = even_share(options.workers, num_hosts, i);
  } else if (hosts.explicit_hosts) {
    for (int i = 0; i < num_hosts; ++i) workers[i] = std::max(1, hosts.hosts[i].slots - 1);
  } else {
    workers[0] = 1;
  }
  LaunchPlan plan;
  plan.host_source = hosts.source;
  for (int i = 0; i < num_hosts; ++i) {
    if (workers[i] == 0) continue;  // fewer workers than hosts: the first hosts only
    NodePlan node;
    node.host = hosts.hosts[i].name;
    node.slots = hosts.hosts[i].slots;
    node.cores = hosts.cores[i];
    node.workers = workers[i];
    plan.nodes.push_back(node);
    plan.workers += workers[i];
  }
  const int used = static_cast<int>(plan.nodes.size());
  plan.services = options.services > 0 ? options.services : used;
  ALEXNET_CHECK(plan.services <= plan.workers, "--data-services ", plan.services, " exceeds the ", plan.workers,
                " workers: a data service serves at least one worker");
  for (int i = 0; i < used; ++i) plan.nodes[i].services = even_share(plan.services, used, i);

  const int batch = config.train.batch_size;
  ALEXNET_CHECK(batch % plan.workers == 0, "config key 'train.batch_size': ", batch,
                " is not divisible by the ", plan.workers, " workers (each worker takes batch_size / workers)");

  // Devices: a worker rank drives parallel.devices_per_rank GPUs of its node.
  std::string gpu_source;
  const int gpus = known_gpus_per_node(env, &gpu_source);
  const BackendKind backend = config.parallel.backend;
  if (gpus >= 0 && backend != BackendKind::kCpu) {
    ALEXNET_CHECK(!(backend == BackendKind::kCuda && gpus == 0), "config key 'parallel.backend' is cuda but ",
                  gpu_source, " gives no GPU");
    if (gpus > 0) {
      for (const NodePlan& node : plan.nodes) {
        const int need = node.workers * config.parallel.devices_per_rank;
        ALEXNET_CHECK(need <= gpus, "config key 'parallel.devices_per_rank': ", node.workers, " workers on ",
                      node.host, " x ", config.parallel.devices_per_rank, " GPUs each = ", need, " GPUs, but ",
                      gpu_source, " gives ", gpus, " per node; use fewer --workers or devices_per_rank 1");
      }
    }
  }

  // The command: one app context per (role, node), so every rank lands on the node chosen here;
  // services first (ranks 0..D-1), then workers in node order (ranks D..D+W-1).
  std::vector<std::string>& a = plan.argv;
  a.push_back(options.mpirun);
  if (env.uid == 0) a.push_back("--allow-run-as-root");
  for (const NodePlan& node : plan.nodes) plan.oversubscribe = plan.oversubscribe || node.ranks() > node.slots;
  if (plan.oversubscribe) a.push_back("--oversubscribe");
  // The ranks size their own thread pools (OMP_NUM_THREADS below); Open MPI's default binding would pin
  // each to one core or socket.
  a.insert(a.end(), {"--bind-to", "none"});
  // mpirun runs in its own process group (run_job), away from the terminal: it must not read stdin.
  a.insert(a.end(), {"--stdin", "none"});
  std::vector<std::string> forwarded;
  for (const auto& [name, value] : env.vars)
    if (forwarded_variable(name)) forwarded.push_back(name);

  std::vector<std::string> rank_args;
  if (!options.config_path.empty())
    rank_args.insert(rank_args.end(), {"--config", std::filesystem::absolute(options.config_path).string()});
  for (const std::string& o : options.overrides) rank_args.insert(rank_args.end(), {"--set", o});
  const std::string bin = options.bin_dir.empty() ? std::string(".") : options.bin_dir;

  bool first = true;
  auto add_context = [&](const NodePlan& node, int count, const std::string& program, bool worker) {
    if (count == 0) return;
    if (!first) a.push_back(":");
    first = false;
    a.insert(a.end(), {"-np", std::to_string(count), "--host", node.host + ":" + std::to_string(node.slots)});
    if (env.has("OMP_NUM_THREADS"))
      a.insert(a.end(), {"-x", "OMP_NUM_THREADS"});
    else
      a.insert(a.end(), {"-x", "OMP_NUM_THREADS=" + std::to_string(node.threads_per_rank())});
    for (const std::string& name : forwarded) a.insert(a.end(), {"-x", name});
    a.push_back(bin + "/" + program);
    a.insert(a.end(), rank_args.begin(), rank_args.end());
    if (worker && !options.resume.empty()) a.insert(a.end(), {"--resume", options.resume});
    if (worker && options.eval_only) a.push_back("--eval-only");
  };
  for (const NodePlan& node : plan.nodes) add_context(node, node.services, "alexnet-data-service", false);
  for (const NodePlan& node : plan.nodes) add_context(node, node.workers, "alexnet-worker", true);
  return plan;
}

std::string shell_quote(const std::string& word) {
  static const std::string kSafe =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./:=,@%+-";
  if (!word.empty() && word.find_first_not_of(kSafe) == std::string::npos) return word;
  std::string out = "'";
  for (char c : word) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  out += '\'';
  return out;
}

std::string command_line(const std::vector<std::string>& argv) {
  std::string line;
  for (const std::string& w : argv) {
    if (!line.empty()) line += ' ';
    line += shell_quote(w);
  }
  return line;
}

}  // namespace alexnet
