// oneDNN engine, per-thread streams and scratch buffers, reorder helper and the primitive cache.
#include "model/cpu/dnnl_util.h"

#include <cstdlib>
#include <vector>

namespace alexnet::dnnl_util {

dnnl::engine& engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

dnnl::stream& stream() {
  thread_local dnnl::stream s(engine());
  return s;
}

dnnl::memory::dims dims_of(const Shape& shape) { return dnnl::memory::dims(shape.begin(), shape.end()); }

dnnl::memory plain_memory(const Tensor& t, const dnnl::memory::dims& dims, dnnl::memory::format_tag tag) {
  dnnl::memory::desc md(dims, dnnl::memory::data_type::f32, tag);
  ALEXNET_ASSERT(md.get_size() == t.nbytes(), "oneDNN view of ", t.describe());
  return dnnl::memory(md, engine(), t.raw_data());
}

namespace {

struct AlignedFree {
  void operator()(void* p) const { std::free(p); }
};

struct ScratchSlot {
  std::unique_ptr<void, AlignedFree> ptr;
  size_t bytes = 0;
};

}  // namespace

void* scratch(int slot, size_t bytes) {
  thread_local std::vector<ScratchSlot> slots;
  ALEXNET_ASSERT(slot >= 0 && slot < 64, "scratch slot ", slot);
  if (static_cast<size_t>(slot) >= slots.size()) slots.resize(slot + 1);
  ScratchSlot& s = slots[slot];
  if (s.bytes < bytes) {
    s.ptr.reset();
    size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    ALEXNET_ASSERT(p != nullptr, "out of memory for ", rounded, " bytes of scratch");
    s.ptr.reset(p);
    s.bytes = rounded;
  }
  return s.ptr.get();
}

Reorder::Reorder(const dnnl::memory::desc& from, const dnnl::memory::desc& to)
    : needed(from != to), from_desc(from), to_desc(to) {
  if (needed) prim = dnnl::reorder(dnnl::reorder::primitive_desc(engine(), from, engine(), to));
}

dnnl::memory Reorder::to_scratch(const dnnl::memory& src, int slot) const {
  if (!needed) return src;
  dnnl::memory dst(to_desc, engine(), scratch(slot, to_desc.get_size()));
  dnnl::memory from = src;
  prim.execute(stream(), from, dst);
  return dst;
}

dnnl::memory Reorder::out_buffer(const dnnl::memory& user, int slot) const {
  if (!needed) return user;
  return dnnl::memory(from_desc, engine(), scratch(slot, from_desc.get_size()));
}

void Reorder::finish(const dnnl::memory& buffer, const dnnl::memory& user) const {
  if (!needed) return;
  dnnl::memory from = buffer, to = user;
  prim.execute(stream(), from, to);
}

PrimitiveCache& cache() {
  static PrimitiveCache c;
  return c;
}

}  // namespace alexnet::dnnl_util
