#include "worker/trainer.h"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include "checkpoint/checkpoint.h"
#include "comm/communicator.h"
#include "comm/grad_buckets.h"
#include "comm/placement.h"
#include "core/device.h"
#include "core/error.h"
#include "core/log.h"
#include "core/threads.h"
#include "data_service/client.h"
#include "launcher/launch_plan.h"
#include "model/alexnet.h"
#include "model/layers.h"
#include "worker/eval_chunks.h"
#include "worker/run_state.h"
#include "worker/schedule.h"
#if ALEXNET_WITH_CUDA
#include "comm/nccl_communicator.h"
#include "model/cuda/layers_cuda.h"
#endif

namespace alexnet {
namespace fs = std::filesystem;
namespace {

// Set by the signal thread (install_stop_handlers), read at every step.
std::atomic<int> g_stop_signal{0};

sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  sigaddset(&set, SIGTERM);
  return set;
}

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string hms(double s) {
  if (!(s >= 0) || s > 1e8) return "?";
  const long t = static_cast<long>(s + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
  return buf;
}

// A JSON number that survives a round trip (17 significant digits); JSON has no NaN or infinity.
std::string num(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// Top-k hits of one row of scores against a label.
bool in_top_k(const float* scores, int64_t classes, int64_t label, int k) {
  const float target = scores[label];
  int better = 0;
  for (int64_t c = 0; c < classes; ++c)
    if (scores[c] > target || (scores[c] == target && c < label)) ++better;
  return better < k;
}

// Row-wise softmax of [rows, classes] into double probabilities (for the ten-view average).
void softmax_rows(const float* logits, int64_t rows, int64_t classes, std::vector<double>& out) {
  out.resize(static_cast<size_t>(rows * classes));
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = logits + r * classes;
    double* y = out.data() + r * classes;
    const float mx = *std::max_element(x, x + classes);
    double sum = 0;
    for (int64_t c = 0; c < classes; ++c) sum += (y[c] = std::exp(static_cast<double>(x[c]) - mx));
    for (int64_t c = 0; c < classes; ++c) y[c] /= sum;
  }
}

struct EvalResult {
  double images = 0;
  double top1 = 0, top5 = 0;          // centre-crop hits
  double top1_ten = 0, top5_ten = 0;  // ten-view average hits (ten_crop only)
  double loss = 0;                    // centre-crop cross-entropy sum
  int views = 1;
  double seconds = 0;
};

class Worker {
 public:
  Worker(const Config& config, const WorkerOptions& options, const JobLayout& layout)
      : config_(config), options_(options), layout_(layout), rank_(layout.index()),
        folder_(checkpoint_dir(config), config.checkpoint.keep) {}

  int run();

 private:
  void choose_devices();
  void setup_comm();
  void restore();
  void train_step();
  EvalResult evaluate();
  void after_evaluation(const EvalResult& r, bool feeds_schedule);
  void log_progress();
  void write_checkpoint_now(const std::string& why);
  void append_metrics(const std::string& json);
  // What the CUDA graphs of the training pass did so far (parallel.cuda_graphs), for the log.
  std::string graph_line() const;
  void average_buffers();
  void summary(double wall_s, const std::string& how);

  const Config config_;
  const WorkerOptions options_;
  const JobLayout& layout_;
  const int rank_;
  CheckpointFolder folder_;
  std::unique_ptr<DataClient> client_;
  std::unique_ptr<AlexNet> model_;
  std::array<Device, kTowers> devices_{Device::cpu(), Device::cpu()};
  std::string backend_line_;
  std::unique_ptr<Communicator> world_;  // metrics and agreement
  std::array<std::unique_ptr<Communicator>, kTowers> tower_comm_;
  std::array<std::unique_ptr<GradBuckets>, kTowers> buckets_;
  std::array<std::vector<size_t>, kTowers> bucket_index_;  // table index -> position in the bucket list
  std::unique_ptr<LrScheduler> scheduler_;
  TrainState state_;
  int64_t steps_per_epoch_ = 0, total_steps_ = 0;
  double lr_ = 0;
  std::ofstream metrics_;
  Clock::time_point start_, last_checkpoint_, interval_start_;
  int64_t start_step_ = 0;
  // Timing sums over the current progress interval (rank 0's view; not part of the checkpoint).
  double t_wait_ = 0, t_step_ = 0, t_exposed_ = 0, t_inflight_ = 0;
  int64_t t_steps_ = 0;
  // Whole-run timing sums for the summary.
  double run_wait_ = 0, run_step_ = 0, run_exposed_ = 0, run_inflight_ = 0;
  int64_t run_steps_ = 0;
  // What the CUDA backend did in the steps after the first kWarmSteps of this run (cuda_activity).
  static constexpr int64_t kWarmSteps = 3;
  int64_t steady_steps_ = 0;
  CudaActivity steady_;
  bool stop_requested_ = false, checkpoint_due_ = false;
  int64_t last_eval_step_ = -1;
  std::string last_checkpoint_path_;
  EvalResult last_eval_;
  bool have_eval_ = false;
};

void Worker::setup_comm() {
  MPI_Comm comm = layout_.role_comm();
  int size = 1;
  MPI_Comm_size(comm, &size);
  const double timeout_s = config_.parallel.comm_timeout_s;
  world_ = std::make_unique<MpiCommunicator>(comm, timeout_s);
  // One communicator per tower (shared/ARCHITECTURE.md): tower t's gradients are reduced among the
  // tower-t replicas of every rank, and the two reductions are independent.
  for (int t = 0; t < kTowers; ++t) {
    if (size == 1) {
      tower_comm_[t] = std::make_unique<LocalCommunicator>();
    } else if (devices_[t].is_cuda()) {
#if ALEXNET_WITH_CUDA
      tower_comm_[t] = std::make_unique<NcclCommunicator>(comm, devices_[t].index, model_->stream(t), timeout_s);
#endif
    } else {
      tower_comm_[t] = std::make_unique<MpiCommunicator>(comm, timeout_s);
    }
  }
  GradBucketOptions opts;
  opts.bucket_bytes = static_cast<size_t>(config_.parallel.bucket_mb * 1024.0 * 1024.0);
  opts.overlap = config_.parallel.overlap;
  const std::vector<ParamInfo>& table = model_->table();
  for (int t = 0; t < kTowers; ++t) {
    Tensor arena = model_->grad_arena(t);
    float* base = arena.data<float>();
    std::vector<GradTensor> list;
    bucket_index_[t].assign(table.size(), SIZE_MAX);
    size_t offset = 0;
    for (size_t i = 0; i < table.size(); ++i) {
      if (!table[i].trainable) continue;
      // The tensor and its arena padding (zeros), so the buckets stay contiguous in memory.
      const size_t count = static_cast<size_t>(AlexNet::arena_slot(shape_numel(table[i].tower_shape(t))));
      bucket_index_[t][i] = list.size();
      list.push_back({str_cat("tower", t, "/", table[i].name), base + offset, count});
      offset += count;
    }
    ALEXNET_CHECK(offset == static_cast<size_t>(arena.numel()), "gradient arena of tower ", t, " holds ",
                  arena.numel(), " floats, the table ", offset);
    buckets_[t] = std::make_unique<GradBuckets>(*tower_comm_[t], std::move(list), opts);
  }
  if (rank_ == 0) {
    const auto& plan = buckets_[0]->buckets();
    log_info("gradient allreduce: ", size, " worker rank(s), per tower ", plan.size(), " bucket(s) of <= ",
             config_.parallel.bucket_mb, " MiB, ", config_.parallel.overlap ? "overlapping backward" : "after backward",
             size == 1 ? " (one rank: nothing to reduce)" : "");
  }
}

void Worker::choose_devices() {
  const BackendKind backend = config_.parallel.backend;
  const int gpus = cuda_device_count();
  if (backend == BackendKind::kCpu || (backend == BackendKind::kAuto && gpus == 0)) {
    backend_line_ = str_cat("CPU backend (", device_summary(), ")");
    return;
  }
  ALEXNET_CHECK(gpus > 0, "config key 'parallel.backend': cuda, but this process sees no CUDA device (",
                device_summary(), ")");
  // This rank's position among the worker ranks of its node.
  MPI_Comm local;
  MPI_Comm_split_type(layout_.role_comm(), MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local);
  int local_rank = 0, local_size = 1;
  MPI_Comm_rank(local, &local_rank);
  MPI_Comm_size(local, &local_size);
  // Fewer GPUs visible than the node's workers need: a scheduler may have given each rank GPUs of its own
  // (srun --gpus-per-task sets CUDA_VISIBLE_DEVICES per rank), which their PCI locations tell.
  const int per_rank = config_.parallel.devices_per_rank;
  bool own_gpus = false;
  if (local_size > 1 && local_size * per_rank > gpus && per_rank <= gpus) {
    std::vector<uint64_t> mine;
    for (int d = 0; d < per_rank; ++d) mine.push_back(cuda_device_pci_id(d));
    std::vector<uint64_t> all(mine.size() * static_cast<size_t>(local_size));
    MPI_Allgather(mine.data(), per_rank, MPI_UINT64_T, all.data(), per_rank, MPI_UINT64_T, local);
    own_gpus = ranks_see_own_gpus(all, per_rank);
  }
  MPI_Comm_free(&local);
  const std::array<int, 2> gpu = tower_gpus(local_rank, local_size, per_rank, gpus, own_gpus);
  for (int t = 0; t < kTowers; ++t) devices_[t] = Device::cuda(gpu[t]);
#if ALEXNET_WITH_CUDA
  set_cuda_precision(config_.parallel.precision);
  set_cuda_deterministic(config_.parallel.deterministic);
#endif
  backend_line_ = str_cat("CUDA backend: tower 0 on GPU ", devices_[0].index, ", tower 1 on GPU ", devices_[1].index,
                          own_gpus ? " (of the GPUs this rank was given)" : "", ", precision ",
                          enum_name(config_.parallel.precision),
                          config_.parallel.deterministic ? "" : ", fastest (not bit-reproducible) convolutions");
}

std::string Worker::graph_line() const {
  const AlexNet::GraphStatus g = model_->graph_status();
  if (!g.refused.empty())
    return str_cat("CUDA graphs: capture refused, training passes run stream by stream: ", g.refused);
  return str_cat("CUDA graphs: ", g.captures, g.captures == 1 ? " capture" : " captures", ", ", g.replays,
                 " training passes replayed (", g.nodes, " nodes a pass)");
}

void Worker::append_metrics(const std::string& json) {
  if (rank_ != 0) return;
  metrics_ << json << "\n";
  metrics_.flush();
}

void Worker::restore() {
  // Every rank starts from the paper's initialisation keyed by the seed; rank 0 then loads the resume
  // point (if any) and broadcasts it, so every replica holds the same bits.
  if (config_.train.init == InitKind::kScaled) model_->init_scaled(config_.train.seed);
  else model_->init_paper(config_.train.seed);
  state_.seed = config_.train.seed;
  state_.global_batch = config_.train.batch_size;
  std::vector<uint64_t> scalars(16, 0);
  bool resumed = false;
  if (rank_ == 0 && !options_.resume.empty()) {
    std::optional<ResumePoint> point = find_resume_point(options_.resume, folder_);
    if (point) {
      const std::string diff = model_difference(point->config, config_);
      ALEXNET_CHECK(diff.empty(), "cannot resume from ", point->path, ": ", diff,
                    "; a resume needs the same model (start a new run directory, or fix the config)");
      if (point->state.seed != config_.train.seed)
        log_warn("resuming ", point->path, " with train.seed ", config_.train.seed, " (the checkpoint used ",
                 point->state.seed, "): augmentation and dropout draws differ from the original run");
      if (point->state.global_batch != config_.train.batch_size)
        log_warn("resuming ", point->path, " with train.batch_size ", config_.train.batch_size,
                 " (the checkpoint used ", point->state.global_batch, "): the data cursor is re-read in the new batch size");
      model_->load_state(point->data.model, point->path);
      model_->load_momentum(point->data.momentum, point->path);
      state_ = point->state;
      state_.seed = config_.train.seed;
      state_.global_batch = config_.train.batch_size;
      resumed = true;
      log_info("resuming from ", point->path, ": step ", state_.step, ", epoch ", state_.epoch, " step ",
               state_.epoch_step, " (written by ", state_.workers, " worker rank(s))");
    }
  }
  if (rank_ == 0) {
    scalars[0] = resumed;
    scalars[1] = static_cast<uint64_t>(state_.step);
    scalars[2] = static_cast<uint64_t>(state_.epoch);
    scalars[3] = static_cast<uint64_t>(state_.epoch_step);
    scalars[4] = static_cast<uint64_t>(state_.schedule.drops);
    std::memcpy(&scalars[5], &state_.schedule.best_error, 8);
    scalars[6] = static_cast<uint64_t>(state_.schedule.bad_evaluations);
    std::memcpy(&scalars[7], &state_.interval.loss, 8);
    std::memcpy(&scalars[8], &state_.interval.correct, 8);
    std::memcpy(&scalars[9], &state_.interval.images, 8);
    scalars[10] = static_cast<uint64_t>(state_.interval.steps);
  }
  const std::vector<uint64_t> all = world_->allgather(scalars);  // rank 0's come first
  resumed = all[0] != 0;
  if (!resumed) return;
  state_.step = static_cast<int64_t>(all[1]);
  state_.epoch = static_cast<int64_t>(all[2]);
  state_.epoch_step = static_cast<int64_t>(all[3]);
  state_.schedule.drops = static_cast<int>(all[4]);
  std::memcpy(&state_.schedule.best_error, &all[5], 8);
  state_.schedule.bad_evaluations = static_cast<int>(all[6]);
  std::memcpy(&state_.interval.loss, &all[7], 8);
  std::memcpy(&state_.interval.correct, &all[8], 8);
  std::memcpy(&state_.interval.images, &all[9], 8);
  state_.interval.steps = static_cast<int64_t>(all[10]);
  if (world_->size() > 1) {
    std::map<std::string, Tensor> params = model_->state(), momentum = model_->momentum();
    for (auto& [name, t] : params) world_->broadcast(t.data<float>(), static_cast<size_t>(t.numel()), 0);
    for (auto& [name, t] : momentum) world_->broadcast(t.data<float>(), static_cast<size_t>(t.numel()), 0);
    model_->load_state(params, "the broadcast from worker 0");
    model_->load_momentum(momentum, "the broadcast from worker 0");
  }
}

void Worker::average_buffers() {
  // Batch-norm running statistics come from each rank's own batches; averaging them every step keeps
  // the replicas identical (gradients are averaged by the buckets). Each tower's share is averaged in
  // place on its device by the tower's communicator: no copy of the model to the host.
  if (world_->size() == 1 || config_.model.norm != NormKind::kBatchNorm) return;
  const std::vector<ParamInfo>& table = model_->table();
  for (int t = 0; t < kTowers; ++t)
    for (size_t i = 0; i < table.size(); ++i)
      if (!table[i].trainable) {
        Tensor b = model_->tower_tensor(t, i);
        tower_comm_[t]->allreduce(b.data<float>(), static_cast<size_t>(b.numel()), ReduceOp::kAverage);
      }
}

void Worker::train_step() {
  const auto t0 = Clock::now();
  const CudaActivity activity0 = cuda_activity();
  TrainBatch batch = client_->next_train_batch(state_.epoch, state_.epoch_step);
  const double wait = seconds_since(t0);
  lr_ = scheduler_->lr(state_.step, state_.epoch, state_.schedule);
  PassOptions pass;
  pass.dropout = true;
  pass.seed = config_.train.seed;
  pass.step = static_cast<uint64_t>(state_.step);
  pass.sample_ids = batch.samples.data();
  pass.on_grad_ready = [this](int tower, size_t index) { buckets_[tower]->mark_ready(bucket_index_[tower][index]); };
  Tensor logits;
  const double loss =
      batch.images.defined()
          ? model_->train_pass(batch.images, batch.labels, pass, &logits)
          : model_->train_pass(crop_batch(batch.crops, batch.augment, 0, batch.crops.dim(0)), batch.labels, pass, &logits);
  // With CUDA towers backward is still running here: let MPI copy the next batch now rather than after
  // the reductions, when the GPUs would wait for it.
  client_->progress();
  for (int t = 0; t < kTowers; ++t) buckets_[t]->wait_all();
  average_buffers();
  model_->sgd_step(lr_, config_.train.momentum, config_.train.weight_decay);

  const int64_t n = logits.dim(0), classes = logits.dim(1);
  double correct = 0;
  const float* l = logits.data<float>();
  const int64_t* y = batch.labels.data<int64_t>();
  for (int64_t i = 0; i < n; ++i) correct += in_top_k(l + i * classes, classes, y[i], 1);
  // One small reduction per step: the metrics, and the agreement on stopping and checkpointing.
  const bool time_due = rank_ == 0 && config_.checkpoint.every_minutes > 0 &&
                        seconds_since(last_checkpoint_) >= config_.checkpoint.every_minutes * 60.0;
  double m[5] = {loss, correct, static_cast<double>(n), g_stop_signal.load() != 0 ? 1.0 : 0.0, time_due ? 1.0 : 0.0};
  world_->allreduce_metrics(m, 5, ReduceOp::kSum);
  const double step_loss = m[0] / world_->size();
  state_.interval.loss += step_loss;
  state_.interval.correct += m[1];
  state_.interval.images += m[2];
  state_.interval.steps += 1;
  stop_requested_ = m[3] > 0;
  checkpoint_due_ = m[4] > 0;
  ALEXNET_CHECK(std::isfinite(step_loss), "the training loss is ", step_loss, " at step ", state_.step,
                " (lr ", lr_, "): training diverged; lower train.lr");

  state_.step += 1;
  state_.epoch_step += 1;
  if (state_.epoch_step == steps_per_epoch_) {
    state_.epoch += 1;
    state_.epoch_step = 0;
  }
  const double step_s = seconds_since(t0);
  // Exposed: the two towers' wait_all calls run one after the other, so their times add up. In flight:
  // from the first reduction's start to the last one's completion over both towers. One rank reduces
  // nothing: both stay 0.
  double exposed = 0, inflight = 0;
  if (world_->size() > 1) {
    double first = 0, last = 0;
    bool any = false;
    for (int t = 0; t < kTowers; ++t) {
      const CommTiming& c = buckets_[t]->last_timing();
      exposed += c.exposed_s;
      if (c.reductions == 0) continue;
      first = any ? std::min(first, c.start_s) : c.start_s;
      last = any ? std::max(last, c.end_s) : c.end_s;
      any = true;
    }
    inflight = any ? last - first : 0;
  }
  // After the first steps of the run (cuDNN searches, workspaces growing) a CUDA step should allocate
  // nothing and block the host only for its results (core/device.h); the summary reports it.
  if (run_steps_ >= kWarmSteps) {
    steady_ += cuda_activity() - activity0;
    ++steady_steps_;
  }
  t_wait_ += wait, t_step_ += step_s, t_exposed_ += exposed, t_inflight_ += inflight, ++t_steps_;
  run_wait_ += wait, run_step_ += step_s, run_exposed_ += exposed, run_inflight_ += inflight, ++run_steps_;
}

void Worker::log_progress() {
  const IntervalSums& s = state_.interval;
  if (s.steps == 0) return;
  const double loss = s.loss / s.steps, top1 = s.correct / std::max(1.0, s.images);
  std::ostringstream rec;
  rec << "{\"kind\": \"train\", \"step\": " << state_.step << ", \"epoch\": " << state_.epoch
      << ", \"loss\": " << num(loss) << ", \"top1\": " << num(top1) << ", \"lr\": " << num(lr_) << "}";
  state_.history += rec.str() + "\n";
  if (rank_ == 0) {
    const double img_s = t_step_ > 0 ? t_steps_ * config_.train.batch_size / t_step_ : 0;
    const double data_pct = t_step_ > 0 ? 100.0 * t_wait_ / t_step_ : 0;
    const double exposed = t_steps_ ? t_exposed_ / t_steps_ : 0;
    const bool reducing = world_->size() > 1;
    const double hidden = t_inflight_ > 0 ? std::max(0.0, 1.0 - t_exposed_ / t_inflight_) : 0;
    const double step_s = t_steps_ ? t_step_ / t_steps_ : 0;
    const double eta = step_s * static_cast<double>(total_steps_ - state_.step);
    const int64_t epochs = config_.train.epochs;
    log_info("epoch ", (state_.step - 1) / steps_per_epoch_ + 1, "/", epochs, "  step ", state_.step, "/", total_steps_, "  loss ", fmt("%.4f", loss), "  top-1 ",
             fmt("%.1f%%", 100 * top1), "  lr ", fmt("%.4g", lr_), "  ", fmt("%.1f", img_s), " img/s  data wait ",
             fmt("%.0f%%", data_pct), "  ",
             reducing ? str_cat("allreduce exposed ", fmt("%.3f s", exposed), " (", fmt("%.0f%%", 100 * hidden), " hidden)")
                      : std::string("allreduce: none (1 rank)"),
             "  ETA ", hms(eta));
    std::ostringstream full;
    full << "{\"kind\": \"train\", \"step\": " << state_.step << ", \"epoch\": " << state_.epoch
         << ", \"loss\": " << num(loss) << ", \"top1\": " << num(top1) << ", \"lr\": " << num(lr_)
         << ", \"img_per_s\": " << num(img_s) << ", \"step_s\": " << num(step_s)
         << ", \"data_wait_s\": " << num(t_steps_ ? t_wait_ / t_steps_ : 0)
         << ", \"compute_s\": " << num(t_steps_ ? (t_step_ - t_wait_ - t_exposed_) / t_steps_ : 0)
         << ", \"exposed_comm_s\": " << num(exposed) << ", \"comm_in_flight_s\": " << num(t_steps_ ? t_inflight_ / t_steps_ : 0)
         << ", \"hidden_fraction\": " << (reducing ? num(hidden) : "null") << ", \"elapsed_s\": " << num(seconds_since(start_)) << "}";
    append_metrics(full.str());
  }
  state_.interval = IntervalSums{};
  t_wait_ = t_step_ = t_exposed_ = t_inflight_ = 0;
  t_steps_ = 0;
}

EvalResult Worker::evaluate() {
  const auto t0 = Clock::now();
  EvalResult r;
  const int64_t chunk = std::max<int64_t>(1, client_->info().batch);
  std::vector<double> probs;
  for (int64_t b = 0; b < client_->num_eval_batches(); ++b) {
    EvalData d = client_->eval_batch(b);
    const int views = d.views;
    r.views = views;
    const int64_t rows = d.crops.dim(0);
    // CUDA towers get a short last chunk padded to a full one: the shapes of a training step again.
    const Tensor logits = infer_in_chunks(*model_, d, chunk, devices_[0].is_cuda());
    const int64_t classes = logits.dim(1);
    const float* l = logits.data<float>();
    softmax_rows(l, rows, classes, probs);
    const int64_t* y = d.labels.data<int64_t>();
    std::vector<float> avg(static_cast<size_t>(classes));
    for (size_t j = 0; j < d.mask.size(); ++j) {
      if (!d.mask[j]) continue;
      const int64_t row = static_cast<int64_t>(j) * views;  // view 0 is the centre crop
      r.images += 1;
      r.top1 += in_top_k(l + row * classes, classes, y[j], 1);
      r.top5 += in_top_k(l + row * classes, classes, y[j], std::min<int>(5, static_cast<int>(classes)));
      r.loss += -std::log(std::max(probs[static_cast<size_t>(row * classes + y[j])], 1e-300));
      if (views > 1) {
        for (int64_t c = 0; c < classes; ++c) {
          double s = 0;
          for (int v = 0; v < views; ++v) s += probs[static_cast<size_t>((row + v) * classes + c)];
          avg[static_cast<size_t>(c)] = static_cast<float>(s / views);
        }
        r.top1_ten += in_top_k(avg.data(), classes, y[j], 1);
        r.top5_ten += in_top_k(avg.data(), classes, y[j], std::min<int>(5, static_cast<int>(classes)));
      }
    }
  }
  double m[6] = {r.images, r.top1, r.top5, r.top1_ten, r.top5_ten, r.loss};
  world_->allreduce_metrics(m, 6, ReduceOp::kSum);
  r.images = m[0], r.top1 = m[1], r.top5 = m[2], r.top1_ten = m[3], r.top5_ten = m[4], r.loss = m[5];
  r.seconds = seconds_since(t0);
  return r;
}

void Worker::after_evaluation(const EvalResult& r, bool feeds_schedule) {
  if (r.images == 0) {
    if (rank_ == 0) log_warn("evaluation at step ", state_.step, " skipped: the validation set is empty");
    return;
  }
  last_eval_ = r;
  have_eval_ = true;
  last_eval_step_ = state_.step;
  const double n = std::max(1.0, r.images);
  const double e1 = 1 - r.top1 / n, e5 = 1 - r.top5 / n;
  std::ostringstream rec;
  rec << "{\"kind\": \"eval\", \"step\": " << state_.step << ", \"epoch\": " << state_.epoch
      << ", \"images\": " << num(r.images) << ", \"loss\": " << num(r.loss / n) << ", \"top1_error\": " << num(e1)
      << ", \"top5_error\": " << num(e5);
  if (r.views > 1)
    rec << ", \"ten_crop_top1_error\": " << num(1 - r.top1_ten / n) << ", \"ten_crop_top5_error\": " << num(1 - r.top5_ten / n);
  std::string line = rec.str();
  if (feeds_schedule) {
    const int before = state_.schedule.drops;
    scheduler_->on_evaluation(r.views > 1 ? 1 - r.top1_ten / n : e1, state_.schedule);
    if (state_.schedule.drops != before) line += ", \"lr_drop\": " + std::to_string(state_.schedule.drops);
    state_.history += line + "}\n";
    if (state_.schedule.drops != before && rank_ == 0)
      log_info("validation error stopped improving: learning rate x", config_.train.lr_decay, " (drop ",
               state_.schedule.drops, " of at most ", config_.train.max_lr_drops, ")");
  }
  if (rank_ == 0) {
    std::string msg = str_cat("evaluation at step ", state_.step, ": ", static_cast<int64_t>(r.images),
                              " validation images, top-1 error ", fmt("%.2f%%", 100 * e1), ", top-5 error ",
                              fmt("%.2f%%", 100 * e5), " (centre crop)");
    if (r.views > 1)
      msg += str_cat("; ten-view average: top-1 error ", fmt("%.2f%%", 100 * (1 - r.top1_ten / n)), ", top-5 error ",
                     fmt("%.2f%%", 100 * (1 - r.top5_ten / n)));
    log_info(msg, " [", fmt("%.1f", r.seconds), " s]");
    append_metrics(line + ", \"seconds\": " + num(r.seconds) + "}");
  }
}

void Worker::write_checkpoint_now(const std::string& why) {
  if (rank_ == 0) {
    const auto t0 = Clock::now();
    CheckpointData d;
    d.config_yaml = config_to_yaml(config_);
    d.model = model_->state();
    d.momentum = model_->momentum();
    d.step = state_.step;
    d.epoch = state_.epoch;
    TrainState s = state_;
    s.workers = world_->size();
    put_train_state(s, d);
    last_checkpoint_path_ = folder_.save(d, state_.step);
    log_info("checkpoint ", last_checkpoint_path_, " (", why, ", ", fmt("%.1f", seconds_since(t0)), " s)");
    append_metrics(str_cat("{\"kind\": \"checkpoint\", \"step\": ", state_.step, ", \"path\": \"",
                           last_checkpoint_path_, "\", \"reason\": \"", why, "\"}"));
  }
  last_checkpoint_ = Clock::now();
  world_->barrier();  // no rank runs ahead (or exits) before the file is complete
}

void Worker::summary(double wall_s, const std::string& how) {
  if (rank_ != 0) return;
  const double steps = std::max<int64_t>(1, run_steps_);
  if (run_steps_ == 0) log_info("summary: ", how, " at step ", state_.step, " in ", hms(wall_s));
  const bool reducing = world_->size() > 1;
  const double hidden = run_inflight_ > 0 ? std::max(0.0, 1.0 - run_exposed_ / run_inflight_) : 0;
  if (run_steps_ > 0)
    log_info("summary: ", how, "; ", run_steps_, " steps this run (", start_step_, " -> ", state_.step, " of ",
           total_steps_, ") in ", hms(wall_s), "; ", fmt("%.1f", run_step_ > 0 ? run_steps_ * config_.train.batch_size / run_step_ : 0),
           " img/s; per step ", fmt("%.3f s", run_step_ / steps), " = compute ",
           fmt("%.3f", (run_step_ - run_wait_ - run_exposed_) / steps), " + data wait ", fmt("%.3f", run_wait_ / steps),
           " + exposed allreduce ", fmt("%.3f", run_exposed_ / steps),
           reducing ? str_cat(" (", fmt("%.0f%%", 100 * hidden), " of communication hidden)") : std::string(" (1 rank)"));
  const bool cuda = devices_[0].is_cuda() || devices_[1].is_cuda();
  const double per_step = static_cast<double>(std::max<int64_t>(1, steady_steps_));
  const double allocations = static_cast<double>(steady_.device_allocations + steady_.host_allocations);
  if (cuda && steady_steps_ > 0)
    log_info("summary: CUDA, per training step after the first ", kWarmSteps, " of this run (", steady_steps_, " steps): ",
             fmt("%.2f", allocations / per_step), " allocations (device and page-locked), ",
             fmt("%.2f", steady_.host_waits / per_step), " host waits for the GPU");
  if (model_ && model_->graph_status().enabled) log_info("summary: ", graph_line());
  if (have_eval_) {
    const double n = std::max(1.0, last_eval_.images);
    log_info("summary: validation at step ", last_eval_step_, ": top-1 error ", fmt("%.2f%%", 100 * (1 - last_eval_.top1 / n)),
             " (top-1 accuracy ", fmt("%.2f%%", 100 * last_eval_.top1 / n), "), top-5 error ",
             fmt("%.2f%%", 100 * (1 - last_eval_.top5 / n)),
             last_eval_.views > 1 ? str_cat("; ten-view top-1 error ", fmt("%.2f%%", 100 * (1 - last_eval_.top1_ten / n))) : "");
  }
  std::ostringstream rec;
  rec << "{\"kind\": \"summary\", \"how\": \"" << how << "\", \"step\": " << state_.step << ", \"steps_run\": " << run_steps_
      << ", \"wall_s\": " << num(wall_s) << ", \"step_s\": " << num(run_step_ / steps)
      << ", \"compute_s\": " << num((run_step_ - run_wait_ - run_exposed_) / steps)
      << ", \"data_wait_s\": " << num(run_wait_ / steps) << ", \"exposed_comm_s\": " << num(run_exposed_ / steps)
      << ", \"comm_in_flight_s\": " << num(run_inflight_ / steps) << ", \"hidden_fraction\": " << (reducing ? num(hidden) : "null")
      << ", \"workers\": " << world_->size() << ", \"overlap\": " << (config_.parallel.overlap ? "true" : "false")
      << ", \"bucket_mb\": " << num(config_.parallel.bucket_mb)
      << ", \"steady_allocations_per_step\": " << (cuda && steady_steps_ > 0 ? num(allocations / per_step) : "null")
      << ", \"steady_host_waits_per_step\": " << (cuda && steady_steps_ > 0 ? num(steady_.host_waits / per_step) : "null") << "}";
  append_metrics(rec.str());
}

int Worker::run() {
  start_ = last_checkpoint_ = Clock::now();
  int threads = config_.parallel.threads;
  if (threads == 0) {
    const char* env = std::getenv("OMP_NUM_THREADS");
    threads = env ? std::max(1, std::atoi(env)) : 0;
  }
  threads = set_cpu_threads(threads);
  choose_devices();
  model_ = std::make_unique<AlexNet>(config_.model, devices_);
  model_->set_cuda_graphs(config_.parallel.cuda_graphs);
  if (rank_ == 0) {
    std::error_code ec;
    fs::create_directories(config_.run.dir, ec);
    ALEXNET_CHECK(!ec, "config key 'run.dir': cannot create '", config_.run.dir, "': ", ec.message());
    set_log_file((fs::path(config_.run.dir) / "worker.log").string());
    metrics_.open((fs::path(config_.run.dir) / "metrics.jsonl").string(), std::ios::app);
    ALEXNET_CHECK(metrics_.good(), "cannot write ", config_.run.dir, "/metrics.jsonl");
    std::ofstream cfg((fs::path(config_.run.dir) / "config.yaml").string(), std::ios::trunc);
    cfg << config_to_yaml(config_);
    ALEXNET_CHECK(cfg.good(), "cannot write ", config_.run.dir, "/config.yaml");
    log_info("alexnet-worker: run directory ", config_.run.dir, "; ", layout_.num_workers(), " worker rank(s) x ",
             threads, " CPU thread(s), ", backend_line_);
  }
  setup_comm();
  restore();
  client_ = std::make_unique<DataClient>(layout_, config_);
  const DataInfo& info = client_->info();
  if (devices_[0].is_cuda()) {
    // The input step runs on the GPUs: the client hands over the uint8 crops as received, in
    // page-locked memory that tower 0's GPU reads by DMA.
    client_->set_host_normalisation(false);
    client_->set_page_locked_receive(true);
    model_->set_input_mean(client_->input_mean());
  }
  steps_per_epoch_ = info.steps_per_epoch;
  ALEXNET_CHECK(steps_per_epoch_ > 0, "the training set (", info.num_train, " images) holds no full global batch of ",
                config_.train.batch_size, "; lower train.batch_size");
  total_steps_ = steps_per_epoch_ * config_.train.epochs;
  if (config_.train.max_steps > 0) total_steps_ = std::min(total_steps_, config_.train.max_steps);
  scheduler_ = std::make_unique<LrScheduler>(config_.train, steps_per_epoch_);
  start_step_ = state_.step;
  // A checkpoint written with another global batch: re-derive the cursor from the step count.
  if (state_.epoch * steps_per_epoch_ + state_.epoch_step != state_.step) {
    state_.epoch = state_.step / steps_per_epoch_;
    state_.epoch_step = state_.step % steps_per_epoch_;
  }
  if (rank_ == 0) {
    log_info("data: ", info.num_train, " training and ", info.num_val, " validation images, ", info.num_classes,
             " classes; global batch ", config_.train.batch_size, " (", info.batch, " per worker), ", steps_per_epoch_,
             " steps per epoch, ", total_steps_, " steps in all");
    log_info("learning rate: ", scheduler_->describe());
    append_metrics(str_cat("{\"kind\": \"start\", \"step\": ", state_.step, ", \"workers\": ", world_->size(),
                           ", \"total_steps\": ", total_steps_, ", \"resumed_from\": \"",
                           state_.step > 0 ? "checkpoint" : "", "\"}"));
  }

  if (options_.eval_only) {
    after_evaluation(evaluate(), false);
    client_->shutdown();
    summary(seconds_since(start_), "evaluation only");
    return 0;
  }

  int status = 0;
  std::string how = "finished";
  while (state_.step < total_steps_) {
    train_step();
#if ALEXNET_WITH_CUDA
    // What cuDNN runs for each convolution, once its passes were all searched: after the second step of
    // the run (a bf16 layer cuDNN refuses in backward searches its TF32 forward in the second), or
    // after the only one.
    const int64_t done = state_.step - start_step_;
    if (rank_ == 0 && devices_[0].is_cuda() && (done == 2 || (done == 1 && state_.step == total_steps_)))
      for (const ConvPlanInfo& plan : cuda_conv_plan_report().plans) log_info("convolution plan: ", plan.text);
    // By then the training pass has been captured (parallel.cuda_graphs): the first steps allocate and
    // search, and the next like the one before it is captured.
    if (rank_ == 0 && model_->graph_status().enabled && done == 5) log_info(graph_line());
#endif
    const bool epoch_end = state_.epoch_step == 0;
    if (state_.interval.steps > 0 && (state_.step % config_.log.every_steps == 0 || epoch_end || state_.step == total_steps_))
      log_progress();
    const bool periodic_eval = config_.train.eval_every_steps > 0 && state_.step % config_.train.eval_every_steps == 0;
    if (epoch_end || periodic_eval) after_evaluation(evaluate(), true);
    if (stop_requested_) {
      if (rank_ == 0) log_info("stop requested by a signal: checkpoint at step ", state_.step, ", then exit ", kExitCheckpointedOnSignal);
      write_checkpoint_now("signal");
      status = kExitCheckpointedOnSignal;
      how = "stopped by a signal";
      break;
    }
    if (state_.step == total_steps_) {
      write_checkpoint_now("end of training");
    } else if ((config_.checkpoint.every_steps > 0 && state_.step % config_.checkpoint.every_steps == 0) || checkpoint_due_) {
      write_checkpoint_now(checkpoint_due_ ? "time" : "every_steps");
    }
  }
  if (status == 0 && last_eval_step_ != state_.step) after_evaluation(evaluate(), false);
  client_->shutdown();
  summary(seconds_since(start_), how);
  if (rank_ == 0) {
    if (status == kExitCheckpointedOnSignal)
      log_info("resume with: --resume auto (same config and run.dir); latest checkpoint ", last_checkpoint_path_);
    else if (!last_checkpoint_path_.empty())
      log_info("run directory ", config_.run.dir, ": config.yaml, worker.log, metrics.jsonl, checkpoints in ",
               folder_.dir(), " (latest ", last_checkpoint_path_, ")");
  }
  return status;
}

}  // namespace

void block_stop_signals() {
  const sigset_t set = stop_signals();
  const int rc = pthread_sigmask(SIG_BLOCK, &set, nullptr);
  ALEXNET_CHECK(rc == 0, "pthread_sigmask: ", std::strerror(rc));
}

void install_stop_handlers() {
  std::thread([] {
    const sigset_t set = stop_signals();
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) == 0) g_stop_signal.store(sig);
    }
  }).detach();
}

int run_worker(const Config& config, const WorkerOptions& options, const JobLayout& layout) {
  Worker worker(config, options, layout);
  return worker.run();
}

}  // namespace alexnet
