// The data service's event loop (MPI on the calling thread only) and its decode/augment thread pool.
#include "data_service/service.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "core/error.h"
#include "core/log.h"
#include "core/threads.h"
#include "data_service/sampler.h"
#include "data_service/wire.h"

namespace alexnet {

using Clock = std::chrono::steady_clock;

ServiceOptions ServiceOptions::from_config(const Config& c) {
  ServiceOptions o;
  o.seed = c.train.seed;
  o.global_batch = c.train.batch_size;
  o.epochs = c.train.epochs;
  o.crop = c.model.input_size;
  o.lighting_std = c.data.lighting_std;
  o.threads = c.data.threads;
  o.prefetch = c.data.prefetch;
  o.strict = c.data.strict;
  o.eval_batch = c.data.eval_batch;
  o.ten_crop = c.data.ten_crop;
  o.timeout_s = c.data.timeout_s;
  return o;
}

SampleMaker::SampleMaker(const SampleProducer& producer, const ServiceOptions& options)
    : producer_(producer), opt_(options) {}

int64_t SampleMaker::load_or_replace(bool val, int64_t i, Image& image) {
  const int64_t n = val ? producer_.num_val() : producer_.num_train();
  int64_t used = i;
  for (int64_t attempt = 0; attempt < n; ++attempt, used = (used + 1) % n) {
    {
      std::lock_guard<std::mutex> lock(bad_mu_);
      if (bad_.count({val, used})) continue;
    }
    const Status st = producer_.load(val, used, opt_.src_side, image);
    if (st.ok()) {
      ALEXNET_ASSERT(image.width == opt_.src_side && image.height == opt_.src_side, "producer returned ",
                     image.width, "x", image.height, " for ", producer_.name(val, used));
      if (used != i) replaced_.fetch_add(1);
      return used;
    }
    // Statuses from decoding already start with the file name.
    const std::string file = producer_.name(val, used);
    const std::string what = st.message().rfind(file, 0) == 0 ? st.message() : file + ": " + st.message();
    ALEXNET_CHECK(!opt_.strict, "bad image file ", what, " (data.strict is on; set it to false to skip bad files)");
    std::lock_guard<std::mutex> lock(bad_mu_);
    if (bad_.insert({val, used}).second)
      log_warn("skipping bad image file ", what, "; its samples are replaced by the next valid image");
  }
  ALEXNET_FAIL("no image of the ", val ? "validation" : "training", " set could be decoded");
}

SampleAugment SampleMaker::augment(bool val, int64_t epoch, int64_t used, int view, int views) const {
  if (val) return eval_augment(static_cast<EvalView>(views == 1 ? 0 : view), opt_.src_side, opt_.crop);
  return draw_train_augment(opt_.seed, epoch, used, opt_.src_side, opt_.crop, opt_.lighting_std, producer_.stats());
}

int64_t SampleMaker::bad_files() const {
  std::lock_guard<std::mutex> lock(bad_mu_);
  return static_cast<int64_t>(bad_.size());
}

std::string ServiceStats::summary() const {
  const double s = std::max(seconds, 1e-9);
  return str_cat(train_batches, " training and ", eval_batches, " evaluation batches, ", images, " images (",
                 static_cast<int64_t>(images / s), " images/s on ", threads, " threads), ",
                 bytes_sent / (1 << 20), " MiB sent in ", static_cast<int64_t>(seconds), " s; ", bad_files,
                 " bad files, ", replaced, " samples replaced");
}

namespace {

using wire::RequestKind;

// One batch for one worker: its images are filled by pool threads, one task per image.
struct Job {
  RequestKind kind = RequestKind::kTrain;
  int64_t a = 0, b = 0;
  int views = 1;
  std::vector<int64_t> samples;  // per image
  std::vector<uint8_t> mask;     // per image
  std::vector<uint8_t> msg;      // the finished wire message
  std::atomic<int> remaining{0};
  std::atomic<bool> ready{false};
  std::atomic<bool> cancelled{false};
  bool matches(RequestKind k, int64_t ka, int64_t kb) const { return kind == k && a == ka && b == kb; }
};
using JobPtr = std::shared_ptr<Job>;

struct Peer {
  int worker = 0;      // worker index
  int rank = 0;        // world rank
  bool greeted = false;
  bool done = false;
  std::deque<JobPtr> train_q, eval_q;  // prepared or in preparation, in the order they will be asked for
  int64_t train_epoch = 0, train_step = 0;  // the next training batch to prepare
  int64_t eval_next = 0;                    // the next evaluation batch to prepare
  bool evaluating = false;                  // in an evaluation pass: read ahead there too
  JobPtr pending;                           // answers the one outstanding request
  Clock::time_point last_heard;
};

struct Send {
  MPI_Request req = MPI_REQUEST_NULL;
  JobPtr job;                  // keeps a batch message alive
  std::vector<uint8_t> bytes;  // or a handshake reply
};

}  // namespace

struct DataService::Impl {
  const JobLayout& layout;
  const SampleProducer& producer;
  ServiceOptions opt;
  SampleMaker maker;
  TrainSampler train_sampler;
  EvalSampler eval_sampler;
  int per_worker_batch = 0;
  int views = 1;
  int num_threads = 1;
  std::vector<Peer> peers;
  std::map<int, size_t> peer_of_rank;
  std::map<int64_t, std::shared_ptr<const std::vector<int64_t>>> permutations;  // recent epochs
  std::vector<Send> sends;

  // Pool state.
  std::mutex mu;
  std::condition_variable work_cv, done_cv;
  std::deque<std::pair<JobPtr, int>> tasks;  // (job, image)
  bool stopping = false;
  std::exception_ptr failure;
  std::vector<std::thread> threads;
  std::atomic<int64_t> images{0};
  ServiceStats stats;

  Impl(const JobLayout& l, const SampleProducer& p, const ServiceOptions& o)
      : layout(l), producer(p), opt(o), maker(p, o),
        train_sampler(p.num_train(), o.global_batch, l.num_workers(), o.seed),
        eval_sampler(std::max<int64_t>(p.num_val(), 1),
                     o.eval_batch > 0 ? o.eval_batch : std::max<int64_t>(o.global_batch / l.num_workers(), 1),
                     l.num_workers()) {
    ALEXNET_CHECK(p.num_val() >= 1, "the validation set is empty");
    per_worker_batch = static_cast<int>(o.global_batch / l.num_workers());
    views = o.ten_crop ? 10 : 1;
    ALEXNET_CHECK(p.stats().side == o.src_side, "the mean image is ", p.stats().side, "x", p.stats().side,
                  ", the service rescales to ", o.src_side);
    num_threads = o.threads > 0 ? o.threads : std::max(1, available_cpus() / std::max(1, l.services_on_host()));
    const Clock::time_point now = Clock::now();
    for (int w : l.served_workers()) {
      Peer peer;
      peer.worker = w;
      peer.rank = l.assignment().workers[w];
      peer.last_heard = now;
      peer_of_rank[peer.rank] = peers.size();
      peers.push_back(std::move(peer));
    }
    for (int t = 0; t < num_threads; ++t) threads.emplace_back([this] { pool_loop(); });
  }

  ~Impl() {
    {
      std::lock_guard<std::mutex> lock(mu);
      stopping = true;
    }
    work_cv.notify_all();
    for (std::thread& t : threads) t.join();
    // Sends still in flight exist only when an error is propagating, and then MPI_Abort follows; they
    // are left alone rather than cancelled (a destructor must not block or throw).
  }

  int64_t eval_per_worker() const { return eval_sampler.batch(0, 0).samples.size(); }

  // ---- pool ----

  void pool_loop() {
    Image image;  // reused: the steady state allocates nothing per image
    for (;;) {
      std::pair<JobPtr, int> task;
      {
        std::unique_lock<std::mutex> lock(mu);
        work_cv.wait(lock, [&] { return stopping || !tasks.empty(); });
        if (stopping) return;
        task = std::move(tasks.front());
        tasks.pop_front();
      }
      Job& job = *task.first;
      if (job.cancelled.load()) continue;
      try {
        fill_image(job, task.second, image);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!failure) failure = std::current_exception();
        done_cv.notify_all();
        return;
      }
      if (job.remaining.fetch_sub(1) == 1) {
        job.ready.store(true);
        std::lock_guard<std::mutex> lock(mu);
        done_cv.notify_all();
      }
    }
  }

  void fill_image(Job& job, int j, Image& image) {
    const bool val = job.kind == RequestKind::kEval;
    const int64_t used = maker.load_or_replace(val, job.samples[j], image);
    images.fetch_add(1);
    const int count = static_cast<int>(job.samples.size()) * job.views;
    wire::SampleRecord* records = wire::batch_records(job.msg.data());
    for (int v = 0; v < job.views; ++v) {
      const int k = j * job.views + v;
      const SampleAugment aug = maker.augment(val, job.a, used, v, job.views);
      wire::SampleRecord& r = records[k];
      r = wire::SampleRecord{};
      r.sample = used;
      r.label = producer.label(val, used);
      r.mask = job.mask[j];
      wire::set_record_augment(r, aug);
      extract_crop(image.rgb.data(), opt.src_side, aug, opt.crop, wire::batch_pixels(job.msg.data(), count, opt.crop, k));
    }
  }

  // ---- jobs ----

  std::shared_ptr<const std::vector<int64_t>> permutation(int64_t epoch) {
    auto it = permutations.find(epoch);
    if (it != permutations.end()) return it->second;
    auto p = std::make_shared<const std::vector<int64_t>>(train_sampler.permutation(epoch));
    permutations[epoch] = p;
    while (permutations.size() > 3) permutations.erase(permutations.begin());
    return p;
  }

  JobPtr make_job(const Peer& peer, RequestKind kind, int64_t a, int64_t b, bool urgent) {
    auto job = std::make_shared<Job>();
    job->kind = kind;
    job->a = a;
    job->b = b;
    if (kind == RequestKind::kTrain) {
      // TrainSampler::batch's slice of the cached permutation: positions [b*B + w*B/W, ... + B/W).
      const auto perm = permutation(a);
      const int64_t first = b * opt.global_batch + static_cast<int64_t>(peer.worker) * per_worker_batch;
      job->samples.assign(perm->begin() + first, perm->begin() + first + per_worker_batch);
      job->mask.assign(job->samples.size(), 1);
    } else {
      EvalBatch e = eval_sampler.batch(a, peer.worker);
      job->samples = std::move(e.samples);
      job->mask = std::move(e.mask);
      job->views = views;
    }
    const int n = static_cast<int>(job->samples.size());
    const int count = n * job->views;
    job->msg.resize(wire::batch_message_bytes(count, opt.crop));
    wire::BatchHeader h;
    h.kind = kind;
    h.count = count;
    h.views = job->views;
    h.crop = opt.crop;
    h.a = a;
    h.b = b;
    std::memcpy(job->msg.data(), &h, sizeof(h));
    job->remaining.store(n);
    {
      std::lock_guard<std::mutex> lock(mu);
      for (int j = 0; j < n; ++j) {
        if (urgent)
          tasks.emplace_front(job, n - 1 - j);
        else
          tasks.emplace_back(job, j);
      }
    }
    work_cv.notify_all();
    return job;
  }

  void advance_train(int64_t& epoch, int64_t& step) const {
    if (++step == train_sampler.steps_per_epoch()) {
      step = 0;
      ++epoch;
    }
  }

  // Keeps up to `prefetch` batches in preparation per worker, within the run's epochs / the eval pass.
  void top_up(Peer& peer) {
    while (static_cast<int>(peer.train_q.size()) < opt.prefetch && peer.train_epoch < opt.epochs) {
      peer.train_q.push_back(make_job(peer, RequestKind::kTrain, peer.train_epoch, peer.train_step, false));
      advance_train(peer.train_epoch, peer.train_step);
    }
    while (peer.evaluating && static_cast<int>(peer.eval_q.size()) < opt.prefetch &&
           peer.eval_next < eval_sampler.num_batches()) {
      peer.eval_q.push_back(make_job(peer, RequestKind::kEval, peer.eval_next, 0, false));
      ++peer.eval_next;
    }
  }

  static void cancel_all(std::deque<JobPtr>& q) {
    for (JobPtr& j : q) j->cancelled.store(true);
    q.clear();
  }

  void on_request(Peer& peer, const wire::Request& r) {
    const std::string who = layout.name_of(peer.rank);
    ALEXNET_CHECK(peer.greeted, who, " sent a request before its handshake");
    if (r.kind == RequestKind::kDone) {
      ALEXNET_CHECK(!peer.pending, who, " said it is done with a request outstanding");
      peer.done = true;
      cancel_all(peer.train_q);
      cancel_all(peer.eval_q);
      log_debug("data service ", layout.index(), ": ", who, " is done");
      return;
    }
    ALEXNET_CHECK(!peer.pending, who, " sent a second request before the first was answered");
    const bool train = r.kind == RequestKind::kTrain;
    ALEXNET_CHECK(train || r.kind == RequestKind::kEval, who, " sent a request of unknown kind ",
                  static_cast<int>(r.kind));
    if (train)
      ALEXNET_CHECK(r.a >= 0 && r.b >= 0 && r.b < train_sampler.steps_per_epoch(), who,
                    " asked for training batch (epoch ", r.a, ", step ", r.b, "); steps per epoch: ",
                    train_sampler.steps_per_epoch());
    else
      ALEXNET_CHECK(r.a >= 0 && r.a < eval_sampler.num_batches(), who, " asked for evaluation batch ", r.a,
                    " of ", eval_sampler.num_batches());
    // Evaluation batches are read ahead from the first evaluation request until training resumes.
    peer.evaluating = !train;
    if (train) cancel_all(peer.eval_q);
    std::deque<JobPtr>& q = train ? peer.train_q : peer.eval_q;
    while (!q.empty() && !q.front()->matches(r.kind, r.a, r.b)) {
      q.front()->cancelled.store(true);
      q.pop_front();
    }
    if (q.empty()) {  // a jump (resume, a new pass): restart the read-ahead there
      q.push_back(make_job(peer, r.kind, r.a, r.b, true));
      if (train) {
        peer.train_epoch = r.a;
        peer.train_step = r.b;
        advance_train(peer.train_epoch, peer.train_step);
      } else {
        peer.eval_next = r.a + 1;
      }
    }
    peer.pending = q.front();
    top_up(peer);
  }

  void on_hello(Peer& peer, const wire::Hello& h) {
    const std::string who = layout.name_of(peer.rank);
    ALEXNET_CHECK(h.magic == wire::kMagic && h.version == wire::kVersion, who, " speaks wire version ", h.version,
                  ", this service ", wire::kVersion, " (run the same build everywhere)");
    ALEXNET_CHECK(!peer.greeted, who, " sent a second handshake");
    ALEXNET_CHECK(h.worker_index == peer.worker && h.num_workers == layout.num_workers(), who,
                  " thinks it is worker ", h.worker_index, " of ", h.num_workers);
    ALEXNET_CHECK(h.global_batch == opt.global_batch && h.seed == opt.seed, who, " has train.batch_size ",
                  h.global_batch, " and train.seed ", h.seed, ", the data service ", opt.global_batch, " and ",
                  opt.seed, "; give every rank the same --config and --set");
    peer.greeted = true;
    wire::InfoHeader info;
    info.num_train = producer.num_train();
    info.num_val = producer.num_val();
    info.num_classes = producer.num_classes();
    info.crop = opt.crop;
    info.src_side = opt.src_side;
    info.batch = per_worker_batch;
    info.steps_per_epoch = train_sampler.steps_per_epoch();
    info.eval_batch = static_cast<int32_t>(eval_per_worker());
    info.views = views;
    info.eval_batches = eval_sampler.num_batches();
    Send s;
    s.bytes = wire::pack_info(info, producer.stats());
    check_mpi(MPI_Isend(s.bytes.data(), static_cast<int>(s.bytes.size()), MPI_BYTE, peer.rank, wire::kTagInfo,
                        layout.data_comm(), &s.req),
              "MPI_Isend of the handshake reply");
    sends.push_back(std::move(s));
  }

  void receive_all(bool& progressed) {
    for (;;) {
      int flag = 0;
      MPI_Status st;
      check_mpi(MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, layout.data_comm(), &flag, &st), "MPI_Iprobe");
      if (!flag) return;
      progressed = true;
      auto it = peer_of_rank.find(st.MPI_SOURCE);
      ALEXNET_CHECK(it != peer_of_rank.end(), "data service ", layout.index(), " got a message (tag ", st.MPI_TAG,
                    ") from ", layout.name_of(st.MPI_SOURCE), ", which it does not serve");
      Peer& peer = peers[it->second];
      peer.last_heard = Clock::now();
      if (st.MPI_TAG == wire::kTagHello) {
        wire::Hello h;
        check_mpi(MPI_Recv(&h, sizeof(h), MPI_BYTE, st.MPI_SOURCE, st.MPI_TAG, layout.data_comm(), MPI_STATUS_IGNORE),
                  "MPI_Recv of a handshake");
        on_hello(peer, h);
      } else if (st.MPI_TAG == wire::kTagRequest) {
        wire::Request r;
        check_mpi(MPI_Recv(&r, sizeof(r), MPI_BYTE, st.MPI_SOURCE, st.MPI_TAG, layout.data_comm(), MPI_STATUS_IGNORE),
                  "MPI_Recv of a request");
        on_request(peer, r);
      } else {
        ALEXNET_FAIL("data service ", layout.index(), " got a message with unknown tag ", st.MPI_TAG, " from ",
                     layout.name_of(st.MPI_SOURCE));
      }
    }
  }

  void serve_ready(bool& progressed) {
    for (Peer& peer : peers) {
      if (!peer.pending || !peer.pending->ready.load()) continue;
      JobPtr job = std::move(peer.pending);
      std::deque<JobPtr>& q = job->kind == RequestKind::kTrain ? peer.train_q : peer.eval_q;
      ALEXNET_ASSERT(!q.empty() && q.front() == job, "the answered batch is not at the front of its queue");
      q.pop_front();
      Send s;
      s.job = job;
      check_mpi(MPI_Isend(job->msg.data(), static_cast<int>(job->msg.size()), MPI_BYTE, peer.rank, wire::kTagBatch,
                          layout.data_comm(), &s.req),
                "MPI_Isend of a batch");
      sends.push_back(std::move(s));
      (job->kind == RequestKind::kTrain ? stats.train_batches : stats.eval_batches) += 1;
      stats.bytes_sent += static_cast<int64_t>(job->msg.size());
      top_up(peer);
      progressed = true;
    }
  }

  void test_sends() {
    for (size_t i = 0; i < sends.size();) {
      int flag = 0;
      check_mpi(MPI_Test(&sends[i].req, &flag, MPI_STATUS_IGNORE), "MPI_Test of a send");
      if (flag) {
        sends[i] = std::move(sends.back());
        sends.pop_back();
      } else {
        ++i;
      }
    }
  }

  void check_liveness() {
    if (opt.timeout_s <= 0) return;
    const Clock::time_point now = Clock::now();
    for (const Peer& peer : peers) {
      if (peer.done || peer.pending) continue;  // done, or waiting on us
      const double silent = std::chrono::duration<double>(now - peer.last_heard).count();
      ALEXNET_CHECK(silent < opt.timeout_s, layout.name_of(peer.rank), " has sent nothing for ",
                    static_cast<int64_t>(silent), " s (data.timeout_s ", opt.timeout_s,
                    "); it stopped or hangs, ending the job");
    }
  }

  ServiceStats run() {
    const Clock::time_point start = Clock::now();
    auto all_done = [&] {
      return std::all_of(peers.begin(), peers.end(), [](const Peer& p) { return p.done; });
    };
    while (!all_done() || !sends.empty()) {
      {
        std::lock_guard<std::mutex> lock(mu);
        if (failure) std::rethrow_exception(failure);
      }
      bool progressed = false;
      receive_all(progressed);
      serve_ready(progressed);
      test_sends();
      check_liveness();
      if (!progressed) {
        // Wake when a batch completes, or soon anyway to poll MPI (no MPI call happens off this thread).
        std::unique_lock<std::mutex> lock(mu);
        done_cv.wait_for(lock, std::chrono::microseconds(200));
      }
    }
    stats.images = images.load();
    stats.replaced = maker.replaced();
    stats.bad_files = maker.bad_files();
    stats.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    stats.threads = num_threads;
    return stats;
  }
};

DataService::DataService(const JobLayout& layout, const SampleProducer& producer, const ServiceOptions& options) {
  ALEXNET_ASSERT(layout.role() == JobRole::kService, "DataService on a worker rank");
  impl_ = std::make_unique<Impl>(layout, producer, options);
}

DataService::~DataService() = default;

ServiceStats DataService::run() { return impl_->run(); }

}  // namespace alexnet
