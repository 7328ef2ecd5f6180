// Which compute devices this process has. A build with CUDA still runs without a GPU (CPU backend).
#pragma once

#include <cstdint>
#include <string>

namespace alexnet {

bool built_with_cuda();
// Number of usable CUDA devices (0 without a GPU, a driver, or CUDA support in this build).
int cuda_device_count();
// One line for the log: what was found and which backend that implies.
std::string device_summary();

// What a CUDA device can do at most, for benchmarks: its name, SM count, the peak clock the driver
// reports, and its peak dense arithmetic rates in TFLOP/s: SMs x the per-SM FLOP per clock of its
// architecture x that clock. The per-SM rates (NVIDIA's A100 and H100 architecture papers): sm_80
// 128 float32 (FMA units), 1024 TF32, 2048 bf16 (tensor cores, dense); sm_90 256, 2048, 4096. Other
// architectures leave the rates 0. NVIDIA's datasheets quote the tensor rates at a lower clock than
// the peak one, so these are upper bounds (H100 SXM at 1.98 GHz: 535 TF32 vs the 495 quoted).
struct CudaDevicePeak {
  std::string name;
  int sms = 0;
  double clock_ghz = 0;
  double fp32_tflops = 0, tf32_tflops = 0, bf16_tflops = 0;
};
// Errors name the device; without CUDA in the build, an error.
CudaDevicePeak cuda_device_peak(int device);

// Where CUDA device `device` (an index among this process's visible devices) sits on the PCI bus, as
// domain << 32 | bus << 16 | device << 8 (function 0): the same number for one GPU in every process of
// the host, whatever their CUDA_VISIBLE_DEVICES. Without CUDA in the build, an error.
uint64_t cuda_device_pci_id(int device);

// What this process's CUDA backend has done since it started, for the checks that a training step after
// the first few allocates nothing and that the host waits for a GPU only where it reads a result (the loss):
//   device_allocations  cudaMalloc calls (tensors, workspaces, arenas) and cuDNN / cuBLAS handles created
//   host_allocations    page-locked host buffers allocated (staging of the pinned transfers, received batches)
//   host_waits          times the host blocked on GPU work: a stream, event or device synchronisation that
//                       found work unfinished (a device synchronisation and a blocking copy always count)
// All 0 in a build without CUDA and in a run that uses no GPU.
struct CudaActivity {
  int64_t device_allocations = 0;
  int64_t host_allocations = 0;
  int64_t host_waits = 0;

  // What happened between two readings (later - earlier), and sums of such differences.
  CudaActivity operator-(const CudaActivity& earlier) const {
    return {device_allocations - earlier.device_allocations, host_allocations - earlier.host_allocations,
            host_waits - earlier.host_waits};
  }
  CudaActivity& operator+=(const CudaActivity& more) {
    device_allocations += more.device_allocations;
    host_allocations += more.host_allocations;
    host_waits += more.host_waits;
    return *this;
  }
};
CudaActivity cuda_activity();
// For the CUDA backend's own translation units: one more of each.
void count_cuda_device_allocation();
void count_cuda_host_allocation();
void count_cuda_host_wait();

// While a scope lives, a consumer on another stream of what this thread's tower work has produced (the NCCL
// reduction of a gradient bucket) waits for `event` (a cudaEvent_t) instead of for everything queued so far
// on the tower's stream. A replayed CUDA graph of a training pass hands out, this way, the event recorded
// in the graph where each gradient became final: the host calls the consumers after launching the whole
// graph, and their reductions still start as soon as their gradients are done. Scopes nest.
class CudaReadyEventScope {
 public:
  explicit CudaReadyEventScope(void* event);
  ~CudaReadyEventScope();
  CudaReadyEventScope(const CudaReadyEventScope&) = delete;
  CudaReadyEventScope& operator=(const CudaReadyEventScope&) = delete;

 private:
  void* previous_;
};
// The innermost scope's event on this thread, or nullptr.
void* cuda_ready_event();

}  // namespace alexnet
