#include "data_service/buffer_pool.h"

namespace alexnet {

std::shared_ptr<Storage> BufferPool::get(size_t bytes, bool page_locked) {
  std::shared_ptr<Storage> block;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = idle_.begin(); it != idle_.end(); ++it)
      if (it->first == page_locked && it->second->bytes() == bytes) {
        block = std::move(it->second);
        idle_.erase(it);
        break;
      }
  }
  if (!block) block = allocate_host(bytes, page_locked);
  void* data = block->data();
  return std::make_shared<Storage>(data, bytes, Device::cpu(),
                                   [self = shared_from_this(), block, page_locked](void*) {
                                     self->put(block, page_locked);
                                   });
}

size_t BufferPool::idle() const {
  std::lock_guard<std::mutex> lock(mu_);
  return idle_.size();
}

void BufferPool::put(std::shared_ptr<Storage> block, bool page_locked) {
  std::lock_guard<std::mutex> lock(mu_);
  if (idle_.size() < kKeep) idle_.emplace_back(page_locked, std::move(block));
}

}  // namespace alexnet
