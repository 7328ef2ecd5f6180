// Checkpoint layout v1 on top of H5File: root attributes, /config, /model, /optimizer/momentum.
// Writes go to "<path>.tmp", are flushed and fsynced, then renamed over `path`, so a crash leaves
// either the old checkpoint or the new one, never half of one.
#include "checkpoint/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include <zlib.h>

#include "checkpoint/h5file.h"

namespace alexnet {
namespace {

constexpr const char* kModelGroup = "/model";
constexpr const char* kMomentumGroup = "/optimizer/momentum";

// A parameter key ("conv1/weight") must be a relative path of plain names.
void check_key(const std::string& path, const std::string& group, const std::string& key) {
  bool ok = !key.empty() && key.front() != '/' && key.back() != '/' && key.find("//") == std::string::npos;
  for (size_t i = 0; ok && i <= key.size();) {
    size_t j = key.find('/', i);
    if (j == std::string::npos) j = key.size();
    std::string part = key.substr(i, j - i);
    ok = part != "." && part != "..";
    i = j + 1;
  }
  ALEXNET_CHECK(ok, "checkpoint '", path, "': invalid tensor name '", key, "' for ", group,
                " (expected a relative name like \"conv1/weight\")");
}

void check_group(const std::string& path, const std::string& group, const std::map<std::string, Tensor>& tensors) {
  for (const auto& [key, t] : tensors) {
    check_key(path, group, key);
    ALEXNET_CHECK(t.defined(), "checkpoint '", path, "': ", group, "/", key, " is an undefined tensor");
    ALEXNET_CHECK(t.dtype() == DType::kF32, "checkpoint '", path, "': ", group, "/", key, " is ",
                  dtype_name(t.dtype()), "; checkpoints hold float32");
  }
}

uint32_t crc_of(const void* data, size_t bytes) {
  uLong crc = crc32(0L, Z_NULL, 0);
  const auto* p = static_cast<const Bytef*>(data);
  while (bytes > 0) {  // zlib takes uInt lengths
    const uInt chunk = static_cast<uInt>(std::min<size_t>(bytes, size_t{1} << 30));
    crc = crc32(crc, p, chunk);
    p += chunk;
    bytes -= chunk;
  }
  return static_cast<uint32_t>(crc);
}

uint32_t crc_of(const Tensor& t) { return crc_of(t.raw_data(), t.nbytes()); }

void write_tensor_checked(H5File& file, const std::string& name, const Tensor& t) {
  file.write_tensor(name, t);
  file.set_attr_int(name, kChecksumAttr, crc_of(t));
}

void write_string_checked(H5File& file, const std::string& name, const std::string& value) {
  file.write_string(name, value);
  file.set_attr_int(name, kChecksumAttr, crc_of(value.data(), value.size()));
}

void write_group(H5File& file, const std::string& group, const std::map<std::string, Tensor>& tensors) {
  for (const auto& [key, t] : tensors) write_tensor_checked(file, group + "/" + key, t);
}

// Every dataset under `group`, keyed by its path relative to the group; float32 only.
std::map<std::string, Tensor> read_group(const H5File& file, const std::string& group) {
  std::map<std::string, Tensor> out;
  const std::string prefix = std::string(group) + "/";
  for (const std::string& name : file.datasets(group)) {
    Tensor t = file.read_tensor(name);
    ALEXNET_CHECK(t.dtype() == DType::kF32, "checkpoint '", file.path(), "': ", name, " holds ",
                  dtype_name(t.dtype()), " data; checkpoints hold float32");
    out.emplace(name.substr(prefix.size()), std::move(t));
  }
  return out;
}

// Momentum, when stored, pairs with a parameter of the same shape.
void check_momentum(const std::string& path, const std::map<std::string, Tensor>& model,
                    const std::map<std::string, Tensor>& momentum) {
  for (const auto& [key, v] : momentum) {
    auto it = model.find(key);
    ALEXNET_CHECK(it != model.end(), "checkpoint '", path, "': ", kMomentumGroup, "/", key,
                  " has no parameter /model/", key);
    ALEXNET_CHECK(it->second.shape() == v.shape(), "checkpoint '", path, "': ", kMomentumGroup, "/", key,
                  " has shape ", shape_str(v.shape()), " but /model/", key, " has ", shape_str(it->second.shape()));
  }
}

// fsync of a file or directory; `what` names it in the error.
void fsync_path(const std::string& path, bool directory, const std::string& what) {
  int fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  ALEXNET_CHECK(fd >= 0, "checkpoint '", what, "': cannot open '", path, "' to sync it: ", std::strerror(errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  ALEXNET_CHECK(rc == 0, "checkpoint '", what, "': fsync of '", path, "' failed: ", std::strerror(err));
}

}  // namespace

void write_hdf5_atomically(const std::string& path, const std::string& what,
                           const std::function<void(H5File&)>& fill) {
  const std::string tmp = path + ".tmp";
  std::error_code ec;
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  ALEXNET_CHECK(parent.empty() || std::filesystem::is_directory(parent, ec), "cannot write ", what, " '", path,
                "': folder '", parent.string(), "' does not exist");
  std::filesystem::remove(tmp, ec);  // a stale one from an earlier crash
  try {
    {
      H5File file(tmp, H5File::Mode::kCreate);
      fill(file);
      // H5Fclose in the destructor cannot report failures; flushing here does, while we can throw.
      file.flush();
    }
    fsync_path(tmp, false, path);
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
      ALEXNET_FAIL(what, " '", path, "': cannot rename '", tmp, "' to it: ", std::strerror(errno));
    }
  } catch (const Error& e) {
    std::filesystem::remove(tmp, ec);
    throw Error(str_cat("cannot write ", what, " '", path, "': ", e.what()));
  } catch (...) {
    std::filesystem::remove(tmp, ec);
    throw;
  }
  // Makes the rename itself durable.
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  fsync_path(dir.empty() ? "." : dir.string(), true, path);
}

void write_text_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    out.flush();
    ALEXNET_CHECK(out.good(), "cannot write '", tmp, "'");
  }
  fsync_path(tmp, false, path);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    ALEXNET_FAIL("cannot rename '", tmp, "' to '", path, "': ", std::strerror(err));
  }
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  fsync_path(dir.empty() ? "." : dir.string(), true, path);
}

void write_checkpoint(const std::string& path, const CheckpointData& data) {
  // Everything that can be checked up front is, so a bad tensor never costs a partial write.
  check_group(path, kModelGroup, data.model);
  check_group(path, kMomentumGroup, data.momentum);
  check_momentum(path, data.model, data.momentum);
  write_hdf5_atomically(path, "checkpoint", [&](H5File& file) {
    file.set_attr_string("/", "format", kCheckpointFormat);
    file.set_attr_int("/", "format_version", kCheckpointFormatVersion);
    file.set_attr_int("/", "step", data.step);
    file.set_attr_int("/", "epoch", data.epoch);
    write_string_checked(file, "/config", data.config_yaml);
    write_group(file, kModelGroup, data.model);
    write_group(file, kMomentumGroup, data.momentum);
    for (const auto& [name, t] : data.extra_tensors) write_tensor_checked(file, name, t);
    for (const auto& [name, value] : data.extra_strings) write_string_checked(file, name, value);
  });
}

void verify_checkpoint(const std::string& path) {
  H5File file(path, H5File::Mode::kRead);
  const std::vector<std::string> names = file.datasets("/");
  ALEXNET_CHECK(!names.empty(), "checkpoint '", path, "' holds no datasets");
  for (const std::string& name : names) {
    ALEXNET_CHECK(file.has_attr(name, kChecksumAttr), "checkpoint '", path, "': ", name, " has no ",
                  kChecksumAttr, " checksum (not written by alexnet-worker or alexnet-tool)");
    const int64_t want = file.get_attr_int(name, kChecksumAttr);
    int64_t got = 0;
    if (file.is_string(name)) {
      const std::string value = file.read_string(name);
      got = crc_of(value.data(), value.size());
    } else {
      got = crc_of(file.read_tensor(name));
    }
    ALEXNET_CHECK(got == want, "checkpoint '", path, "': ", name, " is damaged (CRC-32 ", got, ", stored ", want, ")");
  }
}

CheckpointData read_checkpoint(const std::string& path) {
  H5File file(path, H5File::Mode::kRead);
  // A file without the format attribute is accepted as a bare weights file (e.g. written by h5py);
  // one that names another format, or a newer version, is refused.
  if (file.has_attr("/", "format")) {
    std::string format = file.get_attr_string("/", "format");
    ALEXNET_CHECK(format == kCheckpointFormat, "checkpoint '", path, "' is not an alexnet checkpoint: its format "
                  "attribute is '", format, "' (expected '", kCheckpointFormat, "')");
  }
  if (file.has_attr("/", "format_version")) {
    int64_t version = file.get_attr_int("/", "format_version");
    ALEXNET_CHECK(version == kCheckpointFormatVersion, "checkpoint '", path, "' has unsupported format_version ",
                  version, " (this build reads version ", kCheckpointFormatVersion, ")");
  }
  ALEXNET_CHECK(file.exists("/config"), "checkpoint '", path, "' has no /config (the run's YAML config)");
  ALEXNET_CHECK(!file.is_group("/config"), "checkpoint '", path, "': /config is a group; expected a string");
  ALEXNET_CHECK(file.exists(kModelGroup) && file.is_group(kModelGroup), "checkpoint '", path,
                "' has no /model group (the weights)");

  CheckpointData data;
  data.config_yaml = file.read_string("/config");
  data.model = read_group(file, kModelGroup);
  ALEXNET_CHECK(!data.model.empty(), "checkpoint '", path, "': /model holds no datasets");
  if (file.exists(kMomentumGroup)) {
    ALEXNET_CHECK(file.is_group(kMomentumGroup), "checkpoint '", path, "': ", kMomentumGroup, " is not a group");
    data.momentum = read_group(file, kMomentumGroup);
    check_momentum(path, data.model, data.momentum);
  }
  if (file.has_attr("/", "step")) data.step = file.get_attr_int("/", "step");
  if (file.has_attr("/", "epoch")) data.epoch = file.get_attr_int("/", "epoch");
  return data;
}

}  // namespace alexnet
