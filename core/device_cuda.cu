// CUDA device discovery and the CUDA tensor allocator.
#include <cuda_runtime.h>

#include <string>

#include "core/cuda_check.h"
#include "core/device.h"
#include "core/error.h"
#include "core/tensor.h"

namespace alexnet {


namespace {

void register_cuda_allocator() {
  DeviceAllocator a;
  a.allocate = [](size_t bytes, int index) {
    ALEXNET_CUDA_CHECK(cudaSetDevice(index));
    void* p = nullptr;
    ALEXNET_CUDA_CHECK(cudaMalloc(&p, bytes == 0 ? 256 : bytes));
    count_cuda_device_allocation();
    // Freed with its own device current (the current one is put back): the memory of a tower on another
    // GPU must not depend on which device the freeing thread had selected.
    return std::make_shared<Storage>(p, bytes, Device::cuda(index), [index](void* q) {
      int previous = index;
      const bool known = cudaGetDevice(&previous) == cudaSuccess;
      cudaSetDevice(index);
      cudaFree(q);
      if (known && previous != index) cudaSetDevice(previous);
    });
  };
  // A plain cudaMemcpy is ordered with the legacy default stream of the current device only, and through
  // it with that device's blocking streams (the towers' streams): so the current device is the one whose
  // memory is touched. Between two GPUs, cudaMemcpyPeer is ordered with the pending and later work of
  // both (a device-to-device cudaMemcpy may return while it still reads the source).
  a.copy = [](void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
    // A copy from or to the host returns once it is done; one between device buffers may return earlier.
    if (!src_dev.is_cuda() || !dst_dev.is_cuda()) count_cuda_host_wait();
    if (dst_dev.is_cuda() && src_dev.is_cuda() && dst_dev.index != src_dev.index) {
      ALEXNET_CUDA_CHECK(cudaSetDevice(dst_dev.index));
      ALEXNET_CUDA_CHECK(cudaMemcpyPeer(dst, dst_dev.index, src, src_dev.index, bytes));
      return;
    }
    ALEXNET_CUDA_CHECK(cudaSetDevice(dst_dev.is_cuda() ? dst_dev.index : src_dev.index));
    ALEXNET_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault));
  };
  a.zero = [](void* dst, int index, size_t bytes) {
    ALEXNET_CUDA_CHECK(cudaSetDevice(index));
    ALEXNET_CUDA_CHECK(cudaMemset(dst, 0, bytes));
  };
  // Portable: page-locked for every device's context, as a worker's towers may sit on two GPUs.
  a.allocate_page_locked = [](size_t bytes) {
    void* p = nullptr;
    ALEXNET_CUDA_CHECK(cudaHostAlloc(&p, bytes == 0 ? 64 : bytes, cudaHostAllocPortable));
    count_cuda_host_allocation();
    return std::make_shared<Storage>(p, bytes, Device::cpu(), [](void* q) { cudaFreeHost(q); }, true);
  };
  register_device_allocator(Device::Kind::kCUDA, a);
}

}  // namespace

int cuda_device_count_impl(std::string* why) {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    *why = cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  if (n == 0) {
    *why = "the driver reports no devices";
    return 0;
  }
  static bool registered = [] {
    register_cuda_allocator();
    return true;
  }();
  (void)registered;
  return n;
}

uint64_t cuda_device_pci_id(int device) {
  cudaDeviceProp prop{};
  const cudaError_t err = cudaGetDeviceProperties(&prop, device);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // not left behind for the next launch check
    ALEXNET_FAIL("GPU ", device, ": cannot read its PCI location: ", cudaGetErrorString(err));
  }
  return static_cast<uint64_t>(prop.pciDomainID) << 32 | static_cast<uint64_t>(prop.pciBusID) << 16 |
         static_cast<uint64_t>(prop.pciDeviceID) << 8;
}

CudaDevicePeak cuda_device_peak(int device) {
  cudaDeviceProp prop{};
  ALEXNET_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  int khz = 0;
  ALEXNET_CUDA_CHECK(cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, device));
  CudaDevicePeak p;
  p.name = prop.name;
  p.sms = prop.multiProcessorCount;
  p.clock_ghz = khz / 1e6;
  double fp32 = 0, tf32 = 0, bf16 = 0;  // FLOP per clock per SM, dense
  if (prop.major == 8 && prop.minor == 0) fp32 = 128, tf32 = 1024, bf16 = 2048;
  if (prop.major == 9 && prop.minor == 0) fp32 = 256, tf32 = 2048, bf16 = 4096;
  const double per_clock = p.sms * p.clock_ghz * 1e9 / 1e12;
  p.fp32_tflops = fp32 * per_clock;
  p.tf32_tflops = tf32 * per_clock;
  p.bf16_tflops = bf16 * per_clock;
  return p;
}

}  // namespace alexnet
