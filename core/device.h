// Which compute devices this process has. A build with CUDA still runs without a GPU (CPU backend).
#pragma once

#include <string>

namespace alexnet {

bool built_with_cuda();
// Number of usable CUDA devices (0 without a GPU, a driver, or CUDA support in this build).
int cuda_device_count();
// One line for the log: what was found and which backend that implies.
std::string device_summary();

}  // namespace alexnet
