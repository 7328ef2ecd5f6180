// Reading and writing the prepared folder's files: index.txt, stats.h5, the binary helpers of
// prepared_format.h, and the SampleSource over shards or original files.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "checkpoint/checkpoint.h"
#include "checkpoint/h5file.h"
#include "core/error.h"
#include "data_service/prepared.h"
#include "data_service/prepared_format.h"

namespace alexnet {
namespace fs = std::filesystem;

namespace prepared_format {

std::string shard_name(bool val, int64_t chunk) {
  char b[48];
  std::snprintf(b, sizeof(b), "shards/%s-%05lld.shard", val ? "val" : "train", static_cast<long long>(chunk));
  return b;
}

std::string part_name(bool val, int64_t chunk) {
  char b[48];
  std::snprintf(b, sizeof(b), "parts/%s-%05lld.part", val ? "val" : "train", static_cast<long long>(chunk));
  return b;
}

namespace {
constexpr uint64_t kP1 = 0x9E3779B185EBCA87ull, kP2 = 0xC2B2AE3D27D4EB4Full;
uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
}  // namespace

void Checksum::word(uint64_t w) { h_ = rotl(h_ ^ (w * kP2), 31) * kP1; }

void Checksum::update(const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  total_ += n;
  while (tail_n_ > 0 && tail_n_ < 8 && n > 0) {
    tail_[tail_n_++] = *p++;
    --n;
  }
  if (tail_n_ == 8) {
    uint64_t w;
    std::memcpy(&w, tail_, 8);
    word(w);
    tail_n_ = 0;
  }
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    word(w);
  }
  for (; n > 0; --n) tail_[tail_n_++] = *p++;
}

uint64_t Checksum::value() const {
  uint64_t h = h_, w = 0;
  std::memcpy(&w, tail_, tail_n_);
  h = rotl(h ^ (w * kP2), 31) * kP1 ^ total_;
  // splitmix64's finaliser spreads every input bit over the result.
  h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ull;
  h = (h ^ (h >> 27)) * 0x94D049BB133111EBull;
  return h ^ (h >> 31);
}

uint64_t checksum64(const void* data, size_t n) {
  Checksum c;
  c.update(data, n);
  return c.value();
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  ALEXNET_CHECK(f != nullptr, path, ": cannot open: ", std::strerror(errno));
  std::vector<uint8_t> bytes;
  struct stat st {};
  if (fstat(fileno(f), &st) == 0 && st.st_size > 0) bytes.reserve(static_cast<size_t>(st.st_size));
  uint8_t buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) bytes.insert(bytes.end(), buf, buf + n);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  ALEXNET_CHECK(!failed, path, ": read error");
  return bytes;
}

void write_file_atomically(const std::string& path, const void* data, size_t size) {
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  ALEXNET_CHECK(f != nullptr, tmp, ": cannot create: ", std::strerror(errno));
  bool ok = std::fwrite(data, 1, size, f) == size;
  ok = std::fflush(f) == 0 && ok;
  ok = fsync(fileno(f)) == 0 && ok;  // the rename must not become visible before the data
  ok = std::fclose(f) == 0 && ok;
  if (!ok) {
    std::remove(tmp.c_str());
    ALEXNET_FAIL(path, ": write failed (disk full?)");
  }
  ALEXNET_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, path, ": cannot rename ", tmp, " into place: ",
                std::strerror(errno));
}

void write_index_file(const std::string& prepared, const DatasetIndex& index, const PreparedInfo& info) {
  std::ostringstream s;
  s << kIndexMagic << "\t" << kIndexVersion << "\n"
    << "root\t" << index.root << "\n"
    << "chunk_images\t" << info.chunk_images << "\n"
    << "shards\t" << (info.shards ? 1 : 0) << "\t" << info.shard_quality << "\n"
    << "classes\t" << index.wnids.size() << "\n"
    << "train_images\t" << index.train.size() << "\n"
    << "val_images\t" << index.val.size() << "\n";
  for (const std::string& w : index.wnids) s << "wnid\t" << w << "\n";
  for (const char* split : {"train", "val"}) {
    for (const DatasetEntry& e : split[0] == 't' ? index.train : index.val) {
      ALEXNET_CHECK(e.path.find_first_of("\t\n") == std::string::npos, index.root, "/", e.path,
                    ": file names with tabs or newlines cannot be indexed");
      s << split << "\t" << e.label << "\t" << e.path << "\n";
    }
  }
  const std::string text = s.str();
  write_file_atomically((fs::path(prepared) / kIndexFile).string(), text.data(), text.size());
}

DatasetIndex read_index_file(const std::string& prepared, PreparedInfo* info) {
  const std::string path = (fs::path(prepared) / kIndexFile).string();
  ALEXNET_CHECK(fs::is_directory(prepared), prepared, ": prepared folder does not exist (run alexnet-tool prepare)");
  std::ifstream in(path);
  ALEXNET_CHECK(in.good(), path, ": missing: the prepared folder ", prepared,
                " is incomplete (alexnet-tool prepare was interrupted or never run; rerun it to resume)");
  DatasetIndex index;
  PreparedInfo local;
  PreparedInfo& inf = info ? *info : local;
  int64_t classes = -1, n_train = -1, n_val = -1;
  std::string line;
  int64_t line_no = 0;
  auto bad = [&](const std::string& what) { ALEXNET_FAIL(path, ":", line_no, ": ", what); };
  while (std::getline(in, line)) {
    ++line_no;
    const size_t tab = line.find('\t');
    if (tab == std::string::npos) bad("expected TAB-separated fields, got '" + line + "'");
    const std::string key = line.substr(0, tab), rest = line.substr(tab + 1);
    try {
      if (line_no == 1) {
        if (key != kIndexMagic || std::stoi(rest) != kIndexVersion)
          bad(str_cat("not a prepared index of version ", kIndexVersion, " (first line '", line, "')"));
      } else if (key == "train" || key == "val") {
        const size_t tab2 = rest.find('\t');
        if (tab2 == std::string::npos) bad("expected <split> TAB <label> TAB <path>");
        DatasetEntry e{rest.substr(tab2 + 1), static_cast<int32_t>(std::stol(rest.substr(0, tab2)))};
        if (e.label < 0 || e.label >= classes) bad(str_cat("label ", e.label, " out of range 0..", classes - 1));
        (key == "train" ? index.train : index.val).push_back(std::move(e));
      } else if (key == "wnid") {
        index.wnids.push_back(rest);
      } else if (key == "root") {
        index.root = rest;
      } else if (key == "chunk_images") {
        inf.chunk_images = std::stoll(rest);
      } else if (key == "shards") {
        inf.shards = std::stoi(rest) != 0;
        inf.shard_quality = std::stoi(rest.substr(rest.find('\t') + 1));
      } else if (key == "classes") {
        classes = std::stoll(rest);
      } else if (key == "train_images") {
        n_train = std::stoll(rest);
      } else if (key == "val_images") {
        n_val = std::stoll(rest);
      } else {
        bad("unknown record '" + key + "'");
      }
    } catch (const std::logic_error&) {  // std::stoi and friends on a damaged line
      bad("malformed number in '" + line + "'");
    }
  }
  ALEXNET_CHECK(line_no > 0, path, ": empty file");
  ALEXNET_CHECK(static_cast<int64_t>(index.wnids.size()) == classes &&
                    static_cast<int64_t>(index.train.size()) == n_train &&
                    static_cast<int64_t>(index.val.size()) == n_val && inf.chunk_images > 0,
                path, ": damaged (holds ", index.wnids.size(), " classes, ", index.train.size(), " train and ",
                index.val.size(), " val entries; its header says ", classes, ", ", n_train, ", ", n_val,
                "); rerun alexnet-tool prepare");
  return index;
}

}  // namespace prepared_format

namespace pf = prepared_format;

DatasetIndex read_prepared_index(const std::string& prepared) { return pf::read_index_file(prepared, nullptr); }

void write_image_stats(const std::string& path, const ImageStats& s) {
  const int64_t side = s.side;
  ALEXNET_CHECK(static_cast<int64_t>(s.mean_image.size()) == 3 * side * side, path, ": mean image holds ",
                s.mean_image.size(), " values, expected 3x", side, "x", side);
  write_hdf5_atomically(path, "image statistics", [&](H5File& f) {
    f.set_attr_string("/", "format", "alexnet-image-stats");
    f.set_attr_int("/", "format_version", 1);
    f.set_attr_int("/", "side", side);
    f.write_tensor("/mean_image", Tensor::from_vector<float>({3, side, side}, s.mean_image));
    f.write_tensor("/channel_mean", Tensor::from_vector<double>({3}, {s.channel_mean.begin(), s.channel_mean.end()}));
    f.write_tensor("/covariance", Tensor::from_vector<double>({3, 3}, {s.covariance.begin(), s.covariance.end()}));
    f.write_tensor("/eigenvalues", Tensor::from_vector<double>({3}, {s.eigenvalues.begin(), s.eigenvalues.end()}));
    f.write_tensor("/eigenvectors",
                   Tensor::from_vector<double>({3, 3}, {s.eigenvectors.begin(), s.eigenvectors.end()}));
  });
}

ImageStats read_image_stats(const std::string& prepared) {
  // A folder means its stats.h5; a file is read as it is.
  const std::string path = fs::is_directory(prepared) ? (fs::path(prepared) / pf::kStatsFile).string() : prepared;
  ALEXNET_CHECK(fs::exists(path), path, ": no image statistics (run alexnet-tool prepare)");
  H5File f(path, H5File::Mode::kRead);
  ALEXNET_CHECK(f.has_attr("/", "format") && f.get_attr_string("/", "format") == "alexnet-image-stats", path,
                ": not an image-statistics file (attribute format != alexnet-image-stats)");
  ImageStats s;
  s.side = static_cast<int>(f.get_attr_int("/", "side"));
  ALEXNET_CHECK(s.side > 0 && s.side <= 4096, path, ": bad side ", s.side);
  const Shape mean_shape{3, s.side, s.side}, v3{3}, m33{3, 3};
  const Tensor mean = f.read_tensor_as("/mean_image", DType::kF32, &mean_shape);
  s.mean_image.assign(mean.data<float>(), mean.data<float>() + mean.numel());
  auto fill = [&](const char* name, const Shape& shape, double* out) {
    const Tensor t = f.read_tensor_as(name, DType::kF64, &shape);
    std::copy(t.data<double>(), t.data<double>() + t.numel(), out);
  };
  fill("/channel_mean", v3, s.channel_mean.data());
  fill("/covariance", m33, s.covariance.data());
  fill("/eigenvalues", v3, s.eigenvalues.data());
  fill("/eigenvectors", m33, s.eigenvectors.data());
  return s;
}

namespace {

// The original file of sample i: what both sources name in messages.
std::string sample_path(const DatasetIndex& index, bool val, int64_t i) {
  const auto& list = val ? index.val : index.train;
  ALEXNET_CHECK(i >= 0 && i < static_cast<int64_t>(list.size()), "sample ", i, " out of range of the ",
                val ? "val" : "train", " set (", list.size(), " images)");
  return index.root + "/" + list[i].path;
}

class OriginalFiles final : public SampleSource {
 public:
  explicit OriginalFiles(const DatasetIndex& index) : index_(index) {}
  StatusOr<std::vector<uint8_t>> read(bool val, int64_t i) const override {
    const std::string path = name(val, i);
    try {
      return pf::read_file(path);
    } catch (const Error& e) {
      return Status::error(e.what());
    }
  }
  bool pre_resized() const override { return false; }
  std::string name(bool val, int64_t i) const override { return sample_path(index_, val, i); }

 private:
  DatasetIndex index_;
};

// Shards: every file stays open and its entry table in memory; pread() lets threads read concurrently.
class ShardFiles final : public SampleSource {
 public:
  ShardFiles(const DatasetIndex& index, const std::string& prepared, int64_t chunk)
      : index_(index), chunk_(chunk) {
    try {
      for (int split = 0; split < 2; ++split) {
        const int64_t n = static_cast<int64_t>(split ? index.val.size() : index.train.size());
        for (int64_t c = 0; c * chunk < n; ++c) open_shard(split == 1, c, prepared, std::min(chunk, n - c * chunk));
      }
    } catch (...) {
      close_all();  // the destructor does not run for a constructor that throws
      throw;
    }
  }
  ~ShardFiles() override { close_all(); }
  StatusOr<std::vector<uint8_t>> read(bool val, int64_t i) const override {
    const std::string who = name(val, i);
    const Shard& s = shards_[val][i / chunk_];
    const pf::ShardEntry& e = s.entries[i % chunk_];
    if (e.flags & pf::kFlagBad) return Status::error(str_cat(who, ": bad image file, skipped by prepare (", s.path, ")"));
    std::vector<uint8_t> bytes(e.size);
    size_t done = 0;
    while (done < e.size) {
      const ssize_t r = ::pread(s.fd, bytes.data() + done, e.size - done, static_cast<off_t>(e.offset + done));
      if (r <= 0) return Status::error(str_cat(s.path, ": read failed for ", who, ": ", r == 0 ? "unexpected end" : std::strerror(errno)));
      done += static_cast<size_t>(r);
    }
    return bytes;
  }
  bool pre_resized() const override { return true; }
  std::string name(bool val, int64_t i) const override { return sample_path(index_, val, i); }

 private:
  struct Shard {
    std::string path;
    int fd = -1;
    std::vector<pf::ShardEntry> entries;
  };

  void open_shard(bool val, int64_t c, const std::string& prepared, int64_t count) {
    Shard s;
    s.path = (fs::path(prepared) / pf::shard_name(val, c)).string();
    s.fd = ::open(s.path.c_str(), O_RDONLY | O_CLOEXEC);
    ALEXNET_CHECK(s.fd >= 0, s.path, ": cannot open shard: ", std::strerror(errno), " (rerun alexnet-tool prepare)");
    shards_[val].push_back(s);  // owned from here on, closed by the destructor even if a check below throws
    std::vector<uint8_t> head(pf::kShardHeaderBytes + count * pf::kShardEntryBytes);
    const ssize_t r = ::pread(s.fd, head.data(), head.size(), 0);
    ALEXNET_CHECK(r == static_cast<ssize_t>(head.size()), s.path, ": truncated shard header (rerun prepare)");
    pf::ByteReader in(head.data(), head.size(), s.path);
    ALEXNET_CHECK(std::memcmp(in.take(8), pf::kShardMagic, 8) == 0, s.path, ": not a shard file");
    const uint32_t version = in.get<uint32_t>(), n = in.get<uint32_t>();
    ALEXNET_CHECK(version == pf::kShardVersion && n == count, s.path, ": shard version ", version, " with ", n,
                  " images, expected version ", pf::kShardVersion, " with ", count, " (rerun prepare)");
    in.take(16);  // side, quality, first
    auto& entries = shards_[val].back().entries;
    entries.resize(count);
    for (pf::ShardEntry& e : entries) {
      e.offset = in.get<uint64_t>();
      e.size = in.get<uint32_t>();
      e.flags = in.get<uint32_t>();
    }
  }

  void close_all() {
    for (auto& list : shards_)
      for (Shard& s : list)
        if (s.fd >= 0) ::close(s.fd), s.fd = -1;
  }

  DatasetIndex index_;
  int64_t chunk_;
  std::vector<Shard> shards_[2];
};

}  // namespace

std::unique_ptr<SampleSource> open_sample_source(const DatasetIndex& index, const std::string& prepared) {
  if (prepared.empty() || !fs::exists(fs::path(prepared) / pf::kIndexFile))
    return std::make_unique<OriginalFiles>(index);
  pf::PreparedInfo info;
  const DatasetIndex made = pf::read_index_file(prepared, &info);
  if (!info.shards) return std::make_unique<OriginalFiles>(index);
  auto same = [](const std::vector<DatasetEntry>& a, const std::vector<DatasetEntry>& b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i)
      if (a[i].path != b[i].path || a[i].label != b[i].label) return false;
    return true;
  };
  ALEXNET_CHECK(same(made.train, index.train) && same(made.val, index.val), prepared,
                ": the shards were made from a different dataset (", made.train.size(), " train / ", made.val.size(),
                " val images there, ", index.train.size(), " / ", index.val.size(),
                " here, or other files); rerun alexnet-tool prepare");
  return std::make_unique<ShardFiles>(index, prepared, info.chunk_images);
}

}  // namespace alexnet
