// Where a worker rank's towers run, and the check NCCL needs before it is asked to build a
// communicator. Pure functions of what the ranks report, so they are tested without a GPU.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace alexnet {

// GPUs of the two towers of the worker with rank `local_rank` among the `local_size` workers of its node
// (parallel.devices_per_rank): 2 puts tower t on GPU 2 local_rank + t (the paper's two GPUs per network),
// 1 puts both towers on GPU local_rank (two streams). own_gpus: every worker of the node sees GPUs of its
// own (a scheduler bound them per task, e.g. srun --gpus-per-task, which sets CUDA_VISIBLE_DEVICES per
// rank; ranks_see_own_gpus): then each takes its first visible GPU(s). Throws an Error naming
// parallel.devices_per_rank when the rank's workers need more GPUs than `visible_gpus`, or the value is
// not 1 or 2.
std::array<int, 2> tower_gpus(int local_rank, int local_size, int devices_per_rank, int visible_gpus,
                              bool own_gpus = false);

// first_gpus: the PCI locations (cuda_device_pci_id) of the first `per_rank` GPUs each worker of a node
// sees, in local rank order, flattened. True when no GPU appears for two ranks: each rank was given GPUs
// of its own, so GPU 0 of one rank is not GPU 0 of another.
bool ranks_see_own_gpus(const std::vector<uint64_t>& first_gpus, int per_rank);

// A PCI location from cuda_device_pci_id as nvidia-smi writes it: "0000:3b:00.0".
std::string pci_location_str(uint64_t location);

// A GPU in shared_gpu_conflict's list where its PCI location cannot be read (no usable device): this
// bit or'ed with the device index.
constexpr uint64_t kGpuIndexOnly = uint64_t{1} << 63;

// host_device: (host id, GPU) of every rank of one communicator, in rank order, flattened; the GPU as
// its PCI location (cuda_device_pci_id), or kGpuIndexOnly | index. Returns a message naming the first
// two ranks that would share a GPU of one host (NCCL refuses that), or "". The PCI location, unlike a
// device index, names one GPU whatever each rank's CUDA_VISIBLE_DEVICES.
std::string shared_gpu_conflict(const std::vector<uint64_t>& host_device);

}  // namespace alexnet
