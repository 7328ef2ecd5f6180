// Rank placement and the mpirun command (alexnet_launch_lib), with the uid, hosts and environment
// injected; host-list parsing; the dataset, checkpoint-folder and executable checks.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "launcher/launch_checks.h"
#include "launcher/launch_plan.h"
#include "tests/common/expect.h"

namespace alexnet {
namespace {

namespace fs = std::filesystem;
using Words = std::vector<std::string>;

LaunchEnvironment user_env(int cores = 8) {
  LaunchEnvironment env;
  env.uid = 1000;
  env.local_cores = cores;
  return env;
}

Config config_with_batch(int batch) {
  Config c;
  c.train.batch_size = batch;
  return c;
}

LaunchOptions options(int workers = 0, int services = 0, const std::string& hosts = "") {
  LaunchOptions o;
  o.workers = workers;
  o.services = services;
  o.hosts = hosts;
  o.bin_dir = "/opt/alexnet/bin";
  o.config_path = "/cfg/run.yaml";
  o.overrides = {"data.root=/data/imagenet"};
  return o;
}

// The app contexts of the command (split at ":"), without the global options.
std::vector<Words> contexts(const Words& argv) {
  std::vector<Words> out(1);
  auto it = std::find(argv.begin(), argv.end(), "-np");
  for (; it != argv.end(); ++it) {
    if (*it == ":") {
      out.emplace_back();
    } else {
      out.back().push_back(*it);
    }
  }
  return out;
}
Words globals(const Words& argv) { return Words(argv.begin(), std::find(argv.begin(), argv.end(), "-np")); }
bool has(const Words& w, const std::string& s) { return std::find(w.begin(), w.end(), s) != w.end(); }
std::string after(const Words& w, const std::string& s) {
  auto it = std::find(w.begin(), w.end(), s);
  return it == w.end() || it + 1 == w.end() ? "" : *(it + 1);
}

using testing::error_of;

TEST(LaunchPlan, OneLocalNodeDefaultsToOneServiceAndOneWorker) {
  const LaunchPlan plan = plan_launch(config_with_batch(128), options(), user_env(8));
  EXPECT_EQ(plan.workers, 1);
  EXPECT_EQ(plan.services, 1);
  EXPECT_EQ(plan.host_source, "local machine");
  const Words expected = {"mpirun", "--bind-to", "none", "--stdin", "none",
                          "-np", "1", "--host", "localhost:8", "-x", "OMP_NUM_THREADS=4",
                          "/opt/alexnet/bin/alexnet-data-service", "--config", "/cfg/run.yaml", "--set",
                          "data.root=/data/imagenet", ":",
                          "-np", "1", "--host", "localhost:8", "-x", "OMP_NUM_THREADS=4",
                          "/opt/alexnet/bin/alexnet-worker", "--config", "/cfg/run.yaml", "--set",
                          "data.root=/data/imagenet"};
  EXPECT_EQ(plan.argv, expected);
}

TEST(LaunchPlan, AllowRunAsRootOnlyAsRoot) {
  LaunchEnvironment env = user_env();
  EXPECT_FALSE(has(plan_launch(Config(), options(), env).argv, "--allow-run-as-root"));
  env.uid = 0;
  EXPECT_TRUE(has(globals(plan_launch(Config(), options(), env).argv), "--allow-run-as-root"));
}

TEST(LaunchPlan, OversubscribeOnlyWhenRanksExceedSlots) {
  // 2 cores: a service and one worker fit, a second worker does not.
  EXPECT_FALSE(plan_launch(Config(), options(1), user_env(2)).oversubscribe);
  EXPECT_FALSE(has(plan_launch(Config(), options(1), user_env(2)).argv, "--oversubscribe"));
  const LaunchPlan over = plan_launch(Config(), options(2), user_env(2));
  EXPECT_TRUE(over.oversubscribe);
  EXPECT_TRUE(has(globals(over.argv), "--oversubscribe"));
  // Per node: n1 gets 1 + 2 ranks on 3 slots (fits), n2 1 + 2 on 2 slots (does not).
  EXPECT_FALSE(plan_launch(Config(), options(4, 0, "n1:3,n2:3"), user_env()).oversubscribe);
  EXPECT_TRUE(plan_launch(Config(), options(4, 0, "n1:3,n2:2"), user_env()).oversubscribe);
}

TEST(LaunchPlan, SeveralHostsOneServicePerNodeWorkersSpreadEvenly) {
  const LaunchPlan plan = plan_launch(config_with_batch(60), options(6, 0, "n1:4,n2:4,n3:4"), user_env(12));
  ASSERT_EQ(plan.nodes.size(), 3u);
  EXPECT_EQ(plan.services, 3);
  for (const NodePlan& n : plan.nodes) {
    EXPECT_EQ(n.services, 1) << n.host;
    EXPECT_EQ(n.workers, 2) << n.host;
  }
  const auto ctx = contexts(plan.argv);
  ASSERT_EQ(ctx.size(), 6u);  // services on n1 n2 n3, then workers on n1 n2 n3: ranks 0-2 services
  const char* hosts[] = {"n1:4", "n2:4", "n3:4"};
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(after(ctx[i], "--host"), hosts[i % 3]);
    EXPECT_EQ(after(ctx[i], "-np"), i < 3 ? "1" : "2");
    EXPECT_TRUE(has(ctx[i], i < 3 ? "/opt/alexnet/bin/alexnet-data-service" : "/opt/alexnet/bin/alexnet-worker"));
    EXPECT_EQ(after(ctx[i], "-x"), "OMP_NUM_THREADS=4");  // 12 cores / 3 ranks
  }
  EXPECT_FALSE(plan.oversubscribe);
}

TEST(LaunchPlan, DefaultWorkersFillSlotsLeftByTheService) {
  const LaunchPlan plan = plan_launch(config_with_batch(64), options(0, 0, "a:5,b:5"), user_env());
  EXPECT_EQ(plan.workers, 8);
  EXPECT_EQ(plan.services, 2);
  EXPECT_FALSE(plan.oversubscribe);
}

TEST(LaunchPlan, UnevenSpreadAndFewerWorkersThanHosts) {
  const LaunchPlan five = plan_launch(config_with_batch(10), options(5, 0, "a:8,b:8"), user_env());
  EXPECT_EQ(five.nodes[0].workers, 3);
  EXPECT_EQ(five.nodes[1].workers, 2);
  const LaunchPlan two = plan_launch(config_with_batch(10), options(2, 0, "a:8,b:8,c:8"), user_env());
  ASSERT_EQ(two.nodes.size(), 2u);  // c runs nothing
  EXPECT_EQ(two.services, 2);
  EXPECT_FALSE(has(two.argv, "c:8"));
}

TEST(LaunchPlan, ExplicitServiceCountSpreadOverNodes) {
  const LaunchPlan plan = plan_launch(config_with_batch(8), options(4, 1, "a:4,b:4"), user_env());
  EXPECT_EQ(plan.nodes[0].services, 1);
  EXPECT_EQ(plan.nodes[1].services, 0);
  EXPECT_EQ(contexts(plan.argv).size(), 3u);  // service on a, workers on a and b
  const LaunchPlan local = plan_launch(config_with_batch(8), options(4, 2), user_env(16));
  EXPECT_EQ(local.nodes[0].services, 2);
  EXPECT_EQ(after(contexts(local.argv)[0], "-np"), "2");
}

TEST(LaunchPlan, RankCountErrors) {
  EXPECT_NE(error_of([] { plan_launch(config_with_batch(128), options(3), user_env()); })
                .find("'train.batch_size': 128 is not divisible by the 3 workers"),
            std::string::npos);
  EXPECT_NE(error_of([] { plan_launch(Config(), options(2, 3), user_env()); })
                .find("--data-services 3 exceeds the 2 workers"),
            std::string::npos);
  EXPECT_NE(error_of([] { plan_launch(Config(), options(-1), user_env()); }).find("--workers"), std::string::npos);
  EXPECT_NE(error_of([] { plan_launch(Config(), options(2, 0, "a:2,a:3"), user_env()); }).find("listed twice"),
            std::string::npos);
  EXPECT_NE(error_of([] { plan_launch(Config(), options(2, 0, "a:0"), user_env()); }).find("'a:0'"),
            std::string::npos);
  LaunchOptions both = options(2);
  both.hostfile = "/nonexistent";
  both.hosts = "a:2";
  EXPECT_NE(error_of([&] { plan_launch(Config(), both, user_env()); }).find("exclude each other"),
            std::string::npos);
}

TEST(LaunchPlan, DevicesPerRankAgainstTheNodesGpus) {
  LaunchEnvironment env = user_env();
  env.vars["SLURM_GPUS_ON_NODE"] = "8";
  Config c = config_with_batch(10);
  // 5 workers x 2 GPUs = 10 > 8.
  EXPECT_NE(error_of([&] { plan_launch(c, options(5), env); }).find("'parallel.devices_per_rank'"),
            std::string::npos);
  EXPECT_NO_THROW(plan_launch(config_with_batch(8), options(4), env));
  c.parallel.devices_per_rank = 1;
  EXPECT_NO_THROW(plan_launch(c, options(5), env));
  c.parallel.devices_per_rank = 2;
  c.parallel.backend = BackendKind::kCpu;  // the CPU backend uses no GPU
  EXPECT_NO_THROW(plan_launch(c, options(5), env));

  LaunchEnvironment none = user_env();
  none.vars["CUDA_VISIBLE_DEVICES"] = "";
  Config cuda;
  cuda.parallel.backend = BackendKind::kCuda;
  EXPECT_NE(error_of([&] { plan_launch(cuda, options(1), none); }).find("'parallel.backend' is cuda"),
            std::string::npos);
  EXPECT_NO_THROW(plan_launch(Config(), options(1), none));  // auto falls back to the CPU
  LaunchEnvironment two = user_env();
  two.vars["CUDA_VISIBLE_DEVICES"] = "0,1";
  EXPECT_NO_THROW(plan_launch(cuda, options(1), two));
  EXPECT_THROW(plan_launch(cuda, options(2), two), Error);
}

TEST(LaunchPlan, SlurmAllocationGivesHostsSlotsAndCores) {
  LaunchEnvironment env = user_env(2);
  env.vars["SLURM_JOB_ID"] = "4242";
  env.vars["SLURM_JOB_NODELIST"] = "gpu[01-02,10]";
  env.vars["SLURM_TASKS_PER_NODE"] = "5(x2),3";
  env.vars["SLURM_JOB_CPUS_PER_NODE"] = "40(x3)";
  const LaunchPlan plan = plan_launch(config_with_batch(40), options(), env);
  EXPECT_EQ(plan.host_source, "SLURM job 4242");
  ASSERT_EQ(plan.nodes.size(), 3u);
  EXPECT_EQ(plan.workers, 4 + 4 + 2);
  EXPECT_EQ(plan.services, 3);
  EXPECT_FALSE(plan.oversubscribe);
  const auto ctx = contexts(plan.argv);
  EXPECT_EQ(after(ctx[0], "--host"), "gpu01:5");
  EXPECT_EQ(after(ctx[2], "--host"), "gpu10:3");
  EXPECT_EQ(after(ctx[0], "-x"), "OMP_NUM_THREADS=8");   // 40 cores / 5 ranks
  EXPECT_EQ(after(ctx[2], "-x"), "OMP_NUM_THREADS=13");  // 40 / 3

  // Only SLURM_NTASKS_PER_NODE and the older SLURM_NODELIST.
  LaunchEnvironment older = user_env(16);
  older.vars["SLURM_JOB_ID"] = "7";
  older.vars["SLURM_NODELIST"] = "n1,n2";
  older.vars["SLURM_NTASKS_PER_NODE"] = "3";
  const LaunchPlan p2 = plan_launch(config_with_batch(4), options(), older);
  EXPECT_EQ(p2.workers, 4);
  EXPECT_EQ(after(contexts(p2.argv)[1], "--host"), "n2:3");

  // --hosts wins over the allocation.
  EXPECT_EQ(plan_launch(config_with_batch(4), options(0, 0, "x:3"), env).host_source, "--hosts");
  // Inconsistent counts are an error naming the variable.
  env.vars["SLURM_TASKS_PER_NODE"] = "5(x2)";
  EXPECT_NE(error_of([&] { plan_launch(Config(), options(), env); }).find("SLURM_TASKS_PER_NODE"),
            std::string::npos);
  // Without SLURM_JOB_ID the variables are ignored.
  LaunchEnvironment stray = user_env();
  stray.vars["SLURM_NODELIST"] = "n1,n2";
  EXPECT_EQ(plan_launch(Config(), options(), stray).host_source, "local machine");
}

TEST(LaunchPlan, EnvironmentForwarding) {
  LaunchEnvironment env = user_env();
  env.vars["NCCL_SOCKET_IFNAME"] = "ib0";
  env.vars["LD_LIBRARY_PATH"] = "/opt/lib";
  env.vars["UNRELATED"] = "1";
  const LaunchPlan plan = plan_launch(Config(), options(), env);
  for (const Words& ctx : contexts(plan.argv)) {
    EXPECT_TRUE(has(ctx, "NCCL_SOCKET_IFNAME"));
    EXPECT_TRUE(has(ctx, "LD_LIBRARY_PATH"));
    EXPECT_FALSE(has(ctx, "UNRELATED"));
    EXPECT_TRUE(has(ctx, "OMP_NUM_THREADS=4"));
  }
  env.vars["OMP_NUM_THREADS"] = "3";  // the user's setting is passed on as it is
  for (const Words& ctx : contexts(plan_launch(Config(), options(), env).argv)) {
    EXPECT_EQ(after(ctx, "-x"), "OMP_NUM_THREADS");
  }
}

TEST(LaunchPlan, ResumeGoesToWorkersOnly) {
  LaunchOptions o = options(1);
  o.resume = "auto";
  const auto ctx = contexts(plan_launch(Config(), o, user_env()).argv);
  EXPECT_FALSE(has(ctx[0], "--resume"));
  EXPECT_EQ(after(ctx[1], "--resume"), "auto");
}

TEST(HostLists, SlurmHostlistAndCounts) {
  EXPECT_EQ(expand_slurm_hostlist("n[01-03,07],gpu5"), (Words{"n01", "n02", "n03", "n07", "gpu5"}));
  EXPECT_EQ(expand_slurm_hostlist("a[8-10]"), (Words{"a8", "a9", "a10"}));
  EXPECT_EQ(expand_slurm_hostlist("r[1-2]-ib"), (Words{"r1-ib", "r2-ib"}));
  EXPECT_EQ(expand_slurm_hostlist("single"), (Words{"single"}));
  EXPECT_THROW(expand_slurm_hostlist("n[3-1]"), Error);
  EXPECT_THROW(expand_slurm_hostlist("n[1-2"), Error);
  EXPECT_EQ(expand_slurm_counts("4(x2),8"), (std::vector<int>{4, 4, 8}));
  EXPECT_EQ(expand_slurm_counts("16"), (std::vector<int>{16}));
  EXPECT_THROW(expand_slurm_counts("x(4"), Error);
}

TEST(HostLists, HostListAndHostfile) {
  const auto hosts = parse_host_list("n1:4,n2");
  ASSERT_EQ(hosts.size(), 2u);
  EXPECT_EQ(hosts[0].name, "n1");
  EXPECT_EQ(hosts[0].slots, 4);
  EXPECT_EQ(hosts[1].slots, 1);
  const fs::path dir = fs::temp_directory_path() / ("alexnet_hostfile_" + std::to_string(getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "hosts") << "# cluster\nnode1 slots=6\n\nnode2 slots=2 max_slots=4  # small\nnode3\n";
  const auto file = read_hostfile((dir / "hosts").string());
  ASSERT_EQ(file.size(), 3u);
  EXPECT_EQ(file[0].slots, 6);
  EXPECT_EQ(file[1].name, "node2");
  EXPECT_EQ(file[1].slots, 2);
  EXPECT_EQ(file[2].slots, 1);
  std::ofstream(dir / "bad") << "node1 slots=6\nnode2 cpus=3\n";
  EXPECT_NE(error_of([&] { read_hostfile((dir / "bad").string()); }).find("line 2"), std::string::npos);
  fs::remove_all(dir);
}

TEST(ShellQuote, SafeWordsStayAndOthersAreQuoted) {
  EXPECT_EQ(shell_quote("data.root=/x/y"), "data.root=/x/y");
  EXPECT_EQ(shell_quote("a b"), "'a b'");
  EXPECT_EQ(shell_quote("it's"), "'it'\\''s'");
  EXPECT_EQ(shell_quote(""), "''");
  EXPECT_EQ(command_line({"mpirun", "-np", "2", "$HOME"}), "mpirun -np 2 '$HOME'");
}

class LaunchChecks : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("alexnet_launch_checks_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(LaunchChecks, Dataset) {
  DataConfig data;
  EXPECT_NE(error_of([&] { check_dataset(data); }).find("'data.root': not set"), std::string::npos);
  data.root = (dir_ / "imagenet").string();
  EXPECT_NE(error_of([&] { check_dataset(data); }).find("is not a folder"), std::string::npos);
  fs::create_directories(dir_ / "imagenet");
  EXPECT_NE(error_of([&] { check_dataset(data); }).find("has no train/"), std::string::npos);
  fs::create_directories(dir_ / "imagenet" / "train");
  EXPECT_NE(error_of([&] { check_dataset(data); }).find(".prepared/index.txt not found"), std::string::npos);
  fs::create_directories(dir_ / "imagenet" / ".prepared");
  std::ofstream(dir_ / "imagenet" / ".prepared" / "index.txt") << "alexnet-prepared-index\t1\n";
  EXPECT_NO_THROW(check_dataset(data));
  data.prepared = (dir_ / "prep").string();
  EXPECT_NE(error_of([&] { check_dataset(data); }).find("'data.prepared'"), std::string::npos);
  // A prepared folder alone (no data.root) is enough.
  fs::create_directories(dir_ / "prep");
  std::ofstream(dir_ / "prep" / "index.txt") << "alexnet-prepared-index\t1\n";
  data.root.clear();
  EXPECT_NO_THROW(check_dataset(data));
}

TEST_F(LaunchChecks, CheckpointDir) {
  EXPECT_NO_THROW(check_checkpoint_dir((dir_ / "runs" / "a").string()));
  EXPECT_FALSE(fs::exists(dir_ / "runs"));  // checked, not created
  std::ofstream(dir_ / "file") << "x";
  EXPECT_NE(error_of([&] { check_checkpoint_dir((dir_ / "file" / "ckpt").string()); })
                .find("exists and is not a folder"),
            std::string::npos);
  // /proc refuses new files even to root.
  EXPECT_NE(error_of([] { check_checkpoint_dir("/proc/alexnet-checkpoints"); }).find("is not writable"),
            std::string::npos);
  EXPECT_TRUE(fs::is_empty(dir_ / "file") == false);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);  // probe removed
}

TEST_F(LaunchChecks, ExecutablesAndMpirun) {
  EXPECT_NE(error_of([&] { check_executables(dir_.string()); }).find("alexnet-data-service is missing"),
            std::string::npos);
  for (const char* name : {"alexnet-data-service", "alexnet-worker"}) {
    std::ofstream(dir_ / name) << "#!/bin/sh\n";
  }
  EXPECT_THROW(check_executables(dir_.string()), Error);  // not executable yet
  for (const char* name : {"alexnet-data-service", "alexnet-worker"}) chmod((dir_ / name).c_str(), 0755);
  EXPECT_NO_THROW(check_executables(dir_.string()));
  LaunchEnvironment env = user_env();
  env.vars["PATH"] = "/nonexistent:" + dir_.string();
  EXPECT_EQ(find_mpirun("alexnet-worker", env), (dir_ / "alexnet-worker").string());
  EXPECT_NE(error_of([&] { find_mpirun("no-such-mpirun", env); }).find("not found in PATH"), std::string::npos);
  EXPECT_THROW(find_mpirun((dir_ / "none").string(), env), Error);
}

}  // namespace
}  // namespace alexnet
