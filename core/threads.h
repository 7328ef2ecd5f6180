// CPU thread count for our kernels and oneDNN (both run on the OpenMP runtime).
#pragma once

namespace alexnet {

// Sets the number of CPU threads; 0 means all hardware threads. Returns the count in use.
int set_cpu_threads(int threads);
int cpu_threads();
// Hardware threads available to this process (its CPU affinity mask).
int available_cpus();

}  // namespace alexnet
