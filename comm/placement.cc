#include "comm/placement.h"

#include <cstdio>

#include "core/error.h"

namespace alexnet {

std::array<int, 2> tower_gpus(int local_rank, int local_size, int devices_per_rank, int visible_gpus,
                              bool own_gpus) {
  ALEXNET_CHECK(devices_per_rank == 1 || devices_per_rank == 2, "config key 'parallel.devices_per_rank': ",
                devices_per_rank, " (expected 1 or 2)");
  ALEXNET_ASSERT(local_rank >= 0 && local_rank < local_size, "tower_gpus: local rank ", local_rank, " of ", local_size);
  if (own_gpus && local_size * devices_per_rank > visible_gpus) {
    ALEXNET_CHECK(devices_per_rank <= visible_gpus, "config key 'parallel.devices_per_rank': ", devices_per_rank,
                  " GPUs per worker rank, but this rank was given ", visible_gpus,
                  " of its own; give each rank that many (e.g. srun --gpus-per-task) or set devices_per_rank 1");
    local_rank = 0;
  } else {
    ALEXNET_CHECK(local_size * devices_per_rank <= visible_gpus, "config key 'parallel.devices_per_rank': ", local_size,
                " worker rank(s) on this node x ", devices_per_rank, " GPU(s) each need ", local_size * devices_per_rank,
                " GPUs; ", visible_gpus, " visible. Use fewer workers per node",
                devices_per_rank == 2 ? " or devices_per_rank 1" : "", " (NCCL needs a GPU of its own per rank)");
  }
  if (devices_per_rank == 1) return {local_rank, local_rank};
  return {2 * local_rank, 2 * local_rank + 1};
}

bool ranks_see_own_gpus(const std::vector<uint64_t>& first_gpus, int per_rank) {
  ALEXNET_ASSERT(per_rank > 0 && first_gpus.size() % static_cast<size_t>(per_rank) == 0,
                 "ranks_see_own_gpus: ", first_gpus.size(), " ids, ", per_rank, " per rank");
  const size_t n = static_cast<size_t>(per_rank);
  for (size_t a = 0; a < first_gpus.size(); ++a)
    for (size_t b = (a / n + 1) * n; b < first_gpus.size(); ++b)
      if (first_gpus[a] == first_gpus[b]) return false;
  return true;
}

std::string pci_location_str(uint64_t location) {
  char text[32];
  std::snprintf(text, sizeof text, "%04x:%02x:%02x.%x", static_cast<unsigned>(location >> 32),
                static_cast<unsigned>((location >> 16) & 0xffff), static_cast<unsigned>((location >> 8) & 0xff),
                static_cast<unsigned>(location & 0xff));
  return text;
}

std::string shared_gpu_conflict(const std::vector<uint64_t>& host_device) {
  ALEXNET_ASSERT(host_device.size() % 2 == 0, "shared_gpu_conflict: odd length ", host_device.size());
  const size_t ranks = host_device.size() / 2;
  for (size_t a = 0; a < ranks; ++a)
    for (size_t b = a + 1; b < ranks; ++b)
      if (host_device[2 * a] == host_device[2 * b] && host_device[2 * a + 1] == host_device[2 * b + 1])
        return str_cat("ranks ", a, " and ", b, " of the gradient communicator both use ",
                       host_device[2 * a + 1] & kGpuIndexOnly
                           ? str_cat("GPU ", host_device[2 * a + 1] & ~kGpuIndexOnly)
                           : str_cat("the GPU at PCI ", pci_location_str(host_device[2 * a + 1])),
                       " of one host; NCCL needs one GPU per rank: use fewer worker ranks per node or "
                       "parallel.devices_per_rank 1");
  return "";
}

}  // namespace alexnet
