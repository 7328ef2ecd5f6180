// oneDNN plumbing shared by the float32 CPU layers: one engine, a stream per thread, a thread-safe
// cache of primitives keyed by shapes and parameters, per-thread scratch buffers and reorders.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include <oneapi/dnnl/dnnl.hpp>

#include "core/tensor.h"

namespace alexnet::dnnl_util {

// The CPU engine of the process (created on first use).
dnnl::engine& engine();
// A stream for the calling thread: streams are not shared between threads that may execute at once.
dnnl::stream& stream();

// dims of a Tensor shape.
dnnl::memory::dims dims_of(const Shape& shape);

// Memory of a plain (row-major) float32 CPU tensor with the given oneDNN tag.
dnnl::memory plain_memory(const Tensor& t, const dnnl::memory::dims& dims, dnnl::memory::format_tag tag);

// A grow-only, 64-byte aligned buffer owned by the calling thread. Different `slot`s of one call
// are distinct buffers; the same slot is reused by the next call on this thread.
void* scratch(int slot, size_t bytes);

// A reorder between two layouts, or nothing when the layouts are equal (then no copy is needed).
struct Reorder {
  bool needed = false;
  dnnl::reorder prim;
  dnnl::memory::desc from_desc, to_desc;

  Reorder() = default;
  Reorder(const dnnl::memory::desc& from, const dnnl::memory::desc& to);
  // Returns `src` itself when no reorder is needed; else reorders it into scratch buffer `slot`.
  dnnl::memory to_scratch(const dnnl::memory& src, int slot) const;
  // For outputs (`from` = the primitive's layout, `to` = the user's): memory to write into, `user`
  // itself when no reorder is needed, else scratch buffer `slot`; call finish() after the primitive.
  dnnl::memory out_buffer(const dnnl::memory& user, int slot) const;
  void finish(const dnnl::memory& buffer, const dnnl::memory& user) const;
};

// Thread-safe map from a key (shapes and parameters) to a built object. `make` runs at most once
// per key; objects live until the process ends (a network has a handful of shapes).
class PrimitiveCache {
 public:
  template <class T>
  std::shared_ptr<const T> get(const std::string& key, const std::function<T()>& make) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = map_.find(key);
      if (it != map_.end()) return std::static_pointer_cast<const T>(it->second);
    }
    // Built outside the lock: primitive creation can take milliseconds (JIT).
    auto built = std::make_shared<const T>(make());
    std::lock_guard<std::mutex> lock(mu_);
    auto [it, inserted] = map_.emplace(key, built);
    return std::static_pointer_cast<const T>(it->second);
  }

 private:
  std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<const void>> map_;
};

PrimitiveCache& cache();

}  // namespace alexnet::dnnl_util
