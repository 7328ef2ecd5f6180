// `alexnet-tool prepare`: the index, the training-set statistics (mean image at 256x256 and the RGB
// covariance with its eigen-decomposition, paper §2 and §4.1) and optional pre-resized shards, computed in
// resumable chunks. The sums are exact integers, so the result does not depend on threads or resumption.
#include "data_service/prepared.h"

#include <omp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

#include "core/error.h"
#include "core/log.h"
#include "core/threads.h"
#include "data_service/image.h"
#include "data_service/prepared_format.h"

namespace alexnet {
namespace fs = std::filesystem;
namespace pf = prepared_format;

namespace {

constexpr int kSide = pf::kSide;
constexpr size_t kMeanValues = size_t{kSide} * kSide * 3;
constexpr int kPartVersion = 1;

// What identifies an input file's contents without reading it: size and modification time.
struct FileId {
  int64_t size = -1;
  int64_t mtime_ns = 0;
};

FileId file_id(const struct stat& st) {
  return {static_cast<int64_t>(st.st_size), static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

FileId stat_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? file_id(st) : FileId{};
}

// One resumable unit: `count` images of a split from `first`.
struct Chunk {
  bool val = false;
  int64_t index = 0, first = 0, count = 0;
  std::vector<int64_t> read;   // images of the chunk that are read (all with shards, else the stats sample)
  std::vector<uint8_t> stats;  // per image of `read`: 1 when it enters the statistics
};

// The partial result of a chunk, as its part file holds it (docs/data.md).
struct Part {
  uint64_t key = 0;
  uint64_t stats_images = 0, pixels = 0;
  uint64_t channel_sum[3] = {0, 0, 0};
  uint64_t product_sum[6] = {0, 0, 0, 0, 0, 0};  // RR, RG, RB, GG, GB, BB
  std::vector<uint32_t> mean_sum;                 // [256, 256, 3] sums of the rescaled images; empty for val
  std::vector<std::pair<int64_t, std::string>> bad;
  uint64_t shard_size = 0, shard_checksum = 0;
};

std::vector<uint8_t> serialize(const Chunk& c, const Part& p) {
  pf::ByteWriter w;
  w.put_bytes(pf::kPartMagic, 8);
  w.put<uint32_t>(kPartVersion);
  w.put<uint32_t>(c.val ? 1 : 0);
  w.put<uint64_t>(p.key);
  w.put<int64_t>(c.index);
  w.put<int64_t>(c.first);
  w.put<int64_t>(c.count);
  w.put<uint64_t>(p.stats_images);
  w.put<uint64_t>(p.pixels);
  for (uint64_t v : p.channel_sum) w.put(v);
  for (uint64_t v : p.product_sum) w.put(v);
  w.put<uint64_t>(p.mean_sum.size());
  w.put_bytes(p.mean_sum.data(), p.mean_sum.size() * sizeof(uint32_t));
  w.put<uint64_t>(p.bad.size());
  for (const auto& [i, msg] : p.bad) {
    w.put<int64_t>(i);
    w.put<uint32_t>(static_cast<uint32_t>(msg.size()));
    w.put_bytes(msg.data(), msg.size());
  }
  w.put<uint64_t>(p.shard_size);
  w.put<uint64_t>(p.shard_checksum);
  w.put<uint64_t>(pf::checksum64(w.bytes.data(), w.bytes.size()));
  return std::move(w.bytes);
}

// Parses and checks a part file against the chunk it should describe; throws (naming the file) when it
// is damaged or belongs to other inputs.
Part parse(const std::string& path, const Chunk& c, uint64_t expect_key) {
  const std::vector<uint8_t> bytes = pf::read_file(path);
  ALEXNET_CHECK(bytes.size() >= 16, path, ": truncated part file");
  uint64_t stored;
  std::memcpy(&stored, bytes.data() + bytes.size() - 8, 8);
  ALEXNET_CHECK(stored == pf::checksum64(bytes.data(), bytes.size() - 8), path, ": checksum mismatch");
  pf::ByteReader r(bytes.data(), bytes.size() - 8, path);
  ALEXNET_CHECK(std::memcmp(r.take(8), pf::kPartMagic, 8) == 0, path, ": not a part file");
  Part p;
  const uint32_t version = r.get<uint32_t>(), val = r.get<uint32_t>();
  p.key = r.get<uint64_t>();
  const int64_t index = r.get<int64_t>(), first = r.get<int64_t>(), count = r.get<int64_t>();
  ALEXNET_CHECK(version == kPartVersion && (val != 0) == c.val && index == c.index && first == c.first &&
                    count == c.count && p.key == expect_key,
                path, ": made from other inputs or options");
  p.stats_images = r.get<uint64_t>();
  p.pixels = r.get<uint64_t>();
  for (uint64_t& v : p.channel_sum) v = r.get<uint64_t>();
  for (uint64_t& v : p.product_sum) v = r.get<uint64_t>();
  const uint64_t n_mean = r.get<uint64_t>();
  ALEXNET_CHECK(n_mean == 0 || n_mean == kMeanValues, path, ": bad mean-sum size ", n_mean);
  p.mean_sum.resize(n_mean);
  std::memcpy(p.mean_sum.data(), r.take(n_mean * sizeof(uint32_t)), n_mean * sizeof(uint32_t));
  const uint64_t n_bad = r.get<uint64_t>();
  ALEXNET_CHECK(n_bad <= static_cast<uint64_t>(c.count), path, ": bad-file count ", n_bad);
  for (uint64_t k = 0; k < n_bad; ++k) {
    const int64_t i = r.get<int64_t>();
    const uint32_t len = r.get<uint32_t>();
    p.bad.emplace_back(i, std::string(reinterpret_cast<const char*>(r.take(len)), len));
  }
  p.shard_size = r.get<uint64_t>();
  p.shard_checksum = r.get<uint64_t>();
  return p;
}

// Evenly spaced statistics sample: image i is in it when i = floor(j * n / k) for some j < k.
bool in_stats_sample(int64_t i, int64_t n, int64_t k) {
  if (k <= 0 || k >= n) return true;
  const int64_t j = (i * k + n - 1) / n;  // the smallest j with j * n / k >= i
  return j < k && (j * n) / k == i;
}

std::string full_path(const DatasetIndex& index, const DatasetEntry& e) { return index.root + "/" + e.path; }

// Everything a chunk's result depends on: the options that shape it and, per image read, the file's path,
// label, size and modification time.
uint64_t chunk_key(const PrepareOptions& o, const DatasetIndex& index, const Chunk& c, const std::vector<FileId>& ids) {
  pf::Checksum h;
  const int64_t head[] = {kPartVersion, c.val, c.index, c.first, c.count, o.shards, o.shard_quality, kSide,
                          static_cast<int64_t>(c.read.size())};
  h.update(head, sizeof(head));
  const auto& list = c.val ? index.val : index.train;
  for (size_t k = 0; k < c.read.size(); ++k) {
    const DatasetEntry& e = list[c.read[k]];
    h.update(e.path.data(), e.path.size() + 1);
    const int64_t v[] = {e.label, c.stats[k], ids[k].size, ids[k].mtime_ns};
    h.update(v, sizeof(v));
  }
  return h.value();
}

// Symmetric 3x3 eigen-decomposition by cyclic Jacobi rotations; eigenvalues descending, eigenvector j in
// column j, signed so that its components sum to >= 0 (the first principal component of natural images
// then has all-positive weights).
void eigen_symmetric3(const std::array<double, 9>& m, std::array<double, 3>& values, std::array<double, 9>& vectors) {
  double a[3][3], v[3][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) a[i][j] = m[i * 3 + j];
  for (int sweep = 0; sweep < 64; ++sweep) {
    const double off = a[0][1] * a[0][1] + a[0][2] * a[0][2] + a[1][2] * a[1][2];
    const double diag = a[0][0] * a[0][0] + a[1][1] * a[1][1] + a[2][2] * a[2][2];
    if (off <= 1e-30 * diag || off == 0) break;
    for (int p = 0; p < 2; ++p) {
      for (int q = p + 1; q < 3; ++q) {
        if (a[p][q] == 0) continue;
        // The rotation angle that zeroes a[p][q] (Golub & Van Loan, symmetric Schur decomposition).
        const double theta = (a[q][q] - a[p][p]) / (2 * a[p][q]);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::sqrt(theta * theta + 1));
        const double cs = 1 / std::sqrt(t * t + 1), sn = t * cs;
        for (int k = 0; k < 3; ++k) {  // A <- A J
          const double akp = a[k][p], akq = a[k][q];
          a[k][p] = cs * akp - sn * akq;
          a[k][q] = sn * akp + cs * akq;
        }
        for (int k = 0; k < 3; ++k) {  // A <- J^T A
          const double apk = a[p][k], aqk = a[q][k];
          a[p][k] = cs * apk - sn * aqk;
          a[q][k] = sn * apk + cs * aqk;
        }
        for (int k = 0; k < 3; ++k) {  // V <- V J
          const double vkp = v[k][p], vkq = v[k][q];
          v[k][p] = cs * vkp - sn * vkq;
          v[k][q] = sn * vkp + cs * vkq;
        }
      }
    }
  }
  int order[3] = {0, 1, 2};
  std::sort(order, order + 3, [&](int x, int y) { return a[x][x] > a[y][y]; });
  for (int j = 0; j < 3; ++j) {
    const int src = order[j];
    values[j] = a[src][src];
    const double sign = v[0][src] + v[1][src] + v[2][src] >= 0 ? 1.0 : -1.0;
    for (int i = 0; i < 3; ++i) vectors[i * 3 + j] = sign * v[i][src];
  }
}

// A progress bar on stderr, redrawn by its own thread a few times per second.
class Progress {
 public:
  Progress(bool on, int64_t total) : on_(on && total > 0), total_(total), start_(std::chrono::steady_clock::now()) {
    if (on_) thread_ = std::thread([this] { loop(); });
  }
  ~Progress() {
    if (!on_) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
    draw();
    std::fputc('\n', stderr);
  }
  void add(int64_t n) { done_.fetch_add(n, std::memory_order_relaxed); }

 private:
  void loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!cv_.wait_for(lock, std::chrono::milliseconds(250), [this] { return stop_; })) draw();
  }
  void draw() {
    const int64_t done = done_.load(std::memory_order_relaxed);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double rate = secs > 0 ? done / secs : 0;
    const int width = 30, filled = static_cast<int>(width * done / total_);
    const int64_t eta = rate > 0 ? static_cast<int64_t>((total_ - done) / rate) : 0;
    std::fprintf(stderr, "\rprepare [%s%s] %5.1f%% %lld/%lld images %.0f img/s ETA %lld:%02lld:%02lld ",
                 std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(), 100.0 * done / total_,
                 static_cast<long long>(done), static_cast<long long>(total_), rate,
                 static_cast<long long>(eta / 3600), static_cast<long long>(eta / 60 % 60),
                 static_cast<long long>(eta % 60));
    std::fflush(stderr);
  }
  bool on_;
  int64_t total_;
  std::chrono::steady_clock::time_point start_;
  std::atomic<int64_t> done_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

class Preparer {
 public:
  Preparer(const PrepareOptions& o, const DatasetIndex& index, int threads)
      : o_(o), index_(index), threads_(threads), out_(o.out) {}

  // True when the chunk's part (and shard) are present, undamaged and made from the same inputs.
  bool verified(const Chunk& c) const {
    try {
      std::vector<FileId> ids;
      const auto& list = c.val ? index_.val : index_.train;
      for (int64_t i : c.read) ids.push_back(stat_file(full_path(index_, list[i])));
      const Part p = parse((out_ / pf::part_name(c.val, c.index)).string(), c, chunk_key(o_, index_, c, ids));
      if (!o_.shards) return true;
      const std::vector<uint8_t> shard = pf::read_file((out_ / pf::shard_name(c.val, c.index)).string());
      return shard.size() == p.shard_size && pf::checksum64(shard.data(), shard.size()) == p.shard_checksum;
    } catch (const std::exception&) {  // missing, damaged or foreign: redo the chunk
      return false;
    }
  }

  void process(const Chunk& c, Progress& progress) {
    const auto& list = c.val ? index_.val : index_.train;
    const int64_t n = static_cast<int64_t>(c.read.size());
    std::vector<FileId> ids(n);
    std::vector<std::string> bad(n), failed(n);  // bad input files; errors of ours (they end the run)
    std::vector<std::vector<uint8_t>> jpegs(o_.shards ? n : 0);
    const bool want_stats = !c.val;
    std::vector<std::vector<uint32_t>> mean(threads_);
    std::vector<std::array<uint64_t, 10>> sums(threads_);  // stats images, channel sums, products
    std::atomic<bool> stop{false};
#pragma omp parallel num_threads(threads_)
    {
      const int t = omp_get_thread_num();
      if (want_stats) mean[t].assign(kMeanValues, 0);
      sums[t].fill(0);
      Image decoded, rescaled;
#pragma omp for schedule(dynamic, 1)
      for (int64_t k = 0; k < n; ++k) {
        if (stop.load(std::memory_order_relaxed)) continue;
        // No exception may leave an OpenMP loop body; errors are collected and rethrown after it.
        try {
          const std::string path = full_path(index_, list[c.read[k]]);
          std::vector<uint8_t> bytes;
          Status st;
          {
            std::FILE* f = std::fopen(path.c_str(), "rb");
            struct stat sb {};
            if (f == nullptr) {
              st = Status::error(str_cat(path, ": cannot open: ", std::strerror(errno)));
            } else {
              if (fstat(fileno(f), &sb) == 0) ids[k] = file_id(sb);
              bytes.resize(static_cast<size_t>(std::max<int64_t>(ids[k].size, 0)));
              const size_t got = bytes.empty() ? 0 : std::fread(bytes.data(), 1, bytes.size(), f);
              if (got != bytes.size()) st = Status::error(str_cat(path, ": read error"));
              std::fclose(f);
            }
          }
          if (st.ok()) st = decode_image_into(bytes.data(), bytes.size(), path, kSide, decoded);
          if (!st.ok()) {
            bad[k] = st.message();
            if (o_.strict) stop = true;
            progress.add(1);
            continue;
          }
          resize_shorter_and_center_crop_into(decoded, kSide, rescaled);
          if (want_stats && c.stats[k]) accumulate(rescaled, mean[t].data(), sums[t].data());
          if (o_.shards) jpegs[k] = encode_jpeg(rescaled, o_.shard_quality, false);
          progress.add(1);
        } catch (const std::exception& e) {
          failed[k] = e.what();
          stop = true;
        }
      }
    }
    for (const std::string& f : failed) ALEXNET_CHECK(f.empty(), f);
    Part p;
    for (int64_t k = 0; k < n; ++k) {
      if (bad[k].empty()) continue;
      ALEXNET_CHECK(!o_.strict, bad[k], " (strict mode: a bad image file is fatal)");
      log_warn("prepare: skipping bad image ", bad[k]);
      p.bad.emplace_back(c.read[k], bad[k]);
    }
    if (want_stats) {
      p.mean_sum.assign(kMeanValues, 0);
      for (int t = 0; t < threads_; ++t) {
        for (size_t i = 0; i < kMeanValues && !mean[t].empty(); ++i) p.mean_sum[i] += mean[t][i];
        p.stats_images += sums[t][0];
        for (int j = 0; j < 3; ++j) p.channel_sum[j] += sums[t][1 + j];
        for (int j = 0; j < 6; ++j) p.product_sum[j] += sums[t][4 + j];
      }
      p.pixels = p.stats_images * kSide * kSide;
    }
    if (o_.shards) write_shard(c, jpegs, bad, p);
    p.key = chunk_key(o_, index_, c, ids);
    const std::vector<uint8_t> bytes = serialize(c, p);
    pf::write_file_atomically((out_ / pf::part_name(c.val, c.index)).string(), bytes.data(), bytes.size());
  }

 private:
  // Integer sums: exact, so neither thread count nor chunking changes the result.
  static void accumulate(const Image& im, uint32_t* mean, uint64_t* s) {
    const uint8_t* px = im.rgb.data();
    uint64_t c0 = 0, c1 = 0, c2 = 0, p00 = 0, p01 = 0, p02 = 0, p11 = 0, p12 = 0, p22 = 0;
    for (size_t i = 0; i < kMeanValues; i += 3) {
      const uint32_t r = px[i], g = px[i + 1], b = px[i + 2];
      mean[i] += r;
      mean[i + 1] += g;
      mean[i + 2] += b;
      c0 += r, c1 += g, c2 += b;
      p00 += r * r, p01 += r * g, p02 += r * b, p11 += g * g, p12 += g * b, p22 += b * b;
    }
    s[0] += 1;
    s[1] += c0, s[2] += c1, s[3] += c2;
    s[4] += p00, s[5] += p01, s[6] += p02, s[7] += p11, s[8] += p12, s[9] += p22;
  }

  void write_shard(const Chunk& c, const std::vector<std::vector<uint8_t>>& jpegs, const std::vector<std::string>& bad,
                   Part& p) {
    const int64_t n = c.count;  // with shards every image of the chunk is read, in order
    pf::ByteWriter w;
    w.put_bytes(pf::kShardMagic, 8);
    w.put<uint32_t>(pf::kShardVersion);
    w.put<uint32_t>(static_cast<uint32_t>(n));
    w.put<uint32_t>(kSide);
    w.put<uint32_t>(static_cast<uint32_t>(o_.shard_quality));
    w.put<uint64_t>(static_cast<uint64_t>(c.first));
    uint64_t offset = pf::kShardHeaderBytes + n * pf::kShardEntryBytes;
    for (int64_t k = 0; k < n; ++k) {
      w.put<uint64_t>(offset);
      w.put<uint32_t>(static_cast<uint32_t>(jpegs[k].size()));
      w.put<uint32_t>(bad[k].empty() ? 0 : pf::kFlagBad);
      offset += jpegs[k].size();
    }
    for (const auto& j : jpegs) w.put_bytes(j.data(), j.size());
    w.put<uint64_t>(pf::checksum64(w.bytes.data(), w.bytes.size()));
    pf::write_file_atomically((out_ / pf::shard_name(c.val, c.index)).string(), w.bytes.data(), w.bytes.size());
    p.shard_size = w.bytes.size();
    p.shard_checksum = pf::checksum64(w.bytes.data(), w.bytes.size());
  }

  const PrepareOptions& o_;
  const DatasetIndex& index_;
  int threads_;
  fs::path out_;
};

ImageStats finish_stats(const std::vector<uint64_t>& mean_sum, uint64_t images, const uint64_t channel_sum[3],
                        const uint64_t product_sum[6]) {
  ImageStats s;
  s.side = kSide;
  s.mean_image.resize(kMeanValues);
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < kSide * kSide; ++i)
      s.mean_image[static_cast<size_t>(c) * kSide * kSide + i] =
          static_cast<float>(static_cast<double>(mean_sum[static_cast<size_t>(i) * 3 + c]) / static_cast<double>(images));
  const unsigned __int128 n = static_cast<unsigned __int128>(images) * kSide * kSide;
  for (int c = 0; c < 3; ++c) s.channel_mean[c] = static_cast<double>(channel_sum[c]) / static_cast<double>(n);
  // Population covariance from exact integer moments: (N * Sxy - Sx * Sy) / N^2, numerator in 128 bits.
  const int pair[3][3] = {{0, 1, 2}, {1, 3, 4}, {2, 4, 5}};
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) {
      const __int128 num = static_cast<__int128>(n * product_sum[pair[i][j]]) -
                           static_cast<__int128>(static_cast<unsigned __int128>(channel_sum[i]) * channel_sum[j]);
      s.covariance[i * 3 + j] = static_cast<double>(num) / (static_cast<double>(n) * static_cast<double>(n));
    }
  }
  eigen_symmetric3(s.covariance, s.eigenvalues, s.eigenvectors);
  return s;
}

}  // namespace

std::string prepare_dataset(const PrepareOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  ALEXNET_CHECK(!o.out.empty(), "prepare: the output folder is empty (--out or data.prepared)");
  ALEXNET_CHECK(o.shard_quality >= 1 && o.shard_quality <= 100, "prepare: shard quality must be in 1..100, got ",
                o.shard_quality);
  ALEXNET_CHECK(o.chunk_images >= 1 && o.chunk_images <= (int64_t{1} << 24), "prepare: chunk size must be in 1..",
                int64_t{1} << 24, ", got ", o.chunk_images);
  ALEXNET_CHECK(o.stats_images >= 0, "prepare: --stats-images must be >= 0, got ", o.stats_images);
  const DatasetIndex index = scan_dataset(o.data_root, o.val_ground_truth, o.val_synsets);
  const fs::path out(o.out);
  fs::create_directories(out / "parts");
  if (o.shards) fs::create_directories(out / "shards");
  // A rerun first withdraws the completion mark, so an interruption never leaves a stale one behind.
  fs::remove(out / pf::kIndexFile);
  const int threads = o.threads > 0 ? o.threads : available_cpus();

  const int64_t n_train = static_cast<int64_t>(index.train.size());
  std::vector<Chunk> chunks;
  for (int split = 0; split < (o.shards ? 2 : 1); ++split) {
    const int64_t n = split ? static_cast<int64_t>(index.val.size()) : n_train;
    for (int64_t first = 0, k = 0; first < n; first += o.chunk_images, ++k) {
      Chunk c;
      c.val = split == 1;
      c.index = k;
      c.first = first;
      c.count = std::min(o.chunk_images, n - first);
      for (int64_t i = first; i < first + c.count; ++i) {
        const bool stats = !c.val && in_stats_sample(i, n_train, o.stats_images);
        if (!o.shards && !stats) continue;
        c.read.push_back(i);
        c.stats.push_back(stats ? 1 : 0);
      }
      if (!c.read.empty()) chunks.push_back(std::move(c));
    }
  }

  Preparer prep(o, index, threads);
  std::vector<uint8_t> ok(chunks.size(), 0);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t i = 0; i < static_cast<int64_t>(chunks.size()); ++i) ok[i] = prep.verified(chunks[i]) ? 1 : 0;
  int64_t to_read = 0, reused = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    if (ok[i]) ++reused;
    else to_read += static_cast<int64_t>(chunks[i].read.size());
  }
  {
    Progress progress(o.progress, to_read);
    for (size_t i = 0; i < chunks.size(); ++i)
      if (!ok[i]) prep.process(chunks[i], progress);
  }

  // Reduce the parts (every one verified or just written) in chunk order.
  std::vector<uint64_t> mean_sum(kMeanValues, 0);
  uint64_t images = 0, channel_sum[3] = {0, 0, 0}, product_sum[6] = {0, 0, 0, 0, 0, 0}, shard_bytes = 0;
  std::string bad_list;
  int64_t n_bad = 0;
  std::set<std::string> keep;
  for (const Chunk& c : chunks) {
    const std::string name = pf::part_name(c.val, c.index);
    keep.insert(name);
    if (o.shards) keep.insert(pf::shard_name(c.val, c.index));
    std::vector<FileId> ids;
    const auto& list = c.val ? index.val : index.train;
    for (int64_t i : c.read) ids.push_back(stat_file(full_path(index, list[i])));
    const Part p = parse((out / name).string(), c, chunk_key(o, index, c, ids));
    images += p.stats_images;
    for (size_t i = 0; i < p.mean_sum.size(); ++i) mean_sum[i] += p.mean_sum[i];
    for (int j = 0; j < 3; ++j) channel_sum[j] += p.channel_sum[j];
    for (int j = 0; j < 6; ++j) product_sum[j] += p.product_sum[j];
    for (const auto& [i, msg] : p.bad) bad_list += str_cat(list[i].path, "\t", msg, "\n");
    n_bad += static_cast<int64_t>(p.bad.size());
    shard_bytes += p.shard_size;
  }
  ALEXNET_CHECK(images > 0, o.data_root, ": no decodable training image for the statistics (", n_bad, " bad files)");
  write_image_stats((out / pf::kStatsFile).string(), finish_stats(mean_sum, images, channel_sum, product_sum));
  pf::write_file_atomically((out / pf::kBadFilesFile).string(), bad_list.data(), bad_list.size());
  // Parts and shards of an earlier layout (another chunk size, no longer sharded) would only confuse.
  for (const char* sub : {"parts", "shards"}) {
    std::error_code ec;
    if (!fs::is_directory(out / sub, ec)) continue;
    for (const auto& e : fs::directory_iterator(out / sub))
      if (!keep.count(std::string(sub) + "/" + e.path().filename().string())) fs::remove(e.path(), ec);
  }
  pf::write_index_file(o.out, index, {o.chunk_images, o.shards, o.shard_quality});

  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  char line[512];
  std::snprintf(line, sizeof(line),
                "prepared %s: %lld train + %lld val images, %lld classes; statistics from %llu images; %lld bad "
                "files%s; shards: %s; %lld of %zu chunks reused, %lld images read in %.2f s (%.0f images/s)",
                o.out.c_str(), static_cast<long long>(n_train), static_cast<long long>(index.val.size()),
                static_cast<long long>(index.wnids.size()), static_cast<unsigned long long>(images),
                static_cast<long long>(n_bad), n_bad ? " (listed in bad_files.txt)" : "",
                o.shards ? str_cat(shard_bytes / 1000000, " MB").c_str() : "none", static_cast<long long>(reused),
                chunks.size(), static_cast<long long>(to_read), secs, secs > 0 ? to_read / secs : 0.0);
  return line;
}

}  // namespace alexnet
