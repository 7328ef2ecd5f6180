// fork/exec of mpirun with signal forwarding (see run_job.h).
#include "launcher/run_job.h"

#include <fcntl.h>
#include <sys/prctl.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace alexnet {
namespace {

volatile sig_atomic_t g_child = 0;
volatile sig_atomic_t g_stop_requests = 0;
// When the first stop request arrived (read and written only by the handler, which never nests).
timespec g_first_stop{};

// A stop request this soon after the first is the same request: timeout(1) and shells send a signal to
// the process and then to its process group, so one stop often arrives twice within microseconds.
constexpr double kRepeatedStopS = 0.5;

// Only async-signal-safe calls here (kill, clock_gettime).
void forward_signal(int sig) {
  const pid_t child = g_child;
  if (child <= 0) return;
  if (sig == SIGTERM || sig == SIGINT) {
    timespec now{};
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (g_stop_requests == 0) {
      g_first_stop = now;
    } else if (static_cast<double>(now.tv_sec - g_first_stop.tv_sec) +
                   1e-9 * static_cast<double>(now.tv_nsec - g_first_stop.tv_nsec) <
               kRepeatedStopS) {
      return;
    }
    g_stop_requests = g_stop_requests + 1;
    kill(child, g_stop_requests == 1 ? SIGUSR1 : sig);
  } else {
    kill(child, sig);
  }
}

constexpr int kForwarded[] = {SIGTERM, SIGINT, SIGUSR1, SIGHUP};

}  // namespace

int run_job(const std::vector<std::string>& argv) {
  ALEXNET_CHECK(!argv.empty(), "run_job: empty command");
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);

  // Signals stay blocked from before the fork until g_child is set, so none is lost or sent to pid 0.
  sigset_t block, old;
  sigemptyset(&block);
  for (int s : kForwarded) sigaddset(&block, s);
  sigprocmask(SIG_BLOCK, &block, &old);
  struct sigaction act {};
  act.sa_handler = forward_signal;
  act.sa_mask = block;  // handlers do not nest: the stop count stays exact
  act.sa_flags = SA_RESTART;
  struct sigaction previous[4];
  for (int i = 0; i < 4; ++i) sigaction(kForwarded[i], &act, &previous[i]);

  // A pipe closed on exec tells the parent whether execvp succeeded.
  int status_pipe[2];
  ALEXNET_CHECK(pipe2(status_pipe, O_CLOEXEC) == 0, "pipe: ", std::strerror(errno));
  const pid_t pid = fork();
  if (pid < 0) {
    const int err = errno;
    sigprocmask(SIG_SETMASK, &old, nullptr);
    ALEXNET_FAIL("fork: ", std::strerror(err));
  }
  if (pid == 0) {
    // Own process group: a Ctrl-C on the terminal reaches only the launcher, which turns it into USR1.
    setpgid(0, 0);
    // If the launcher dies without passing a signal on (SIGKILL), mpirun is told to stop.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    for (int i = 0; i < 4; ++i) sigaction(kForwarded[i], &previous[i], nullptr);
    sigprocmask(SIG_SETMASK, &old, nullptr);
    close(status_pipe[0]);
    execvp(args[0], args.data());
    const int err = errno;
    ssize_t ignored = write(status_pipe[1], &err, sizeof(err));
    (void)ignored;
    _exit(127);
  }
  g_child = pid;
  sigprocmask(SIG_SETMASK, &old, nullptr);
  close(status_pipe[1]);
  int exec_errno = 0;
  ssize_t got;
  do {
    got = read(status_pipe[0], &exec_errno, sizeof(exec_errno));
  } while (got < 0 && errno == EINTR);
  close(status_pipe[0]);

  int status = 0;
  pid_t r;
  do {
    r = waitpid(pid, &status, 0);
  } while (r < 0 && errno == EINTR);
  sigprocmask(SIG_BLOCK, &block, nullptr);
  g_child = 0;
  for (int i = 0; i < 4; ++i) sigaction(kForwarded[i], &previous[i], nullptr);
  sigprocmask(SIG_SETMASK, &old, nullptr);
  ALEXNET_CHECK(got != static_cast<ssize_t>(sizeof(exec_errno)), "cannot start ", argv[0], ": ",
                std::strerror(exec_errno));
  ALEXNET_CHECK(r == pid, "waitpid: ", std::strerror(errno));
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace alexnet
