// Checkpoints in HDF5, layout v1 (shared/ARCHITECTURE.md): the full resolved config, the model in
// the tower-merged layout of a grouped-convolution AlexNet, and the SGD momentum.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "core/tensor.h"

namespace alexnet {

constexpr const char* kCheckpointFormat = "alexnet-checkpoint";
constexpr int kCheckpointFormatVersion = 1;

struct CheckpointData {
  std::string config_yaml;                 // /config
  std::map<std::string, Tensor> model;     // "conv1/weight" -> float32, merged layout (/model/...)
  std::map<std::string, Tensor> momentum;  // same keys (/optimizer/momentum/...); empty: none stored
  int64_t step = 0;                        // root attributes
  int64_t epoch = 0;
  // Further datasets by absolute path outside /config, /model and /optimizer/momentum ("/train/step"),
  // e.g. the state a resume needs (docs/checkpoint.md). Written by write_checkpoint; read_checkpoint
  // leaves them empty (read them with H5File).
  std::map<std::string, Tensor> extra_tensors;
  std::map<std::string, std::string> extra_strings;
};

class H5File;

// Creates an HDF5 file at `path` whose contents `fill` writes: into "<path>.tmp", flushed and fsynced,
// then renamed over `path`. A failure leaves any existing `path` untouched and no .tmp behind; the
// error names `what` ("checkpoint", "batch file", ...) and the path.
void write_hdf5_atomically(const std::string& path, const std::string& what,
                           const std::function<void(H5File&)>& fill);

// A small text file written the same way: "<path>.tmp", fsync, rename over `path`, fsync of the folder.
void write_text_atomically(const std::string& path, const std::string& text);

// Writes `path` atomically (write_hdf5_atomically). Tensors must be CPU float32.
void write_checkpoint(const std::string& path, const CheckpointData& data);

// Attribute on every dataset write_checkpoint writes: the CRC-32 (zlib) of its raw little-endian bytes
// (of the UTF-8 bytes for strings).
constexpr const char* kChecksumAttr = "crc32";

// Re-reads every dataset of the file and compares it with its checksum attribute. Throws naming the
// file and the first dataset whose data differ, lack a checksum, or cannot be read.
void verify_checkpoint(const std::string& path);

// Reads a checkpoint. Accepts a weights-only file (only /config and /model); missing step/epoch
// attributes read as 0. Errors name the file and the problem (not HDF5, wrong format attribute,
// unsupported version, missing /config or /model).
CheckpointData read_checkpoint(const std::string& path);

}  // namespace alexnet
