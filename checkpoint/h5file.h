// A thin, checked wrapper over the HDF5 C API: datasets of tensors, scalars, strings and attributes,
// addressed by slash paths ("/model/conv1/weight"); parent groups are created as needed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace alexnet {

class H5File {
 public:
  enum class Mode { kRead, kCreate /* truncates */, kReadWrite };

  // Errors name the path and what HDF5 reported (e.g. "not an HDF5 file").
  H5File(const std::string& path, Mode mode);
  ~H5File();
  H5File(const H5File&) = delete;
  H5File& operator=(const H5File&) = delete;

  const std::string& path() const { return path_; }

  // True when a dataset or group exists at `name`.
  bool exists(const std::string& name) const;
  bool is_group(const std::string& name) const;
  // Names directly under a group (sorted).
  std::vector<std::string> list(const std::string& group) const;
  // Every dataset under a group, recursively, as full paths (sorted).
  std::vector<std::string> datasets(const std::string& group = "/") const;

  // Datasets from CPU tensors (float32, float64, int64, int32, uint8), shape kept.
  void write_tensor(const std::string& name, const Tensor& t);
  // Reads a numeric dataset into a CPU tensor of its stored dtype.
  Tensor read_tensor(const std::string& name) const;
  // Reads and converts to `dtype` (float32/float64/int64), checking the shape when given.
  Tensor read_tensor_as(const std::string& name, DType dtype, const Shape* expect_shape = nullptr) const;
  Shape dataset_shape(const std::string& name) const;
  // True when the dataset holds a string (write_string), false for numbers.
  bool is_string(const std::string& name) const;

  void write_scalar(const std::string& name, double value);
  void write_scalar_int(const std::string& name, int64_t value);
  double read_scalar(const std::string& name) const;
  int64_t read_scalar_int(const std::string& name) const;
  // Scalar variable-length UTF-8 string dataset (h5py reads it as bytes/str).
  void write_string(const std::string& name, const std::string& value);
  std::string read_string(const std::string& name) const;

  // Attributes on an object (group or dataset; "/" for the root).
  void set_attr_int(const std::string& object, const std::string& attr, int64_t value);
  void set_attr_string(const std::string& object, const std::string& attr, const std::string& value);
  bool has_attr(const std::string& object, const std::string& attr) const;
  int64_t get_attr_int(const std::string& object, const std::string& attr) const;
  std::string get_attr_string(const std::string& object, const std::string& attr) const;

  // Flushes HDF5's buffers to the OS (H5Fflush); durability (fsync) is the caller's.
  void flush();

 private:
  std::string path_;
  int64_t file_id_ = -1;  // hid_t
};

}  // namespace alexnet
