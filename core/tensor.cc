// Tensor storage, views and host-side copies.
#include "core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>

namespace alexnet {
namespace {

constexpr size_t kAlignment = 64;  // one cache line; the widest SIMD load on AVX-512

std::map<Device::Kind, DeviceAllocator>& allocators() {
  static std::map<Device::Kind, DeviceAllocator> table;
  return table;
}

std::mutex& allocators_mutex() {
  static std::mutex mu;
  return mu;
}

const DeviceAllocator& allocator_for(Device device) {
  std::lock_guard<std::mutex> lock(allocators_mutex());
  auto it = allocators().find(device.kind);
  ALEXNET_CHECK(it != allocators().end(), "no backend registered for device ", device.str(),
                " (this build has no CUDA support, or it was not initialised)");
  return it->second;
}

std::shared_ptr<Storage> allocate_aligned(size_t bytes) {
  size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  if (rounded == 0) rounded = kAlignment;
  void* p = std::aligned_alloc(kAlignment, rounded);
  ALEXNET_CHECK(p != nullptr, "out of host memory allocating ", bytes, " bytes");
  return std::make_shared<Storage>(p, bytes, Device::cpu(), [](void* q) { std::free(q); });
}

std::shared_ptr<Storage> allocate(size_t bytes, Device device) {
  if (device.is_cpu()) return allocate_aligned(bytes);
  return allocator_for(device).allocate(bytes, device.index);
}

}  // namespace

std::shared_ptr<Storage> allocate_host(size_t bytes, bool page_locked) {
  if (page_locked) {
    std::function<std::shared_ptr<Storage>(size_t)> locked;
    {
      std::lock_guard<std::mutex> lock(allocators_mutex());
      for (const auto& [kind, a] : allocators())
        if (a.allocate_page_locked) locked = a.allocate_page_locked;
    }
    if (locked) return locked(bytes);
  }
  return allocate_aligned(bytes);
}

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kF64: return 8;
    case DType::kI64: return 8;
    case DType::kI32: return 4;
    case DType::kU8: return 1;
    case DType::kBF16: return 2;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "float32";
    case DType::kF64: return "float64";
    case DType::kI64: return "int64";
    case DType::kI32: return "int32";
    case DType::kU8: return "uint8";
    case DType::kBF16: return "bfloat16";
  }
  return "?";
}

std::string Device::str() const { return is_cpu() ? "cpu" : str_cat("cuda:", index); }

std::string shape_str(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    ALEXNET_CHECK(d >= 0, "negative dimension in shape ", shape_str(shape));
    n *= d;
  }
  return n;
}

Storage::Storage(void* ptr, size_t bytes, Device device, std::function<void(void*)> deleter, bool page_locked)
    : ptr_(ptr), bytes_(bytes), device_(device), deleter_(std::move(deleter)), page_locked_(page_locked) {}

Storage::~Storage() {
  if (deleter_ && ptr_) deleter_(ptr_);
}

void register_device_allocator(Device::Kind kind, DeviceAllocator allocator) {
  std::lock_guard<std::mutex> lock(allocators_mutex());
  allocators()[kind] = std::move(allocator);
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  Tensor t;
  t.shape_ = shape;
  t.numel_ = shape_numel(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  t.storage_ = allocate(t.nbytes(), device);
  return t;
}

Tensor Tensor::over(std::shared_ptr<Storage> storage, size_t offset_bytes, const Shape& shape, DType dtype) {
  ALEXNET_CHECK(storage != nullptr, "Tensor::over: no storage");
  Tensor t;
  t.shape_ = shape;
  t.numel_ = shape_numel(shape);
  t.dtype_ = dtype;
  t.device_ = storage->device();
  ALEXNET_CHECK(offset_bytes <= storage->bytes() && t.nbytes() <= storage->bytes() - offset_bytes,
                "Tensor::over: ", dtype_name(dtype), " ", shape_str(shape), " at byte ", offset_bytes,
                " does not fit a storage of ", storage->bytes(), " bytes");
  t.storage_ = std::move(storage);
  t.offset_bytes_ = offset_bytes;
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_zero();
  return t;
}

int64_t Tensor::dim(int i) const {
  ALEXNET_ASSERT(i >= 0 && i < ndim(), "dim ", i, " of ", describe());
  return shape_[i];
}

void* Tensor::raw_data() const {
  ALEXNET_ASSERT(defined(), "access to an undefined tensor");
  return static_cast<char*>(storage_->data()) + offset_bytes_;
}

void Tensor::check_access(DType wanted) const {
  ALEXNET_ASSERT(defined(), "access to an undefined tensor");
  ALEXNET_ASSERT(dtype_ == wanted, "tensor is ", dtype_name(dtype_), ", accessed as ",
                 dtype_name(wanted));
}

Tensor Tensor::view(const Shape& shape) const {
  ALEXNET_ASSERT(shape_numel(shape) == numel_, "view ", shape_str(shape), " of ", describe());
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

Tensor Tensor::slice0(int64_t begin, int64_t end) const {
  ALEXNET_ASSERT(ndim() >= 1 && begin >= 0 && begin <= end && end <= shape_[0], "slice0(", begin,
                 ", ", end, ") of ", describe());
  Tensor t = *this;
  int64_t row = shape_[0] == 0 ? 0 : numel_ / shape_[0];
  t.shape_[0] = end - begin;
  t.numel_ = row * (end - begin);
  t.offset_bytes_ += static_cast<size_t>(begin * row) * dtype_size(dtype_);
  return t;
}

Tensor Tensor::clone(Device device) const {
  Tensor t = empty(shape_, dtype_, device);
  t.copy_from(*this);
  return t;
}

void Tensor::copy_from(const Tensor& src) {
  ALEXNET_ASSERT(src.shape_ == shape_ && src.dtype_ == dtype_, "copy ", src.describe(), " into ",
                 describe());
  if (nbytes() == 0) return;
  if (device_.is_cpu() && src.device_.is_cpu()) {
    std::memcpy(raw_data(), src.raw_data(), nbytes());
    return;
  }
  Device other = device_.is_cpu() ? src.device_ : device_;
  allocator_for(other).copy(raw_data(), device_, src.raw_data(), src.device_, nbytes());
}

void Tensor::fill_zero() {
  if (nbytes() == 0) return;
  if (device_.is_cpu()) {
    std::memset(raw_data(), 0, nbytes());
  } else {
    allocator_for(device_).zero(raw_data(), device_.index, nbytes());
  }
}

void Tensor::fill(double value) {
  ALEXNET_ASSERT(device_.is_cpu(), "fill on ", describe());
  if (dtype_ == DType::kF32) {
    float* p = data<float>();
    for (int64_t i = 0; i < numel_; ++i) p[i] = static_cast<float>(value);
  } else if (dtype_ == DType::kF64) {
    double* p = data<double>();
    for (int64_t i = 0; i < numel_; ++i) p[i] = value;
  } else {
    ALEXNET_ASSERT(false, "fill on ", describe());
  }
}

Tensor Tensor::to(DType dtype) const {
  ALEXNET_ASSERT(device_.is_cpu(), "dtype conversion on ", describe());
  if (dtype == dtype_) return clone();
  Tensor out = empty(shape_, dtype);
  if (dtype_ == DType::kF32 && dtype == DType::kF64) {
    const float* s = data<float>();
    double* d = out.data<double>();
    for (int64_t i = 0; i < numel_; ++i) d[i] = s[i];
  } else if (dtype_ == DType::kF64 && dtype == DType::kF32) {
    const double* s = data<double>();
    float* d = out.data<float>();
    for (int64_t i = 0; i < numel_; ++i) d[i] = static_cast<float>(s[i]);
  } else {
    ALEXNET_ASSERT(false, "conversion ", dtype_name(dtype_), " -> ", dtype_name(dtype));
  }
  return out;
}

bool Tensor::shares_storage(const Tensor& other) const {
  return storage_ && storage_ == other.storage_;
}

std::string Tensor::describe() const {
  if (!defined()) return "tensor(undefined)";
  return str_cat("tensor(", dtype_name(dtype_), " ", shape_str(shape_), " on ", device_.str(), ")");
}

Tensor concat0(const std::vector<Tensor>& parts) {
  ALEXNET_ASSERT(!parts.empty(), "concat0 of nothing");
  Shape shape = parts[0].shape();
  int64_t rows = 0;
  for (const Tensor& p : parts) {
    Shape a = p.shape(), b = shape;
    a[0] = b[0] = 0;
    ALEXNET_ASSERT(a == b && p.dtype() == parts[0].dtype() && p.device().is_cpu(), "concat0 of ",
                   p.describe(), " with ", parts[0].describe());
    rows += p.dim(0);
  }
  shape[0] = rows;
  Tensor out = Tensor::empty(shape, parts[0].dtype());
  char* dst = static_cast<char*>(out.raw_data());
  for (const Tensor& p : parts) {
    std::memcpy(dst, p.raw_data(), p.nbytes());
    dst += p.nbytes();
  }
  return out;
}

Tensor pad_rows(const Tensor& t, int64_t rows) {
  ALEXNET_ASSERT(t.device().is_cpu() && t.ndim() >= 1 && t.dim(0) >= 1 && rows >= t.dim(0), "pad_rows of ",
                 t.describe(), " to ", rows, " rows");
  Shape shape = t.shape();
  shape[0] = rows;
  Tensor out = Tensor::empty(shape, t.dtype());
  const size_t row = t.nbytes() / static_cast<size_t>(t.dim(0));
  char* dst = static_cast<char*>(out.raw_data());
  std::memcpy(dst, t.raw_data(), t.nbytes());
  const char* last = static_cast<const char*>(t.raw_data()) + t.nbytes() - row;
  for (int64_t r = t.dim(0); r < rows; ++r) std::memcpy(dst + static_cast<size_t>(r) * row, last, row);
  return out;
}

}  // namespace alexnet
