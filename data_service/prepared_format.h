// The prepared folder's file names and binary layouts (docs/data.md), shared by the writer (prepared.cc)
// and the readers (prepared_store.cc): checksums, byte serialisation, part records and shard tables.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "data_service/dataset.h"

namespace alexnet::prepared_format {

inline constexpr const char* kIndexFile = "index.txt";     // written last: its presence means complete
inline constexpr const char* kStatsFile = "stats.h5";
inline constexpr const char* kBadFilesFile = "bad_files.txt";
inline constexpr const char* kIndexMagic = "alexnet-prepared-index";
inline constexpr int kIndexVersion = 1;
inline constexpr int kSide = 256;                          // the paper's rescaled images (§2)
inline constexpr char kShardMagic[8] = {'A', 'L', 'X', 'S', 'H', 'A', 'R', 'D'};
inline constexpr char kPartMagic[8] = {'A', 'L', 'X', 'P', 'A', 'R', 'T', '1'};
inline constexpr uint32_t kShardVersion = 1;
inline constexpr uint32_t kFlagBad = 1;                    // shard entry without an image: substitute one
inline constexpr size_t kShardHeaderBytes = 32;
inline constexpr size_t kShardEntryBytes = 16;

std::string shard_name(bool val, int64_t chunk);  // "shards/train-00012.shard"
std::string part_name(bool val, int64_t chunk);   // "parts/train-00012.part"

// 64-bit checksum over a byte stream (multiply-rotate over 8-byte words, splitmix64 finaliser); detects
// torn or corrupted files, not adversaries. Streaming: update() any number of times, then value().
class Checksum {
 public:
  void update(const void* data, size_t n);
  uint64_t value() const;

 private:
  void word(uint64_t w);
  uint64_t h_ = 0x243F6A8885A308D3ull;
  uint64_t total_ = 0;
  uint8_t tail_[8] = {};
  size_t tail_n_ = 0;
};
uint64_t checksum64(const void* data, size_t n);

// Little-endian serialisation (the machines we run on are little-endian; values are copied as is).
class ByteWriter {
 public:
  template <class T> void put(T v) {
    const size_t at = bytes.size();
    bytes.resize(at + sizeof(T));
    std::memcpy(bytes.data() + at, &v, sizeof(T));
  }
  void put_bytes(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    bytes.insert(bytes.end(), b, b + n);
  }
  std::vector<uint8_t> bytes;
};

class ByteReader {
 public:
  ByteReader(const uint8_t* data, size_t size, std::string name) : p_(data), n_(size), name_(std::move(name)) {}
  template <class T> T get() {
    T v;
    std::memcpy(&v, take(sizeof(T)), sizeof(T));
    return v;
  }
  const uint8_t* take(size_t n) {
    ALEXNET_CHECK(n <= n_ - pos_, name_, ": truncated (wanted ", n, " bytes at offset ", pos_, ", size ", n_, ")");
    const uint8_t* at = p_ + pos_;
    pos_ += n;
    return at;
  }
  size_t pos() const { return pos_; }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;
  std::string name_;
};

// A shard's entry table: where each image's bytes lie in the file.
struct ShardEntry {
  uint64_t offset = 0;
  uint32_t size = 0;
  uint32_t flags = 0;
};

// Reads a whole file; errors name it.
std::vector<uint8_t> read_file(const std::string& path);
// Writes `path` through "<path>.tmp" and a rename, so a reader sees the old file or the whole new one.
void write_file_atomically(const std::string& path, const void* data, size_t size);

// What index.txt records besides the dataset index.
struct PreparedInfo {
  int64_t chunk_images = 0;
  bool shards = false;
  int shard_quality = 0;
};
void write_index_file(const std::string& prepared, const DatasetIndex& index, const PreparedInfo& info);
DatasetIndex read_index_file(const std::string& prepared, PreparedInfo* info);

}  // namespace alexnet::prepared_format
