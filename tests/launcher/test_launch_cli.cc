// alexnet-launch end to end with a fake mpirun that records its arguments and the signals it gets:
// every pre-flight error stops the launch before mpirun starts; --dry-run prints one line a shell reads
// back into the same words; the job's exit status comes back; SIGTERM/SIGINT reach mpirun as SIGUSR1.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

extern char** environ;

namespace {

namespace fs = std::filesystem;
using Words = std::vector<std::string>;

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_executable(const fs::path& p, const std::string& text) {
  std::ofstream(p) << text;
  chmod(p.c_str(), 0755);
}

struct Result {
  int status = -1;  // exit status, or 128 + signal
  std::string out, err;
};

class LaunchCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("alexnet_launch_cli_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "bin");
    fs::create_directories(dir_ / "data" / "train");
    fs::create_directories(dir_ / "data" / ".prepared");
    std::ofstream(dir_ / "data" / ".prepared" / "index.txt") << "alexnet-prepared-index\t1\n";
    for (const char* name : {"alexnet-data-service", "alexnet-worker"})
      write_executable(dir_ / "bin" / name, "#!/bin/sh\nexit 0\n");
    // The fake mpirun: records its words; with FAKE_WAIT set, traps signals, says it is ready on the
    // FIFO and waits; else exits with FAKE_STATUS.
    write_executable(dir_ / "mpirun", "#!/bin/sh\n"
                                      "for w in \"$@\"; do printf '%s\\n' \"$w\"; done > '" + (dir_ / "calls").string() + "'\n"
                                      "[ -n \"$FAKE_WAIT\" ] || exit \"${FAKE_STATUS:-0}\"\n"
                                      "log='" + (dir_ / "signals").string() + "'\n"
                                      "trap 'echo USR1 >> \"$log\"; exit 75' USR1\n"
                                      "trap 'echo TERM >> \"$log\"; exit 143' TERM\n"
                                      "trap 'echo INT >> \"$log\"; exit 130' INT\n"
                                      "echo ready > '" + (dir_ / "ready").string() + "'\n"
                                      "while :; do sleep 5 & wait $!; done\n");
    std::ofstream(dir_ / "run.yaml") << "train:\n  batch_size: 8\n";
  }
  void TearDown() override { fs::remove_all(dir_); }

  Words base_args(const std::string& config = "", const std::string& bin = "") const {
    return {"--config", config.empty() ? (dir_ / "run.yaml").string() : config, "--set", "data.root=" + (dir_ / "data").string(),
            "--set", "checkpoint.dir=" + (dir_ / "ckpt").string(), "--bin-dir", bin.empty() ? (dir_ / "bin").string() : bin,
            "--mpirun", (dir_ / "mpirun").string()};
  }

  // Starts alexnet-launch with `args` and extra environment; stdout/stderr go to files.
  pid_t start(const Words& args, const Words& env_extra = {}) {
    Words words = {ALEXNET_LAUNCH_BIN};
    words.insert(words.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& w : words) argv.push_back(w.data());
    argv.push_back(nullptr);
    Words env_words;
    for (char** e = environ; *e != nullptr; ++e) {
      std::string kv = *e;
      if (kv.rfind("SLURM_", 0) == 0 || kv.rfind("FAKE_", 0) == 0) continue;
      env_words.push_back(kv);
    }
    env_words.insert(env_words.end(), env_extra.begin(), env_extra.end());
    std::vector<char*> envp;
    for (std::string& w : env_words) envp.push_back(w.data());
    envp.push_back(nullptr);
    const std::string out = (dir_ / "stdout").string(), err = (dir_ / "stderr").string();
    pid_t pid = fork();
    if (pid == 0) {
      int o = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      int e = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(o, 1);
      dup2(e, 2);
      execve(argv[0], argv.data(), envp.data());
      _exit(126);
    }
    return pid;
  }
  Result finish(pid_t pid) {
    Result r;
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
    }
    r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    r.out = slurp(dir_ / "stdout");
    r.err = slurp(dir_ / "stderr");
    return r;
  }
  Result run(const Words& args, const Words& env_extra = {}) { return finish(start(args, env_extra)); }
  bool mpirun_started() const { return fs::exists(dir_ / "calls"); }

  // A pre-flight failure: nonzero status, the message names `what`, and mpirun never ran.
  void expect_refused(const Words& extra, const std::string& what, const std::string& config = "",
                      const std::string& bin = "") {
    Words args = base_args(config, bin);
    args.insert(args.end(), extra.begin(), extra.end());
    const Result r = run(args);
    EXPECT_NE(r.status, 0) << what;
    EXPECT_NE(r.err.find(what), std::string::npos) << "stderr: " << r.err;
    EXPECT_FALSE(mpirun_started()) << what;
  }

  fs::path dir_;
};

TEST_F(LaunchCli, EveryPreflightErrorStopsBeforeMpirunStarts) {
  std::ofstream(dir_ / "bad.yaml") << "model:\n  num_classes: 10\n  nrm: lrn\n";
  expect_refused({}, "'model.nrm' (" + (dir_ / "bad.yaml").string() + " line 3)", (dir_ / "bad.yaml").string());
  std::ofstream(dir_ / "type.yaml") << "train:\n  batch_size: many\n";
  expect_refused({}, "'train.batch_size'", (dir_ / "type.yaml").string());
  expect_refused({"--set", "data.root=" + (dir_ / "nodata").string()}, "config key 'data.root'");
  fs::remove(dir_ / "data" / ".prepared" / "index.txt");
  expect_refused({}, "index.txt not found");
  std::ofstream(dir_ / "data" / ".prepared" / "index.txt") << "alexnet-prepared-index\t1\n";
  std::ofstream(dir_ / "plainfile") << "x";
  expect_refused({"--set", "checkpoint.dir=" + (dir_ / "plainfile" / "ckpt").string()}, "'checkpoint.dir'");
  expect_refused({"--set", "checkpoint.dir=/proc/alexnet-ckpt"}, "is not writable");
  expect_refused({"--workers", "3"}, "'train.batch_size': 8 is not divisible by the 3 workers");
  expect_refused({"--workers", "2", "--data-services", "3"}, "--data-services 3 exceeds the 2 workers");
  expect_refused({"--workers", "0"}, "--workers must be >= 1");
  expect_refused({}, "alexnet-data-service is missing", "", (dir_ / "data").string());
  expect_refused({"--hosts", "a:2,a:2"}, "listed twice");
  EXPECT_FALSE(fs::exists(dir_ / "ckpt"));
}

TEST_F(LaunchCli, DryRunPrintsOneLineThatAShellReadsBack) {
  Words args = base_args();
  const std::string odd = "data.val_ground_truth=" + (dir_ / "it's a file.txt").string();
  args.insert(args.end(), {"--dry-run", "--workers", "2", "--hosts", "n1:2,n2:2", "--set", odd, "--resume", "auto"});
  const Result r = run(args, {"NCCL_DEBUG=WARN"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_FALSE(mpirun_started());
  ASSERT_EQ(r.out.find('\n'), r.out.size() - 1) << "one line: " << r.out;
  // The shell splits and unquotes the line; print one word per line.
  std::ofstream(dir_ / "parse.sh") << "set -- " << r.out << "for w in \"$@\"; do printf '%s\\n' \"$w\"; done\n";
  std::string words_text;
  {
    FILE* p = popen(("sh '" + (dir_ / "parse.sh").string() + "'").c_str(), "r");
    ASSERT_NE(p, nullptr);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), p)) > 0) words_text.append(buf, n);
    ASSERT_EQ(pclose(p), 0);
  }
  Words words;
  std::istringstream lines(words_text);
  for (std::string w; std::getline(lines, w);) words.push_back(w);
  ASSERT_FALSE(words.empty());
  EXPECT_EQ(words[0], (dir_ / "mpirun").string());
  // Four app contexts: a service and a worker on each of n1 and n2, each with the rank arguments.
  int contexts = 1, odd_seen = 0, configs = 0, resumes = 0, nccl = 0;
  for (size_t i = 0; i < words.size(); ++i) {
    contexts += words[i] == ":";
    odd_seen += words[i] == odd;
    configs += words[i] == (dir_ / "run.yaml").string();
    resumes += words[i] == "--resume";
    nccl += words[i] == "NCCL_DEBUG";
  }
  EXPECT_EQ(contexts, 4);
  EXPECT_EQ(odd_seen, 4);
  EXPECT_EQ(configs, 4);
  EXPECT_EQ(resumes, 2);
  EXPECT_EQ(nccl, 4);
  const bool root = getuid() == 0;
  EXPECT_EQ(std::count(words.begin(), words.end(), "--allow-run-as-root"), root ? 1 : 0);
  EXPECT_EQ(std::count(words.begin(), words.end(), "--oversubscribe"), 0);  // 1 + 1 ranks on 2 slots
}

TEST_F(LaunchCli, RunsMpirunAndReturnsTheJobsExitStatus) {
  const Result ok = run(base_args());
  EXPECT_EQ(ok.status, 0) << ok.err;
  const std::string calls = slurp(dir_ / "calls");
  EXPECT_NE(calls.find((dir_ / "bin" / "alexnet-worker").string()), std::string::npos);
  EXPECT_NE(calls.find((dir_ / "bin" / "alexnet-data-service").string()), std::string::npos);
  EXPECT_EQ(run(base_args(), {"FAKE_STATUS=3"}).status, 3);
  EXPECT_EQ(run(base_args(), {"FAKE_STATUS=75"}).status, 75);
}

TEST_F(LaunchCli, SlurmAllocationNodesAreUsed) {
  Words args = base_args();
  args.push_back("--dry-run");
  const Result r = run(args, {"SLURM_JOB_ID=99", "SLURM_JOB_NODELIST=c[1-2]", "SLURM_TASKS_PER_NODE=5(x2)"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("--host c1:5"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--host c2:5"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("8 workers, 2 data services on 2 node(s) from SLURM job 99"), std::string::npos) << r.err;
}

// The signal `sig` sent to alexnet-launch reaches the fake mpirun as SIGUSR1, and the launcher exits with
// the status mpirun exits with (75: checkpointed on signal).
class LaunchSignals : public LaunchCli {
 protected:
  void check(int sig) {
    mkfifo((dir_ / "ready").c_str(), 0600);
    const pid_t pid = start(base_args(), {"FAKE_WAIT=1"});
    {
      // Blocks until the fake mpirun has set its traps and opened the FIFO.
      std::ifstream ready(dir_ / "ready");
      std::string line;
      std::getline(ready, line);
      ASSERT_EQ(line, "ready");
    }
    ASSERT_EQ(kill(pid, sig), 0);
    const Result r = finish(pid);
    EXPECT_EQ(r.status, 75) << r.err;
    EXPECT_EQ(slurp(dir_ / "signals"), "USR1\n");
    EXPECT_NE(r.err.find("checkpointed on signal"), std::string::npos) << r.err;
  }
};

TEST_F(LaunchSignals, SigtermReachesMpirunAsUsr1) { check(SIGTERM); }
TEST_F(LaunchSignals, SigintReachesMpirunAsUsr1) { check(SIGINT); }

}  // namespace
