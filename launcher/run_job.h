// Runs the job's mpirun as a child process and passes signals on so that a stop request reaches the
// workers as SIGUSR1 (checkpoint, then exit) instead of mpirun's SIGTERM (ranks killed ~1 s later).
#pragma once

#include <string>
#include <vector>

namespace alexnet {

// Starts argv[0] (looked up in PATH when it has no '/') with argv, in its own process group, and waits.
// While it runs: the first SIGTERM or SIGINT is sent on as SIGUSR1, later ones as they are; SIGUSR1
// and SIGHUP are sent on as they are. Returns the child's exit status, or 128 + N when signal N ended
// it (the shell's convention). Throws alexnet::Error when the program cannot be started.
int run_job(const std::vector<std::string>& argv);

}  // namespace alexnet
