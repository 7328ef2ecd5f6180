// H5File over the HDF5 C API: every call checked, HDF5's own error printing silenced and its error
// stack turned into our message (file path, object, what failed), identifiers owned by RAII handles.
#include "checkpoint/h5file.h"

#include <hdf5.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <utility>

namespace alexnet {
namespace {

// ---- error handling -----------------------------------------------------------------------------

// Collects the HDF5 error stack of this thread, innermost (most specific) entry first.
herr_t collect_error(unsigned n, const H5E_error2_t* err, void* client) {
  auto* out = static_cast<std::vector<std::string>*>(client);
  std::string entry = err->desc ? err->desc : "";
  char minor[128] = {0};
  if (H5Eget_msg(err->min_num, nullptr, minor, sizeof(minor)) > 0 && minor[0] != '\0') {
    if (entry.empty()) {
      entry = minor;
    } else if (entry.find(minor) == std::string::npos) {
      entry += str_cat(" [", minor, "]");
    }
  }
  if (!entry.empty()) out->push_back(std::move(entry));
  (void)n;
  return 0;
}

// The current error stack as one line ("innermost; ...; outermost"), then cleared.
std::string hdf5_error_text() {
  std::vector<std::string> entries;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, collect_error, &entries);
  H5Eclear2(H5E_DEFAULT);
  // Adjacent duplicates carry no information (each layer repeats "unable to open file").
  entries.erase(std::unique(entries.begin(), entries.end()), entries.end());
  if (entries.empty()) return "HDF5 gave no detail";
  std::string s;
  for (size_t i = 0; i < entries.size() && i < 4; ++i) s += (i ? "; " : "") + entries[i];
  return s;
}

// While alive, HDF5 does not print its error stack to stderr (we report it in the exception);
// restores whatever handler was installed before. The handler is per thread (thread-safe build).
class QuietErrors {
 public:
  QuietErrors() {
    if (H5Eget_auto2(H5E_DEFAULT, &func_, &data_) < 0) func_ = nullptr, data_ = nullptr, saved_ = false;
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
  ~QuietErrors() {
    if (saved_) H5Eset_auto2(H5E_DEFAULT, func_, data_);
  }
  QuietErrors(const QuietErrors&) = delete;
  QuietErrors& operator=(const QuietErrors&) = delete;

 private:
  H5E_auto2_t func_ = nullptr;
  void* data_ = nullptr;
  bool saved_ = true;
};

[[noreturn]] void fail(const std::string& file, const std::string& object, const std::string& what) {
  std::string where = object.empty() ? "" : str_cat(" ", object);
  ALEXNET_FAIL("HDF5 file '", file, "'", where, ": ", what);
}

[[noreturn]] void fail_hdf5(const std::string& file, const std::string& object, const std::string& what) {
  fail(file, object, str_cat(what, " (", hdf5_error_text(), ")"));
}

// ---- RAII identifiers ---------------------------------------------------------------------------

class Id {
 public:
  using Closer = herr_t (*)(hid_t);
  Id() = default;
  Id(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  ~Id() { reset(); }
  Id(Id&& o) noexcept : id_(std::exchange(o.id_, -1)), closer_(o.closer_) {}
  Id& operator=(Id&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, -1);
      closer_ = o.closer_;
    }
    return *this;
  }
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;

  hid_t get() const { return id_; }
  // A close failure in a destructor cannot be reported; the data path checks H5Fflush instead.
  void reset() noexcept {
    if (id_ >= 0 && closer_ != nullptr) {
      closer_(id_);
      H5Eclear2(H5E_DEFAULT);
    }
    id_ = -1;
  }

 private:
  hid_t id_ = -1;
  Closer closer_ = nullptr;
};

// Wraps a freshly returned identifier, failing with the HDF5 error text when it is invalid.
Id checked(hid_t id, Id::Closer closer, const std::string& file, const std::string& object,
           const char* what) {
  if (id < 0) fail_hdf5(file, object, what);
  return Id(id, closer);
}

void check_status(herr_t status, const std::string& file, const std::string& object, const char* what) {
  if (status < 0) fail_hdf5(file, object, what);
}

// ---- names and types ----------------------------------------------------------------------------

// "model/conv1/weight", "/model//conv1/" -> "/model/conv1/weight"; "" -> "/".
std::string normalize(const std::string& name) {
  std::string out;
  size_t i = 0;
  while (i < name.size()) {
    size_t j = name.find('/', i);
    if (j == std::string::npos) j = name.size();
    if (j > i) {
      out.push_back('/');
      out.append(name, i, j - i);
    }
    i = j + 1;
  }
  return out.empty() ? "/" : out;
}

std::string join(const std::string& group, const std::string& child) {
  std::string out = group == "/" ? std::string() : group;
  out.push_back('/');
  out.append(child);
  return out;
}

hid_t memory_type(DType dtype) {
  switch (dtype) {
    case DType::kF32: return H5T_NATIVE_FLOAT;
    case DType::kF64: return H5T_NATIVE_DOUBLE;
    case DType::kI64: return H5T_NATIVE_INT64;
    case DType::kI32: return H5T_NATIVE_INT32;
    case DType::kU8: return H5T_NATIVE_UINT8;
    case DType::kBF16: break;
  }
  return -1;
}

// Little-endian standard types on disk, whatever the host.
hid_t file_type(DType dtype) {
  switch (dtype) {
    case DType::kF32: return H5T_IEEE_F32LE;
    case DType::kF64: return H5T_IEEE_F64LE;
    case DType::kI64: return H5T_STD_I64LE;
    case DType::kI32: return H5T_STD_I32LE;
    case DType::kU8: return H5T_STD_U8LE;
    case DType::kBF16: break;
  }
  return -1;
}

// "float32", "int16", "uint64", "string", "compound", ... for messages.
std::string type_name(hid_t type) {
  H5T_class_t cls = H5Tget_class(type);
  size_t size = H5Tget_size(type);
  switch (cls) {
    case H5T_FLOAT: return str_cat("float", size * 8);
    case H5T_INTEGER: return str_cat(H5Tget_sign(type) == H5T_SGN_NONE ? "uint" : "int", size * 8);
    case H5T_STRING: return "string";
    case H5T_COMPOUND: return "compound";
    case H5T_ENUM: return "enum";
    case H5T_ARRAY: return "array";
    case H5T_VLEN: return "vlen";
    case H5T_OPAQUE: return "opaque";
    case H5T_REFERENCE: return "reference";
    case H5T_BITFIELD: return "bitfield";
    case H5T_TIME: return "time";
    default: return "unknown type";
  }
}

// The tensor dtype a stored numeric type reads as; false for non-numeric types.
bool stored_dtype(hid_t type, DType* dtype) {
  H5T_class_t cls = H5Tget_class(type);
  size_t size = H5Tget_size(type);
  if (cls == H5T_FLOAT) {
    *dtype = size <= 4 ? DType::kF32 : DType::kF64;  // float16 widens to float32
    return true;
  }
  if (cls == H5T_INTEGER) {
    bool is_signed = H5Tget_sign(type) != H5T_SGN_NONE;
    if (size == 1 && !is_signed) *dtype = DType::kU8;
    else if (size == 4 && is_signed) *dtype = DType::kI32;
    else *dtype = DType::kI64;  // other widths convert (HDF5 clips uint64 beyond int64)
    return true;
  }
  return false;
}

Shape space_shape(hid_t space, const std::string& file, const std::string& object) {
  H5S_class_t cls = H5Sget_simple_extent_type(space);
  if (cls == H5S_SCALAR) return {};
  if (cls == H5S_NULL) fail(file, object, "has an empty (null) dataspace");
  int nd = H5Sget_simple_extent_ndims(space);
  if (nd < 0) fail_hdf5(file, object, "cannot read the dataspace rank");
  std::vector<hsize_t> dims(static_cast<size_t>(nd));
  if (H5Sget_simple_extent_dims(space, dims.data(), nullptr) < 0)
    fail_hdf5(file, object, "cannot read the dataspace dimensions");
  return Shape(dims.begin(), dims.end());
}

Id make_space(const Shape& shape, const std::string& file, const std::string& object) {
  if (shape.empty()) return checked(H5Screate(H5S_SCALAR), H5Sclose, file, object, "cannot create a scalar dataspace");
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  return checked(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose, file,
                 object, "cannot create a dataspace");
}

// A variable-length UTF-8 string type (what h5py writes for a Python str).
Id vlen_string_type(const std::string& file, const std::string& object) {
  Id t = checked(H5Tcopy(H5T_C_S1), H5Tclose, file, object, "cannot copy the string type");
  check_status(H5Tset_size(t.get(), H5T_VARIABLE), file, object, "cannot make a variable-length string type");
  check_status(H5Tset_cset(t.get(), H5T_CSET_UTF8), file, object, "cannot set the UTF-8 character set");
  return t;
}

// Reads a scalar (or one-element) string stored as variable- or fixed-length; `read` calls H5Dread
// or H5Aread with the given memory type and buffer.
template <class Read>
std::string read_string_value(hid_t stored_type, hid_t space, Read read, const std::string& file,
                              const std::string& object) {
  if (H5Tget_class(stored_type) != H5T_STRING)
    fail(file, object, str_cat("is not a string (it holds ", type_name(stored_type), ")"));
  if (shape_numel(space_shape(space, file, object)) != 1)
    fail(file, object, "is a string array; expected a single string");
  htri_t variable = H5Tis_variable_str(stored_type);
  if (variable < 0) fail_hdf5(file, object, "cannot inspect the string type");
  if (variable > 0) {
    Id mem = vlen_string_type(file, object);
    check_status(H5Tset_cset(mem.get(), H5Tget_cset(stored_type)), file, object, "cannot set the character set");
    char* value = nullptr;
    check_status(read(mem.get(), &value), file, object, "cannot read the string");
    std::string out = value ? value : "";
#if H5_VERSION_GE(1, 12, 0)
    H5Treclaim(mem.get(), space, H5P_DEFAULT, &value);
#else
    H5Dvlen_reclaim(mem.get(), space, H5P_DEFAULT, &value);
#endif
    return out;
  }
  size_t size = H5Tget_size(stored_type);
  if (size == 0) fail_hdf5(file, object, "cannot read the string size");
  Id mem = checked(H5Tcopy(stored_type), H5Tclose, file, object, "cannot copy the string type");
  std::string buf(size, '\0');
  check_status(read(mem.get(), buf.data()), file, object, "cannot read the string");
  if (H5Tget_strpad(stored_type) == H5T_STR_SPACEPAD) {
    buf.erase(buf.find_last_not_of(' ') + 1);
  } else {
    size_t end = buf.find('\0');
    if (end != std::string::npos) buf.resize(end);
  }
  return buf;
}

}  // namespace

// ---- H5File -------------------------------------------------------------------------------------

H5File::H5File(const std::string& path, Mode mode) : path_(path) {
  QuietErrors quiet;
  if (mode == Mode::kCreate) {
    hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (id < 0) fail_hdf5(path, "", "cannot create the file");
    file_id_ = id;
    return;
  }
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) fail(path, "", "does not exist");
  if (std::filesystem::is_directory(path, ec)) fail(path, "", "is a directory, not an HDF5 file");
  htri_t is_hdf5 = H5Fis_hdf5(path.c_str());
  if (is_hdf5 < 0) fail_hdf5(path, "", "cannot be read");
  if (is_hdf5 == 0) fail(path, "", "is not an HDF5 file (no HDF5 signature)");
  hid_t id = H5Fopen(path.c_str(), mode == Mode::kRead ? H5F_ACC_RDONLY : H5F_ACC_RDWR, H5P_DEFAULT);
  if (id < 0) fail_hdf5(path, "", mode == Mode::kRead ? "cannot open for reading" : "cannot open for writing");
  file_id_ = id;
}

H5File::~H5File() {
  if (file_id_ < 0) return;
  QuietErrors quiet;
  H5Fclose(static_cast<hid_t>(file_id_));
  H5Eclear2(H5E_DEFAULT);
}

namespace {

enum class ObjectKind { kMissing, kGroup, kDataset, kOther };

// What `full` (normalised) names. H5Lexists fails, rather than answering false, when an
// intermediate group is missing, so the path is walked one link at a time.
ObjectKind object_kind(hid_t f, const std::string& file, const std::string& full) {
  if (full == "/") return ObjectKind::kGroup;
  size_t pos = 0;
  while (true) {
    size_t next = full.find('/', pos + 1);
    std::string prefix = full.substr(0, next);
    htri_t link = H5Lexists(f, prefix.c_str(), H5P_DEFAULT);
    if (link < 0) fail_hdf5(file, prefix, "cannot look up the link");
    if (link == 0) return ObjectKind::kMissing;
    htri_t obj = H5Oexists_by_name(f, prefix.c_str(), H5P_DEFAULT);
    if (obj < 0) fail_hdf5(file, prefix, "cannot look up the object");
    if (obj == 0) return ObjectKind::kMissing;  // dangling soft or external link
    Id o = checked(H5Oopen(f, prefix.c_str(), H5P_DEFAULT), H5Oclose, file, prefix, "cannot open the object");
    H5I_type_t type = H5Iget_type(o.get());
    if (next == std::string::npos) {
      return type == H5I_GROUP ? ObjectKind::kGroup
             : type == H5I_DATASET ? ObjectKind::kDataset
                                   : ObjectKind::kOther;
    }
    if (type != H5I_GROUP) return ObjectKind::kMissing;
    pos = next;
  }
}

}  // namespace

bool H5File::exists(const std::string& name) const {
  QuietErrors quiet;
  return object_kind(static_cast<hid_t>(file_id_), path_, normalize(name)) != ObjectKind::kMissing;
}

bool H5File::is_group(const std::string& name) const {
  QuietErrors quiet;
  return object_kind(static_cast<hid_t>(file_id_), path_, normalize(name)) == ObjectKind::kGroup;
}

std::vector<std::string> H5File::list(const std::string& group) const {
  QuietErrors quiet;
  const std::string full = normalize(group);
  if (!exists(full)) fail(path_, full, "does not exist");
  if (!is_group(full)) fail(path_, full, "is not a group");
  Id g = checked(H5Gopen2(static_cast<hid_t>(file_id_), full.c_str(), H5P_DEFAULT), H5Gclose, path_, full,
                 "cannot open the group");
  H5G_info_t info;
  check_status(H5Gget_info(g.get(), &info), path_, full, "cannot read the group info");
  std::vector<std::string> names;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    ssize_t len = H5Lget_name_by_idx(g.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    if (len < 0) fail_hdf5(path_, full, "cannot read a link name");
    std::string name(static_cast<size_t>(len) + 1, '\0');
    if (H5Lget_name_by_idx(g.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size(),
                           H5P_DEFAULT) < 0)
      fail_hdf5(path_, full, "cannot read a link name");
    name.resize(static_cast<size_t>(len));
    names.push_back(std::move(name));
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<std::string> H5File::datasets(const std::string& group) const {
  QuietErrors quiet;
  const std::string full = normalize(group);
  std::vector<std::string> out;
  for (const std::string& child : list(full)) {
    std::string p = join(full, child);
    ObjectKind kind = object_kind(static_cast<hid_t>(file_id_), path_, p);
    if (kind == ObjectKind::kGroup) {
      std::vector<std::string> sub = datasets(p);
      out.insert(out.end(), sub.begin(), sub.end());
    } else if (kind == ObjectKind::kDataset) {
      out.push_back(p);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

void H5File::write_tensor(const std::string& name, const Tensor& t) {
  QuietErrors quiet;
  const std::string full = normalize(name);
  if (!t.defined()) fail(path_, full, "cannot write an undefined tensor");
  if (t.dtype() == DType::kBF16) fail(path_, full, "bfloat16 tensors cannot be stored; convert to float32 first");
  Tensor host = t.device().is_cpu() ? t : t.clone(Device::cpu());
  const hid_t f = static_cast<hid_t>(file_id_);
  if (exists(full)) {
    if (is_group(full)) fail(path_, full, "is a group; cannot replace it with a dataset");
    check_status(H5Ldelete(f, full.c_str(), H5P_DEFAULT), path_, full, "cannot replace the existing dataset");
  }
  Id space = make_space(host.shape(), path_, full);
  Id lcpl = checked(H5Pcreate(H5P_LINK_CREATE), H5Pclose, path_, full, "cannot create a property list");
  check_status(H5Pset_create_intermediate_group(lcpl.get(), 1), path_, full,
               "cannot enable creation of parent groups");
  Id ds = checked(H5Dcreate2(f, full.c_str(), file_type(host.dtype()), space.get(), lcpl.get(), H5P_DEFAULT,
                             H5P_DEFAULT),
                  H5Dclose, path_, full, "cannot create the dataset");
  if (host.numel() > 0) {
    check_status(H5Dwrite(ds.get(), memory_type(host.dtype()), H5S_ALL, H5S_ALL, H5P_DEFAULT, host.raw_data()),
                 path_, full, "cannot write the dataset");
  }
}

namespace {

// Opens a dataset, failing with "does not exist" / "is a group" rather than HDF5's generic text.
Id open_dataset(const H5File& file, hid_t f, const std::string& full) {
  if (!file.exists(full)) fail(file.path(), full, "does not exist");
  if (file.is_group(full)) fail(file.path(), full, "is a group, not a dataset");
  return checked(H5Dopen2(f, full.c_str(), H5P_DEFAULT), H5Dclose, file.path(), full, "cannot open the dataset");
}

}  // namespace

Tensor H5File::read_tensor(const std::string& name) const {
  QuietErrors quiet;
  const std::string full = normalize(name);
  Id ds = open_dataset(*this, static_cast<hid_t>(file_id_), full);
  Id type = checked(H5Dget_type(ds.get()), H5Tclose, path_, full, "cannot read the datatype");
  DType dtype;
  if (!stored_dtype(type.get(), &dtype))
    fail(path_, full, str_cat("holds ", type_name(type.get()), ", not numbers"));
  return read_tensor_as(full, dtype);
}

Tensor H5File::read_tensor_as(const std::string& name, DType dtype, const Shape* expect_shape) const {
  QuietErrors quiet;
  const std::string full = normalize(name);
  if (memory_type(dtype) < 0) fail(path_, full, str_cat("cannot be read as ", dtype_name(dtype)));
  Id ds = open_dataset(*this, static_cast<hid_t>(file_id_), full);
  Id type = checked(H5Dget_type(ds.get()), H5Tclose, path_, full, "cannot read the datatype");
  DType stored;
  if (!stored_dtype(type.get(), &stored))
    fail(path_, full, str_cat("holds ", type_name(type.get()), ", not numbers"));
  Id space = checked(H5Dget_space(ds.get()), H5Sclose, path_, full, "cannot read the dataspace");
  Shape shape = space_shape(space.get(), path_, full);
  if (expect_shape != nullptr && shape != *expect_shape)
    fail(path_, full, str_cat("has shape ", shape_str(shape), ", expected ", shape_str(*expect_shape)));
  Tensor t = Tensor::empty(shape, dtype);
  if (t.numel() > 0) {
    check_status(H5Dread(ds.get(), memory_type(dtype), H5S_ALL, H5S_ALL, H5P_DEFAULT, t.raw_data()), path_, full,
                 str_cat("cannot read the dataset (", type_name(type.get()), " as ", dtype_name(dtype), ")").c_str());
  }
  return t;
}

Shape H5File::dataset_shape(const std::string& name) const {
  QuietErrors quiet;
  const std::string full = normalize(name);
  Id ds = open_dataset(*this, static_cast<hid_t>(file_id_), full);
  Id space = checked(H5Dget_space(ds.get()), H5Sclose, path_, full, "cannot read the dataspace");
  return space_shape(space.get(), path_, full);
}

void H5File::write_scalar(const std::string& name, double value) {
  write_tensor(name, Tensor::from_vector<double>({}, {value}));
}

void H5File::write_scalar_int(const std::string& name, int64_t value) {
  write_tensor(name, Tensor::from_vector<int64_t>({}, {value}));
}

double H5File::read_scalar(const std::string& name) const {
  Tensor t = read_tensor_as(name, DType::kF64);
  if (t.numel() != 1)
    fail(path_, normalize(name), str_cat("has shape ", shape_str(t.shape()), "; expected a scalar"));
  return t.data<double>()[0];
}

int64_t H5File::read_scalar_int(const std::string& name) const {
  Tensor raw = read_tensor(name);
  if (raw.dtype() == DType::kF32 || raw.dtype() == DType::kF64)
    fail(path_, normalize(name), str_cat("holds ", dtype_name(raw.dtype()), "; expected an integer"));
  if (raw.numel() != 1)
    fail(path_, normalize(name), str_cat("has shape ", shape_str(raw.shape()), "; expected a scalar"));
  return read_tensor_as(name, DType::kI64).data<int64_t>()[0];
}

void H5File::write_string(const std::string& name, const std::string& value) {
  QuietErrors quiet;
  const std::string full = normalize(name);
  const hid_t f = static_cast<hid_t>(file_id_);
  if (exists(full)) {
    if (is_group(full)) fail(path_, full, "is a group; cannot replace it with a string");
    check_status(H5Ldelete(f, full.c_str(), H5P_DEFAULT), path_, full, "cannot replace the existing dataset");
  }
  Id type = vlen_string_type(path_, full);
  Id space = checked(H5Screate(H5S_SCALAR), H5Sclose, path_, full, "cannot create a scalar dataspace");
  Id lcpl = checked(H5Pcreate(H5P_LINK_CREATE), H5Pclose, path_, full, "cannot create a property list");
  check_status(H5Pset_create_intermediate_group(lcpl.get(), 1), path_, full,
               "cannot enable creation of parent groups");
  Id ds = checked(H5Dcreate2(f, full.c_str(), type.get(), space.get(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT),
                  H5Dclose, path_, full, "cannot create the dataset");
  const char* p = value.c_str();
  check_status(H5Dwrite(ds.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, &p), path_, full,
               "cannot write the string");
}

bool H5File::is_string(const std::string& name) const {
  QuietErrors quiet;
  const std::string full = normalize(name);
  Id ds = open_dataset(*this, static_cast<hid_t>(file_id_), full);
  Id type = checked(H5Dget_type(ds.get()), H5Tclose, path_, full, "cannot read the datatype");
  return H5Tget_class(type.get()) == H5T_STRING;
}

std::string H5File::read_string(const std::string& name) const {
  QuietErrors quiet;
  const std::string full = normalize(name);
  Id ds = open_dataset(*this, static_cast<hid_t>(file_id_), full);
  Id type = checked(H5Dget_type(ds.get()), H5Tclose, path_, full, "cannot read the datatype");
  Id space = checked(H5Dget_space(ds.get()), H5Sclose, path_, full, "cannot read the dataspace");
  hid_t d = ds.get();
  return read_string_value(
      type.get(), space.get(),
      [d](hid_t mem, void* buf) { return H5Dread(d, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf); }, path_, full);
}

// ---- attributes ---------------------------------------------------------------------------------

namespace {

std::string attr_label(const std::string& object, const std::string& attr) {
  return str_cat(object, " attribute '", attr, "'");
}

}  // namespace

void H5File::set_attr_int(const std::string& object, const std::string& attr, int64_t value) {
  QuietErrors quiet;
  const std::string full = normalize(object);
  const std::string label = attr_label(full, attr);
  if (!exists(full)) fail(path_, full, "does not exist; cannot set an attribute on it");
  const hid_t f = static_cast<hid_t>(file_id_);
  if (has_attr(full, attr))
    check_status(H5Adelete_by_name(f, full.c_str(), attr.c_str(), H5P_DEFAULT), path_, label,
                 "cannot replace the attribute");
  Id space = checked(H5Screate(H5S_SCALAR), H5Sclose, path_, label, "cannot create a scalar dataspace");
  Id a = checked(H5Acreate_by_name(f, full.c_str(), attr.c_str(), H5T_STD_I64LE, space.get(), H5P_DEFAULT,
                                   H5P_DEFAULT, H5P_DEFAULT),
                 H5Aclose, path_, label, "cannot create the attribute");
  check_status(H5Awrite(a.get(), H5T_NATIVE_INT64, &value), path_, label, "cannot write the attribute");
}

void H5File::set_attr_string(const std::string& object, const std::string& attr, const std::string& value) {
  QuietErrors quiet;
  const std::string full = normalize(object);
  const std::string label = attr_label(full, attr);
  if (!exists(full)) fail(path_, full, "does not exist; cannot set an attribute on it");
  const hid_t f = static_cast<hid_t>(file_id_);
  if (has_attr(full, attr))
    check_status(H5Adelete_by_name(f, full.c_str(), attr.c_str(), H5P_DEFAULT), path_, label,
                 "cannot replace the attribute");
  Id type = vlen_string_type(path_, label);
  Id space = checked(H5Screate(H5S_SCALAR), H5Sclose, path_, label, "cannot create a scalar dataspace");
  Id a = checked(H5Acreate_by_name(f, full.c_str(), attr.c_str(), type.get(), space.get(), H5P_DEFAULT,
                                   H5P_DEFAULT, H5P_DEFAULT),
                 H5Aclose, path_, label, "cannot create the attribute");
  const char* p = value.c_str();
  check_status(H5Awrite(a.get(), type.get(), &p), path_, label, "cannot write the attribute");
}

bool H5File::has_attr(const std::string& object, const std::string& attr) const {
  QuietErrors quiet;
  const std::string full = normalize(object);
  if (!exists(full)) fail(path_, full, "does not exist");
  htri_t r = H5Aexists_by_name(static_cast<hid_t>(file_id_), full.c_str(), attr.c_str(), H5P_DEFAULT);
  if (r < 0) fail_hdf5(path_, attr_label(full, attr), "cannot look up the attribute");
  return r > 0;
}

namespace {

Id open_attr(const H5File& file, hid_t f, const std::string& full, const std::string& attr) {
  const std::string label = attr_label(full, attr);
  if (!file.has_attr(full, attr)) fail(file.path(), label, "does not exist");
  return checked(H5Aopen_by_name(f, full.c_str(), attr.c_str(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose,
                 file.path(), label, "cannot open the attribute");
}

}  // namespace

int64_t H5File::get_attr_int(const std::string& object, const std::string& attr) const {
  QuietErrors quiet;
  const std::string full = normalize(object);
  const std::string label = attr_label(full, attr);
  Id a = open_attr(*this, static_cast<hid_t>(file_id_), full, attr);
  Id type = checked(H5Aget_type(a.get()), H5Tclose, path_, label, "cannot read the datatype");
  if (H5Tget_class(type.get()) != H5T_INTEGER)
    fail(path_, label, str_cat("holds ", type_name(type.get()), "; expected an integer"));
  Id space = checked(H5Aget_space(a.get()), H5Sclose, path_, label, "cannot read the dataspace");
  Shape shape = space_shape(space.get(), path_, label);
  if (shape_numel(shape) != 1)
    fail(path_, label, str_cat("has shape ", shape_str(shape), "; expected a single integer"));
  int64_t value = 0;
  check_status(H5Aread(a.get(), H5T_NATIVE_INT64, &value), path_, label, "cannot read the attribute");
  return value;
}

std::string H5File::get_attr_string(const std::string& object, const std::string& attr) const {
  QuietErrors quiet;
  const std::string full = normalize(object);
  const std::string label = attr_label(full, attr);
  Id a = open_attr(*this, static_cast<hid_t>(file_id_), full, attr);
  Id type = checked(H5Aget_type(a.get()), H5Tclose, path_, label, "cannot read the datatype");
  Id space = checked(H5Aget_space(a.get()), H5Sclose, path_, label, "cannot read the dataspace");
  hid_t aid = a.get();
  return read_string_value(
      type.get(), space.get(), [aid](hid_t mem, void* buf) { return H5Aread(aid, mem, buf); }, path_, label);
}

void H5File::flush() {
  QuietErrors quiet;
  check_status(H5Fflush(static_cast<hid_t>(file_id_), H5F_SCOPE_GLOBAL), path_, "", "cannot flush the file");
}

}  // namespace alexnet
