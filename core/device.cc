// Device discovery: the one place that asks whether this build has CUDA.
#include "core/device.h"

#include <atomic>

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

namespace {
std::atomic<int64_t> g_device_allocations{0}, g_host_allocations{0}, g_host_waits{0};
}  // namespace

CudaActivity cuda_activity() {
  CudaActivity a;
  a.device_allocations = g_device_allocations.load();
  a.host_allocations = g_host_allocations.load();
  a.host_waits = g_host_waits.load();
  return a;
}
void count_cuda_device_allocation() { ++g_device_allocations; }
void count_cuda_host_allocation() { ++g_host_allocations; }
void count_cuda_host_wait() { ++g_host_waits; }

namespace {
thread_local void* t_ready_event = nullptr;
}  // namespace

CudaReadyEventScope::CudaReadyEventScope(void* event) : previous_(t_ready_event) { t_ready_event = event; }
CudaReadyEventScope::~CudaReadyEventScope() { t_ready_event = previous_; }
void* cuda_ready_event() { return t_ready_event; }

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
