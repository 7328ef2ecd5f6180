// Tensor: a shape, a dtype, a device and shared, 64-byte aligned owning storage.
// The device is a property of the tensor; host code reads data<T>() only for CPU tensors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"

namespace alexnet {

enum class DType { kF32, kF64, kI64, kI32, kU8, kBF16 };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);

template <class T> struct DTypeOf;
template <> struct DTypeOf<float> { static constexpr DType value = DType::kF32; };
template <> struct DTypeOf<double> { static constexpr DType value = DType::kF64; };
template <> struct DTypeOf<int64_t> { static constexpr DType value = DType::kI64; };
template <> struct DTypeOf<int32_t> { static constexpr DType value = DType::kI32; };
template <> struct DTypeOf<uint8_t> { static constexpr DType value = DType::kU8; };

struct Device {
  enum class Kind { kCPU, kCUDA };
  Kind kind = Kind::kCPU;
  int index = 0;

  static Device cpu() { return Device{}; }
  static Device cuda(int i) { return Device{Kind::kCUDA, i}; }
  bool is_cpu() const { return kind == Kind::kCPU; }
  bool is_cuda() const { return kind == Kind::kCUDA; }
  bool operator==(const Device& o) const { return kind == o.kind && (is_cpu() || index == o.index); }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string str() const;
};

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& shape);
int64_t shape_numel(const Shape& shape);

// Raw memory of one allocation. Allocators for non-CPU devices are registered by their backend.
class Storage {
 public:
  // page_locked: host memory the CUDA backend locked (allocate_host), which copies read by DMA in place.
  Storage(void* ptr, size_t bytes, Device device, std::function<void(void*)> deleter, bool page_locked = false);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }
  bool page_locked() const { return page_locked_; }

 private:
  void* ptr_;
  size_t bytes_;
  Device device_;
  std::function<void(void*)> deleter_;
  bool page_locked_;
};

// A device backend provides allocation and copies; the CPU one is built in.
struct DeviceAllocator {
  std::function<std::shared_ptr<Storage>(size_t bytes, int index)> allocate;
  // Copies bytes between any two devices of which at least one is this backend's.
  std::function<void(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes)> copy;
  std::function<void(void* dst, int index, size_t bytes)> zero;
  // Page-locked host memory, which the device reads and writes by DMA (optional).
  std::function<std::shared_ptr<Storage>(size_t bytes)> allocate_page_locked;
};
void register_device_allocator(Device::Kind kind, DeviceAllocator allocator);

// Host memory of `bytes` (a CPU storage): page-locked where asked and a registered backend offers it (the
// CUDA one: cudaHostAlloc, for copies that need no staging), else ordinary aligned memory.
std::shared_ptr<Storage> allocate_host(size_t bytes, bool page_locked);

class Tensor {
 public:
  Tensor() = default;

  static Tensor empty(const Shape& shape, DType dtype = DType::kF32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::kF32, Device device = Device::cpu());
  template <class T>
  static Tensor from_vector(const Shape& shape, const std::vector<T>& values) {
    Tensor t = empty(shape, DTypeOf<T>::value);
    ALEXNET_CHECK(static_cast<int64_t>(values.size()) == t.numel(), "from_vector: ", values.size(),
                  " values for shape ", shape_str(shape));
    std::copy(values.begin(), values.end(), t.data<T>());
    return t;
  }

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const;
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const { return numel_; }
  size_t nbytes() const { return static_cast<size_t>(numel_) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }

  void* raw_data() const;
  template <class T>
  T* data() const {
    check_access(DTypeOf<T>::value);
    return static_cast<T*>(raw_data());
  }

  // A tensor over bytes [offset_bytes, offset_bytes + its size) of an existing storage (sharing it).
  static Tensor over(std::shared_ptr<Storage> storage, size_t offset_bytes, const Shape& shape, DType dtype);

  // Same storage, new shape with the same element count.
  Tensor view(const Shape& shape) const;
  // Rows [begin, end) of dimension 0, sharing storage.
  Tensor slice0(int64_t begin, int64_t end) const;
  // A new tensor with its own storage on `device`.
  Tensor clone(Device device) const;
  Tensor clone() const { return clone(device_); }
  // Copies another tensor's values into this one (same shape and dtype; devices may differ).
  void copy_from(const Tensor& src);
  void fill_zero();
  // CPU float/double tensors: set every element.
  void fill(double value);
  // Converts a CPU tensor to another dtype (float <-> double).
  Tensor to(DType dtype) const;
  // True when both refer to the same bytes.
  bool shares_storage(const Tensor& other) const;
  // True when the bytes of the two overlap (views of one workspace may sit side by side); both defined.
  bool overlaps(const Tensor& other) const {
    const char* a = static_cast<const char*>(raw_data());
    const char* b = static_cast<const char*>(other.raw_data());
    return a < b + other.nbytes() && b < a + nbytes();
  }
  // Whether its storage is page-locked host memory (allocate_host(..., true) where CUDA is present).
  bool page_locked() const { return storage_ && storage_->page_locked(); }
  std::string describe() const;

 private:
  void check_access(DType wanted) const;

  std::shared_ptr<Storage> storage_;
  size_t offset_bytes_ = 0;
  Shape shape_;
  int64_t numel_ = 0;
  DType dtype_ = DType::kF32;
  Device device_;
};

// Concatenates CPU tensors along dimension 0 (shapes equal beyond dimension 0).
Tensor concat0(const std::vector<Tensor>& parts);
// A CPU tensor of `rows` rows: t's rows (a CPU tensor with at least one), then copies of its last row.
Tensor pad_rows(const Tensor& t, int64_t rows);

}  // namespace alexnet
