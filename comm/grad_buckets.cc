// GradBuckets: bucket planning, layout agreement across ranks, and the overlapped averaging.
#include "comm/grad_buckets.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace alexnet {
namespace {

constexpr uint64_t kFnvOffset = 1469598103934665603ull, kFnvPrime = 1099511628211ull;

void fnv(uint64_t& h, const void* p, size_t n) {
  const auto* b = static_cast<const unsigned char*>(p);
  for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * kFnvPrime;
}
void fnv_u64(uint64_t& h, uint64_t v) { fnv(h, &v, sizeof(v)); }

double seconds(std::chrono::steady_clock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

double CommTiming::hidden_fraction() const {
  if (in_flight_s <= 0) return 0;
  return std::clamp(1.0 - exposed_s / in_flight_s, 0.0, 1.0);
}

std::vector<BucketPlan> plan_buckets(const std::vector<GradTensor>& tensors, size_t bucket_bytes) {
  std::vector<BucketPlan> plan;
  const size_t limit = bucket_bytes == 0 ? SIZE_MAX : bucket_bytes / sizeof(float);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const GradTensor& t = tensors[i];
    const bool fits = !plan.empty() && plan.back().count + t.count <= limit;
    if (!fits) plan.push_back({i, i, 0, true});
    BucketPlan& b = plan.back();
    if (b.last > b.first) {
      const GradTensor& prev = tensors[b.last - 1];
      b.contiguous = b.contiguous && prev.data + prev.count == t.data;
    }
    b.last = i + 1;
    b.count += t.count;
  }
  return plan;
}

GradBuckets::GradBuckets(Communicator& comm, std::vector<GradTensor> tensors, GradBucketOptions options)
    : comm_(comm), tensors_(std::move(tensors)), options_(options) {
  for (const GradTensor& t : tensors_)
    ALEXNET_CHECK(t.data != nullptr || t.count == 0, "gradient tensor '", t.name, "' has no data (", comm_.describe(),
                  ")");
  plan_ = plan_buckets(tensors_, options_.bucket_bytes);
  bucket_of_.resize(tensors_.size());
  for (size_t b = 0; b < plan_.size(); ++b)
    for (size_t i = plan_[b].first; i < plan_[b].last; ++i) bucket_of_[i] = b;
  ready_.assign(tensors_.size(), 0);
  buckets_.resize(plan_.size());
  for (size_t b = 0; b < plan_.size(); ++b) {
    ALEXNET_CHECK(plan_[b].contiguous || !comm_.device_buffers(), "gradient bucket ", b, " (", tensors_[plan_[b].first].name,
                  " ...) is not contiguous in device memory; ", comm_.describe(), " reduces device buffers in place only");
    if (!plan_[b].contiguous) buckets_[b].staging.resize(plan_[b].count);
  }

  // Every rank must reduce the same buckets in the same order, or the collectives pair up wrongly and
  // sum unrelated gradients (or hang): agree on the layout before the first step.
  uint64_t h = kFnvOffset;
  for (const GradTensor& t : tensors_) {
    fnv(h, t.name.data(), t.name.size() + 1);
    fnv_u64(h, t.count);
  }
  for (const BucketPlan& b : plan_) fnv_u64(h, b.last);
  fnv_u64(h, options_.overlap ? 1 : 0);
  hash_ = h;
  size_t total = 0;
  for (const GradTensor& t : tensors_) total += t.count;
  const std::vector<uint64_t> mine = {hash_, tensors_.size(), total, plan_.size()};
  const std::vector<uint64_t> all = comm_.allgather(mine);
  for (int r = 1; r < comm_.size(); ++r) {
    const uint64_t* o = all.data() + 4 * r;
    if (o[0] == all[0]) continue;
    ALEXNET_FAIL("gradient bucket layout differs across ranks (", comm_.describe(), "): rank 0 has ", all[1],
                 " tensors, ", all[2], " floats in ", all[3], " buckets (layout hash ", std::hex, all[0], std::dec,
                 "), rank ", r, " has ", o[1], " tensors, ", o[2], " floats in ", o[3], " buckets (hash ", std::hex,
                 o[0], std::dec, "); every rank must pass the same gradient tensors and the same parallel.bucket_mb");
  }
  reset_step();
}

GradBuckets::~GradBuckets() = default;  // an unfinished request waits in its own destructor

void GradBuckets::reset_step() {
  std::fill(ready_.begin(), ready_.end(), 0);
  for (size_t b = 0; b < plan_.size(); ++b) {
    Bucket& k = buckets_[b];
    k.pending = plan_[b].last - plan_[b].first;
    k.request.reset();
    k.started = k.done = false;
  }
  step_started_ = false;
  current_ = {};
}

void GradBuckets::start(size_t b) {
  const BucketPlan& p = plan_[b];
  Bucket& k = buckets_[b];
  float* data = p.contiguous && p.count > 0 ? tensors_[p.first].data : k.staging.data();
  if (!p.contiguous) {
    float* dst = k.staging.data();
    for (size_t i = p.first; i < p.last; ++i) {
      std::memcpy(dst, tensors_[i].data, tensors_[i].count * sizeof(float));
      dst += tensors_[i].count;
    }
  }
  const Clock::time_point now = Clock::now();
  if (!step_started_) first_start_ = now, step_started_ = true;
  k.request = comm_.allreduce_async(data, p.count, ReduceOp::kAverage);
  k.started = true;
  current_.bytes += static_cast<double>(p.count * sizeof(float));
  current_.reductions += 1;
}

void GradBuckets::finish(size_t b) {
  const BucketPlan& p = plan_[b];
  Bucket& k = buckets_[b];
  k.done = true;
  last_done_ = Clock::now();
  if (p.contiguous) return;
  const float* src = k.staging.data();
  for (size_t i = p.first; i < p.last; ++i) {
    std::memcpy(tensors_[i].data, src, tensors_[i].count * sizeof(float));
    src += tensors_[i].count;
  }
}

void GradBuckets::poll() {
  for (size_t b = 0; b < buckets_.size(); ++b) {
    Bucket& k = buckets_[b];
    if (k.started && !k.done && k.request->test()) finish(b);
  }
}

void GradBuckets::progress() { poll(); }

void GradBuckets::mark_ready(size_t index) {
  ALEXNET_CHECK(index < tensors_.size(), "mark_ready(", index, "): only ", tensors_.size(), " gradient tensors (",
                comm_.describe(), ")");
  ALEXNET_CHECK(!ready_[index], "gradient '", tensors_[index].name, "' marked ready twice in one step (",
                comm_.describe(), ")");
  ready_[index] = 1;
  const size_t b = bucket_of_[index];
  // Buckets start in plan order even when tensors finish out of order: every rank must issue the
  // collectives in the same sequence, whatever order its backward happened to finish them in.
  if (--buckets_[b].pending == 0 && options_.overlap) {
    for (size_t s = 0; s < buckets_.size() && buckets_[s].pending == 0; ++s)
      if (!buckets_[s].started) start(s);
  }
  poll();
}

void GradBuckets::wait_all() {
  const Clock::time_point t0 = Clock::now();
  for (size_t i = 0; i < tensors_.size(); ++i)
    ALEXNET_CHECK(ready_[i], "wait_all before gradient '", tensors_[i].name, "' was marked ready (",
                  comm_.describe(), ")");
  for (size_t b = 0; b < buckets_.size(); ++b) {
    Bucket& k = buckets_[b];
    if (!k.started) start(b);
    if (!options_.overlap) {
      // One bucket at a time, as a blocking reduction would run.
      k.request->wait();
      finish(b);
    }
  }
  for (size_t b = 0; b < buckets_.size(); ++b) {
    Bucket& k = buckets_[b];
    if (!k.done) {
      k.request->wait();
      finish(b);
    }
  }
  const Clock::time_point t1 = Clock::now();
  current_.exposed_s = seconds(t1 - t0);
  if (step_started_) {
    current_.in_flight_s = seconds(last_done_ - first_start_);
    current_.start_s = seconds(first_start_.time_since_epoch());
    current_.end_s = seconds(last_done_.time_since_epoch());
  }
  timing_ = current_;
  reset_step();
}

}  // namespace alexnet
