// CPU thread count: one OpenMP pool shared by our kernels and oneDNN.
#include "core/threads.h"

#include <omp.h>
#include <sched.h>

namespace alexnet {

int available_cpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  return omp_get_num_procs();
}

int set_cpu_threads(int threads) {
  int n = threads > 0 ? threads : available_cpus();
  omp_set_num_threads(n);
  return n;
}

int cpu_threads() { return omp_get_max_threads(); }

}  // namespace alexnet
