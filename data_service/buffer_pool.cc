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
  const bool locked = block->page_locked();
  return std::make_shared<Storage>(
      data, bytes, Device::cpu(), [self = shared_from_this(), block, page_locked](void*) { self->put(block, page_locked); },
      locked);
}

size_t BufferPool::idle() const {
  std::lock_guard<std::mutex> lock(mu_);
  return idle_.size();
}

void BufferPool::put(std::shared_ptr<Storage> block, bool page_locked) {
  std::lock_guard<std::mutex> lock(mu_);
  size_t same = 0;
  for (const auto& [kind, b] : idle_) same += kind == page_locked && b->bytes() == block->bytes();
  if (same < kKeepPerSize) idle_.emplace_back(page_locked, std::move(block));
}

}  // namespace alexnet
