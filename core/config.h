// The run configuration: plain structs filled from YAML (yaml-cpp). Each struct lists its keys once,
// in visit(), and that one list drives loading (unknown keys and wrong types are errors naming the
// key and line), writing the resolved config, and docs/config.md.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace alexnet {

// Enumerations that appear in the config, with their YAML spellings.
enum class Activation { kRelu, kTanh };
enum class NormKind { kLrn, kLrn2d, kBatchNorm, kNone };
enum class MeanKind { kImage, kChannel };
enum class LrSchedule { kPlateau, kStep, kConstant };
enum class BackendKind { kAuto, kCpu, kCuda };
enum class InitKind { kPaper, kScaled };
enum class Precision { kFloat32, kTf32, kBf16 };

template <class E> struct EnumNames;
template <> struct EnumNames<Activation> {
  static constexpr const char* kNames[] = {"relu", "tanh"};
};
template <> struct EnumNames<NormKind> {
  static constexpr const char* kNames[] = {"lrn", "lrn2d", "batchnorm", "none"};
};
template <> struct EnumNames<MeanKind> {
  static constexpr const char* kNames[] = {"image", "channel"};
};
template <> struct EnumNames<LrSchedule> {
  static constexpr const char* kNames[] = {"plateau", "step", "constant"};
};
template <> struct EnumNames<InitKind> {
  static constexpr const char* kNames[] = {"paper", "scaled"};
};
template <> struct EnumNames<BackendKind> {
  static constexpr const char* kNames[] = {"auto", "cpu", "cuda"};
};
template <> struct EnumNames<Precision> {
  static constexpr const char* kNames[] = {"float32", "tf32", "bf16"};
};

template <class E>
const char* enum_name(E e) {
  return EnumNames<E>::kNames[static_cast<int>(e)];
}

// Local response normalisation (paper §3.3): b = a / (k + alpha * sum a^2)^beta over n neighbours.
struct LrnConfig {
  double k = 2.0;
  int n = 5;
  double alpha = 1e-4;
  double beta = 0.75;
  template <class V> void visit(V& v) {
    v("k", k, "additive constant k");
    v("n", n, "window size: channels (across-channel LRN) or n x n pixels (2D LRN); even n sums n+1");
    v("alpha", alpha, "scale of the sum of squares; NOT divided by n (the paper's formula)");
    v("beta", beta, "exponent");
  }
};

struct PoolConfig {
  int size = 3;
  int stride = 2;
  template <class V> void visit(V& v) {
    v("size", size, "max-pooling window (3 with stride 2 overlaps, paper §3.4; 2 is the ablation)");
    v("stride", stride, "max-pooling stride");
  }
};

// The fixed `model:` section (shared/ARCHITECTURE.md).
struct ModelConfig {
  int num_classes = 1000;
  int input_size = 227;
  Activation activation = Activation::kRelu;
  NormKind norm = NormKind::kLrn;
  LrnConfig lrn;
  PoolConfig pool;
  double dropout = 0.5;
  template <class V> void visit(V& v) {
    v("num_classes", num_classes, "number of classes (fc8 outputs)");
    v("input_size", input_size, "side of the square network input (227 gives 55x55 after conv1)");
    v("activation", activation, "nonlinearity after every conv and hidden FC layer");
    v("norm", norm, "what stands after the ReLU of conv1 and conv2: across-channel LRN, 2D LRN, batch norm, nothing");
    v("lrn", lrn, "LRN hyper-parameters (paper values)");
    v("pool", pool, "max pooling after conv1, conv2, conv5");
    v("dropout", dropout, "dropout probability after fc6 and fc7 (0 disables)");
  }
};

struct DataConfig {
  std::string root = "";
  std::string prepared = "";
  std::string val_ground_truth = "";
  std::string val_synsets = "";
  MeanKind mean = MeanKind::kImage;
  double lighting_std = 0.1;
  int threads = 0;
  int prefetch = 4;
  bool strict = false;
  int eval_batch = 0;
  bool ten_crop = false;
  double timeout_s = 900;
  template <class V> void visit(V& v) {
    v("root", root, "folder holding an ImageNet-layout dataset (train/<wnid>/*.JPEG, val/)");
    v("prepared", prepared, "output folder of `alexnet-tool prepare` (index, mean, PCA, shards); empty: <root>/.prepared");
    v("val_ground_truth", val_ground_truth, "ground truth of a flat val/ folder, a line per file in name order: a wnid, or a devkit class id (needs val_synsets); empty: val/<wnid>/ folders");
    v("val_synsets", val_synsets, "one wnid per line in the devkit's class-id order (line k = ILSVRC2012_ID k; made from meta.mat, docs/data.md); needed for a ground truth of ids");
    v("mean", mean, "mean subtraction: the per-pixel mean image, or one mean per channel");
    v("lighting_std", lighting_std, "sigma of the PCA lighting coefficients (paper §4.1: 0.1; 0 disables)");
    v("threads", threads, "decode/augment threads per data-service process (0: all cores of the node share)");
    v("prefetch", prefetch, "batches prepared ahead per worker (bounds memory)");
    v("strict", strict, "a bad image file is fatal instead of skipped and counted");
    v("eval_batch", eval_batch, "validation images per worker rank per evaluation batch (0: train.batch_size / workers)");
    v("ten_crop", ten_crop, "evaluate the paper's ten views (corners, centre, mirrors; §4.1) instead of the centre crop");
    v("timeout_s", timeout_s, "seconds a worker waits for its data service, and a service for a silent worker, before failing (0: forever)");
  }
};

struct TrainConfig {
  uint64_t seed = 1;
  InitKind init = InitKind::kPaper;
  int batch_size = 128;
  int epochs = 90;
  int64_t max_steps = 0;
  double lr = 0.01;
  double momentum = 0.9;
  double weight_decay = 0.0005;
  LrSchedule lr_schedule = LrSchedule::kPlateau;
  double lr_decay = 0.1;
  std::vector<int> lr_steps;
  int plateau_patience = 1;
  double plateau_min_delta = 0.0;
  int max_lr_drops = 3;
  int linear_scaling_reference = 0;
  double warmup_epochs = 0;
  int64_t eval_every_steps = 0;
  template <class V> void visit(V& v) {
    v("seed", seed, "seed of every random draw (init, shuffling, augmentation, dropout)");
    v("init", init, "paper: weights ~ N(0, 0.01^2), biases 1 in conv2/4/5 and fc6/7 (§5); scaled: He et al. 2015 variances, biases 0 (starts learning far sooner)");
    v("batch_size", batch_size, "global batch size, split evenly among worker ranks (paper: 128)");
    v("epochs", epochs, "training epochs");
    v("max_steps", max_steps, "stop after this many steps (0: no limit)");
    v("lr", lr, "learning rate (paper: 0.01)");
    v("momentum", momentum, "momentum of the paper's SGD rule");
    v("weight_decay", weight_decay, "weight decay of conv and FC weights (not biases, not batch norm)");
    v("lr_schedule", lr_schedule, "plateau: divide by 10 when validation error stops improving (paper); step; constant");
    v("lr_decay", lr_decay, "factor applied at each drop of the plateau and step schedules (paper: 0.1)");
    v("lr_steps", lr_steps, "step schedule: the epochs at whose start the learning rate is multiplied by lr_decay");
    v("plateau_patience", plateau_patience, "plateau schedule: evaluations without improvement of the top-1 error before a drop");
    v("plateau_min_delta", plateau_min_delta, "plateau schedule: smallest decrease of the top-1 error (a fraction) that counts as improvement");
    v("max_lr_drops", max_lr_drops, "plateau schedule: at most this many drops (paper: three before termination)");
    v("linear_scaling_reference", linear_scaling_reference, "linear scaling rule (Goyal et al. 2017): train.lr is meant for this global batch and is scaled by batch_size / reference (0: no scaling)");
    v("warmup_epochs", warmup_epochs, "gradual warm-up (Goyal et al. 2017): the rate rises linearly per step from train.lr to the scaled rate over these epochs");
    v("eval_every_steps", eval_every_steps, "also evaluate every this many steps (0: at the end of each epoch and of the run only)");
  }
};

struct ParallelConfig {
  BackendKind backend = BackendKind::kAuto;
  int devices_per_rank = 2;
  int threads = 0;
  Precision precision = Precision::kFloat32;
  bool deterministic = true;
  bool cuda_graphs = false;
  double bucket_mb = 25;
  bool overlap = true;
  double comm_timeout_s = 1800;
  template <class V> void visit(V& v) {
    v("backend", backend, "auto: CUDA when a GPU is present, else the CPU");
    v("devices_per_rank", devices_per_rank, "GPUs per worker rank: 2 puts one tower on each (the paper), 1 both on one");
    v("threads", threads, "CPU backend threads per worker rank (0: cores divided among the node's ranks)");
    v("precision", precision, "GPU arithmetic: float32 (TF32 off), tf32, bf16 (float32 master weights)");
    v("deterministic", deterministic, "GPU convolutions: the fastest algorithm whose results repeat bit for bit (false: the fastest of all, as PyTorch's cudnn.benchmark picks)");
    v("cuda_graphs", cuda_graphs, "GPU training passes: capture forward, loss and backward once as a CUDA graph and replay it every step (one launch instead of a few hundred; the same bits); a pass CUDA refuses to capture runs stream by stream, and the log says why");
    v("bucket_mb", bucket_mb, "gradient allreduce bucket size in MiB, backward order (0: one bucket for all)");
    v("overlap", overlap, "start each bucket's allreduce during backward, as soon as its gradients are final (false: every bucket after backward, the same bits)");
    v("comm_timeout_s", comm_timeout_s, "seconds a worker rank waits in a collective (gradient allreduce, metrics, barrier; MPI or NCCL) for the other workers before failing, which ends the job: a peer alive but stuck would hang it; keep it above data.timeout_s, so a worker held up by its data service says so itself (0: forever)");
  }
};

// Where the run's checkpoints go (rank 0 writes them; alexnet-launch checks the folder is writable).
struct CheckpointConfig {
  std::string dir = "";
  int64_t every_steps = 0;
  double every_minutes = 0;
  int keep = 3;
  template <class V> void visit(V& v) {
    v("dir", dir, "folder of the run's checkpoints, created when missing (empty: <run.dir>/checkpoints); relative paths start at the launch directory");
    v("every_steps", every_steps, "write a checkpoint every this many steps (0: off); one is always written at the end");
    v("every_minutes", every_minutes, "write a checkpoint when this many minutes have passed since the last one (0: off)");
    v("keep", keep, "checkpoints kept (the newest; at least 2, so a damaged newest one has a fallback)");
  }
};

// The run directory: resolved config, log, metrics.jsonl, checkpoints.
struct RunConfig {
  std::string dir = "runs/alexnet";
  template <class V> void visit(V& v) {
    v("dir", dir, "run directory (config.yaml, worker.log, metrics.jsonl, checkpoints/); relative paths start at the launch directory");
  }
};

struct LogConfig {
  std::string level = "info";
  int64_t every_steps = 10;
  template <class V> void visit(V& v) {
    v("level", level, "debug | info | warning | error");
    v("every_steps", every_steps, "rank 0 prints a progress line and appends a metrics.jsonl record every this many steps");
  }
};

struct Config {
  ModelConfig model;
  DataConfig data;
  TrainConfig train;
  ParallelConfig parallel;
  CheckpointConfig checkpoint;
  RunConfig run;
  LogConfig log;
  template <class V> void visit(V& v) {
    v("model", model, "the network (fixed keys, shared with every tool)");
    v("data", data, "dataset and augmentation");
    v("train", train, "optimisation");
    v("parallel", parallel, "devices, ranks and threads");
    v("checkpoint", checkpoint, "checkpoints");
    v("run", run, "the run directory");
    v("log", log, "logging");
  }
};

// Where a value came from, for error messages: "configs/demo.yaml line 7" or "--set model.norm=x".
using ConfigSources = std::map<std::string, std::string>;

// Loads YAML text (the whole document) into a Config over the defaults, applies `--set` overrides
// ("dotted.key=value", value parsed as YAML), then validates. `source_name` names the text in errors.
Config load_config_text(const std::string& text, const std::string& source_name,
                        const std::vector<std::string>& overrides = {});
Config load_config_file(const std::string& path, const std::vector<std::string>& overrides = {});
// Defaults plus overrides (no file).
Config default_config(const std::vector<std::string>& overrides = {});

// The complete resolved config as YAML text (every key, defaults included); loads back identically.
std::string config_to_yaml(const Config& config);
// Markdown reference of every key with its default and meaning (docs/config.md).
std::string config_reference_markdown();

// Every key as "dotted.key" -> its value as the resolved YAML writes it ("model.norm" -> "lrn").
std::map<std::string, std::string> flatten_config(const Config& config);

// checkpoint.dir, or <run.dir>/checkpoints when it is empty.
std::string checkpoint_dir(const Config& config);

// Range and consistency checks; errors name the key (and where it came from, when known).
void validate_config(const Config& config, const ConfigSources& sources = {});

}  // namespace alexnet
