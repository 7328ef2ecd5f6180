// Device discovery: the one place that asks whether this build has CUDA.
#include "core/device.h"

#include "core/error.h"

namespace alexnet {

#if defined(ALEXNET_WITH_CUDA)
int cuda_device_count_impl(std::string* why);  // device_cuda.cu
bool built_with_cuda() { return true; }
#else
static int cuda_device_count_impl(std::string* why) {
  *why = "this build has no CUDA support";
  return 0;
}
bool built_with_cuda() { return false; }
CudaDevicePeak cuda_device_peak(int device) {
  ALEXNET_FAIL("GPU ", device, ": this build has no CUDA support");
}
uint64_t cuda_device_pci_id(int device) {
  ALEXNET_FAIL("GPU ", device, ": this build has no CUDA support");
}
#endif

int cuda_device_count() {
  std::string why;
  return cuda_device_count_impl(&why);
}

std::string device_summary() {
  std::string why;
  int n = cuda_device_count_impl(&why);
  if (n > 0) return str_cat(n, " CUDA device(s) found");
  return str_cat("no CUDA device (", why, "): using the CPU backend");
}

}  // namespace alexnet
