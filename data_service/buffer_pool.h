// Host buffers kept for reuse, for the data client's batch messages: a buffer handed out comes back when
// the last tensor viewing it is gone, so steady training allocates nothing.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace alexnet {

// get() returns a CPU storage of exactly `bytes`, page-locked where asked and possible (allocate_host),
// reusing an idle block of that size and kind when there is one. Destroying the storage (its last
// tensor) returns the block; at most kKeepPerSize idle blocks of each size and kind are kept (training
// and evaluation messages differ in size), the rest are freed. The pool stays
// alive while any block it handed out is in use, so storages may outlive their owner's reference to it.
// Thread-safe.
class BufferPool : public std::enable_shared_from_this<BufferPool> {
 public:
  static constexpr size_t kKeepPerSize = 3;

  std::shared_ptr<Storage> get(size_t bytes, bool page_locked);
  size_t idle() const;

 private:
  void put(std::shared_ptr<Storage> block, bool page_locked);

  mutable std::mutex mu_;
  std::vector<std::pair<bool, std::shared_ptr<Storage>>> idle_;  // (page_locked, block)
};

}  // namespace alexnet
