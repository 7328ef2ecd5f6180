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
// 1 puts both towers on GPU local_rank (two streams). Throws an Error naming parallel.devices_per_rank
// when the node's workers need more GPUs than `visible_gpus`, or the value is not 1 or 2.
std::array<int, 2> tower_gpus(int local_rank, int local_size, int devices_per_rank, int visible_gpus);

// host_device: (host id, GPU index) of every rank of one communicator, in rank order, flattened. Returns
// a message naming the first two ranks that would share a GPU of one host (NCCL refuses that), or "".
std::string shared_gpu_conflict(const std::vector<uint64_t>& host_device);

}  // namespace alexnet
