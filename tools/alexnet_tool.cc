// alexnet-tool: one executable for the offline commands. This file holds the model commands (init,
// inspect, grad, step, random-batch, norm-examples, config-reference) and main(); tools/cmd_*.cc add
// more. `grad` and `step` are the fixed reference I/O of shared/ARCHITECTURE.md.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>
#include <string>

#include "checkpoint/checkpoint.h"
#include "checkpoint/h5file.h"
#include "comm/placement.h"
#include "core/cli.h"
#include "core/config.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/threads.h"
#include "core/device.h"
#include "model/alexnet.h"
#include "model/norm_examples.h"
#if ALEXNET_WITH_CUDA
#include "model/cuda/layers_cuda.h"
#endif
#include "tools/tool_command.h"

namespace alexnet {

std::vector<ToolCommandInfo>& tool_commands() {
  static std::vector<ToolCommandInfo> table;
  return table;
}

namespace {

constexpr const char* kProgram = "alexnet-tool";

// Options every model command shares: threads and the backend.
void model_options(ArgParser& args) {
  args.option("--threads", "CPU threads (default: parallel.threads of the config; 0 = all cores)");
  args.option("--device", "cpu (default) or cuda");
  args.option("--set", "dotted.key=value applied to the checkpoint's config (e.g. train.weight_decay=0)", true);
}

// Where the model's towers run for --device: both on the CPU, or on CUDA GPUs 0 and 1 (the config's
// parallel.devices_per_rank 2 with two GPUs visible) or both on GPU 0, with parallel.precision.
std::array<Device, kTowers> apply_model_options(const ArgParser& args, const Config& cfg) {
  const std::string device = args.get_or("--device", "cpu");
  ALEXNET_CHECK(device == "cpu" || device == "cuda", kProgram, ": --device must be cpu or cuda, got '",
                device, "'");
  set_cpu_threads(static_cast<int>(args.get_int_or("--threads", cfg.parallel.threads)));
  if (device == "cpu") return {Device::cpu(), Device::cpu()};
#if ALEXNET_WITH_CUDA
  const int gpus = cuda_device_count();
  ALEXNET_CHECK(gpus > 0, kProgram, ": --device cuda, but this process sees no CUDA device (", device_summary(), ")");
  set_cuda_precision(cfg.parallel.precision);
  set_cuda_deterministic(cfg.parallel.deterministic);
  // One process on this node: the worker's placement, on one GPU when only one is visible.
  const std::array<int, 2> gpu = tower_gpus(0, 1, std::min(cfg.parallel.devices_per_rank, gpus), gpus);
  std::cerr << kProgram << ": towers on cuda:" << gpu[0] << " and cuda:" << gpu[1] << ", precision "
            << enum_name(cfg.parallel.precision) << "\n";
  return {Device::cuda(gpu[0]), Device::cuda(gpu[1])};
#else
  ALEXNET_FAIL(kProgram, ": --device cuda: this build has no CUDA backend (the CUDA toolkit, cuDNN or NCCL was not "
               "found when it was configured)");
#endif
}

// The config stored in a checkpoint (a /config with only a model: section is valid).
Config checkpoint_config(const CheckpointData& ck, const std::string& path,
                         const std::vector<std::string>& overrides = {}) {
  return load_config_text(ck.config_yaml, path + ":/config", overrides);
}

struct Batch {
  Tensor images;  // [N, 3, S, S] float32
  Tensor labels;  // [N] int64
};

Batch read_batch(const std::string& path) {
  H5File f(path, H5File::Mode::kRead);
  for (const char* name : {"/images", "/labels"})
    ALEXNET_CHECK(f.exists(name), path, ": no dataset ", name,
                  " (a batch file holds /images float32 [N,3,S,S] and /labels int64 [N])");
  Batch b;
  b.images = f.read_tensor_as("/images", DType::kF32);
  b.labels = f.read_tensor_as("/labels", DType::kI64);
  return b;
}

double tensor_norm(const Tensor& t) {
  const float* p = t.data<float>();
  double s = 0;
  for (int64_t i = 0; i < t.numel(); ++i) s += static_cast<double>(p[i]) * p[i];
  return std::sqrt(s);
}

// ---- commands ----

int cmd_init(int argc, char** argv) {
  ArgParser args(str_cat(kProgram, " init"),
                 "--config C.yaml --out W.h5 [--seed S]: a weights-only checkpoint with the paper's init");
  args.config_options();
  args.option("--out", "output checkpoint (HDF5)");
  args.option("--seed", "init seed (default: train.seed)");
  if (!args.parse(argc, argv, 2)) return 0;
  Config cfg = args.load_config();
  const std::string out = args.get("--out");
  set_cpu_threads(cfg.parallel.threads);
  AlexNet net(cfg.model);
  const auto seed = static_cast<uint64_t>(args.get_int_or("--seed", static_cast<int64_t>(cfg.train.seed)));
  if (cfg.train.init == InitKind::kScaled) net.init_scaled(seed);
  else net.init_paper(seed);
  CheckpointData ck;
  ck.config_yaml = config_to_yaml(cfg);
  ck.model = net.state();
  write_checkpoint(out, ck);
  std::cout << "wrote " << out << ": " << ck.model.size() << " tensors, "
            << alexnet_parameter_count(cfg.model) << " parameters\n";
  return 0;
}

int cmd_inspect(int argc, char** argv) {
  ArgParser args(str_cat(kProgram, " inspect"), "W.h5: what a checkpoint holds");
  if (!args.parse(argc, argv, 2)) return 0;
  ALEXNET_CHECK(args.positionals().size() == 1, kProgram, " inspect: give exactly one checkpoint path");
  const std::string path = args.positionals()[0];
  CheckpointData ck = read_checkpoint(path);
  Config cfg = checkpoint_config(ck, path);
  const ModelConfig& m = cfg.model;
  std::cout << path << ": " << kCheckpointFormat << " v" << kCheckpointFormatVersion << ", step "
            << ck.step << ", epoch " << ck.epoch << "\n"
            << "model: " << m.num_classes << " classes, input " << m.input_size << ", "
            << enum_name(m.activation) << ", norm " << enum_name(m.norm) << " (k " << m.lrn.k << ", n "
            << m.lrn.n << ", alpha " << m.lrn.alpha << ", beta " << m.lrn.beta << "), pool "
            << m.pool.size << "/" << m.pool.stride << ", dropout " << m.dropout << "\n";
  int64_t params = 0;
  std::cout << std::left << std::setw(26) << "tensor" << std::setw(22) << "shape" << "L2 norm"
            << (ck.momentum.empty() ? "" : "        momentum L2") << "\n";
  for (const ParamInfo& p : alexnet_param_table(m)) {
    auto it = ck.model.find(p.name);
    if (it == ck.model.end()) {
      std::cout << std::setw(26) << p.name << "MISSING (the config's model needs it)\n";
      continue;
    }
    if (p.trainable) params += it->second.numel();
    std::ostringstream norm;
    norm << std::setprecision(6) << tensor_norm(it->second);
    std::cout << std::setw(26) << p.name << std::setw(22) << shape_str(it->second.shape())
              << std::setw(14) << norm.str();
    auto mv = ck.momentum.find(p.name);
    if (mv != ck.momentum.end()) std::cout << std::setprecision(6) << tensor_norm(mv->second);
    std::cout << "\n";
  }
  std::cout << "trainable parameters: " << params << " (the config's network has "
            << alexnet_parameter_count(m) << ")\n"
            << "momentum: " << (ck.momentum.empty() ? "none (weights-only)" : "present") << "\n";
  return 0;
}

// Loads the network a checkpoint describes, with its weights (and momentum when asked).
struct Loaded {
  Config cfg;
  CheckpointData ck;
  std::array<Device, kTowers> devices{Device::cpu(), Device::cpu()};
};

Loaded load_for_model(const ArgParser& args) {
  Loaded l;
  const std::string path = args.get("--checkpoint");
  l.ck = read_checkpoint(path);
  l.cfg = checkpoint_config(l.ck, path, args.get_all("--set"));
  l.devices = apply_model_options(args, l.cfg);
  return l;
}

int cmd_grad(int argc, char** argv) {
  ArgParser args(str_cat(kProgram, " grad"),
                 "--checkpoint W.h5 --batch B.h5 --out O.h5: logits, loss and gradients of one batch");
  args.option("--checkpoint", "weights (the model comes from its /config)");
  args.option("--batch", "HDF5 with /images float32 [N,3,S,S] and /labels int64 [N]");
  args.option("--out", "output HDF5: /logits, /loss, /grad/<layer>/<param>");
  model_options(args);
  if (!args.parse(argc, argv, 2)) return 0;
  Loaded l = load_for_model(args);
  Batch b = read_batch(args.get("--batch"));
  AlexNet net(l.cfg.model, l.devices);
  net.load_state(l.ck.model, args.get("--checkpoint"));
  Tensor logits;
  PassOptions opt;
  opt.dropout = false;
  const double loss = net.train_pass(b.images, b.labels, opt, &logits);
  const std::string out = args.get("--out");
  write_hdf5_atomically(out, "gradient file", [&](H5File& f) {
    f.write_tensor("/logits", logits);
    f.write_scalar("/loss", loss);
    for (const auto& [name, g] : net.gradients()) f.write_tensor("/grad/" + name, g);
  });
  std::cout << "loss " << std::setprecision(9) << loss << " over " << b.images.dim(0)
            << " images; wrote " << out << "\n";
  return 0;
}

int cmd_step(int argc, char** argv) {
  ArgParser args(str_cat(kProgram, " step"),
                 "--checkpoint W.h5 --batch B.h5 --lr LR --out W2.h5: one step of the paper's SGD");
  args.option("--checkpoint", "weights and (optional) /optimizer/momentum");
  args.option("--batch", "HDF5 with /images float32 [N,3,S,S] and /labels int64 [N]");
  args.option("--lr", "learning rate");
  args.option("--out", "output checkpoint");
  model_options(args);
  if (!args.parse(argc, argv, 2)) return 0;
  Loaded l = load_for_model(args);
  const double lr = args.get_double("--lr");
  ALEXNET_CHECK(std::isfinite(lr) && lr >= 0, kProgram, " step: --lr must be a finite number >= 0, got ", lr);
  Batch b = read_batch(args.get("--batch"));
  AlexNet net(l.cfg.model, l.devices);
  const std::string path = args.get("--checkpoint");
  net.load_state(l.ck.model, path);
  net.load_momentum(l.ck.momentum, path);
  PassOptions opt;
  opt.dropout = false;
  const double loss = net.train_pass(b.images, b.labels, opt);
  net.sgd_step(lr, l.cfg.train.momentum, l.cfg.train.weight_decay);
  CheckpointData out;
  out.config_yaml = config_to_yaml(l.cfg);
  out.model = net.state();
  out.momentum = net.momentum();
  out.step = l.ck.step + 1;
  out.epoch = l.ck.epoch;
  write_checkpoint(args.get("--out"), out);
  std::cout << "loss " << std::setprecision(9) << loss << " before the step; wrote " << args.get("--out")
            << " (step " << out.step << ")\n";
  return 0;
}

int cmd_random_batch(int argc, char** argv) {
  ArgParser args(str_cat(kProgram, " random-batch"),
                 "--out B.h5 [--size N] [--seed S]: a batch of N(0,1) images and uniform labels for grad/step");
  args.config_options();
  args.option("--out", "output HDF5 (/images, /labels)");
  args.option("--size", "images in the batch (default 8)");
  args.option("--seed", "seed (default: train.seed)");
  if (!args.parse(argc, argv, 2)) return 0;
  Config cfg = args.load_config();
  const int64_t n = args.get_int_or("--size", 8);
  ALEXNET_CHECK(n >= 1, kProgram, " random-batch: --size must be >= 1, got ", n);
  const int64_t s = cfg.model.input_size;
  const uint64_t seed = static_cast<uint64_t>(args.get_int_or("--seed", static_cast<int64_t>(cfg.train.seed)));
  Tensor images = Tensor::empty({n, 3, s, s});
  std::vector<int64_t> labels(n);
  const CounterRng pixels(make_key(seed, RngPurpose::kSynth, 0), 0);
  const CounterRng classes(make_key(seed, RngPurpose::kSynth, 1), 0);
  float* p = images.data<float>();
  for (int64_t i = 0; i < images.numel(); ++i) p[i] = static_cast<float>(pixels.normal(i));
  for (int64_t i = 0; i < n; ++i) labels[i] = classes.bits(i) % cfg.model.num_classes;
  write_hdf5_atomically(args.get("--out"), "batch file", [&](H5File& f) {
    f.write_tensor("/images", images);
    f.write_tensor("/labels", Tensor::from_vector<int64_t>({n}, labels));
  });
  std::cout << "wrote " << args.get("--out") << ": " << n << " images of 3x" << s << "x" << s << "\n";
  return 0;
}

int cmd_norm_examples(int argc, char** argv) {
  ArgParser args(str_cat(kProgram, " norm-examples"),
                 ": LRN (across and within channels) and batch norm on the two worked examples");
  if (!args.parse(argc, argv, 2)) return 0;
  print_norm_examples(std::cout);
  return 0;
}

int cmd_config_reference(int argc, char** argv) {
  ArgParser args(str_cat(kProgram, " config-reference"),
                 ": every config key with its default, as Markdown (docs/config.md)");
  args.config_options();
  args.flag("--resolved", "print the resolved config (YAML) instead of the reference");
  if (!args.parse(argc, argv, 2)) return 0;
  if (args.has("--resolved")) std::cout << config_to_yaml(args.load_config());
  else std::cout << config_reference_markdown();
  return 0;
}

const ToolCommand kBuiltins[] = {
    {"init", "write a weights-only checkpoint with the paper's initialisation", cmd_init},
    {"inspect", "show what a checkpoint holds (config, shapes, parameter count, norms)", cmd_inspect},
    {"grad", "logits, loss and every gradient of one batch (reference I/O)", cmd_grad},
    {"step", "one step of the paper's SGD rule (reference I/O)", cmd_step},
    {"random-batch", "write a random batch file (/images, /labels) for grad and step", cmd_random_batch},
    {"norm-examples", "print LRN and batch norm on the two worked examples", cmd_norm_examples},
    {"config-reference", "print every config key with its default (Markdown)", cmd_config_reference},
};

void usage(std::ostream& os) {
  os << "usage: " << kProgram << " COMMAND [options]   (" << kProgram << " COMMAND --help)\n";
  for (const ToolCommandInfo& c : tool_commands())
    os << "  " << std::left << std::setw(18) << c.name << c.summary << "\n";
}

}  // namespace
}  // namespace alexnet

int main(int argc, char** argv) {
  using namespace alexnet;
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    usage(argc < 2 ? std::cerr : std::cout);
    return argc < 2 ? 2 : 0;
  }
  const std::string name = argv[1];
  for (const ToolCommandInfo& c : tool_commands()) {
    if (name != c.name) continue;
    try {
      return c.run(argc, argv);
    } catch (const std::exception& e) {
      std::cerr << kProgram << " " << name << ": error: " << e.what() << "\n";
      return 1;
    }
  }
  std::cerr << kProgram << ": unknown command '" << name << "'\n";
  usage(std::cerr);
  return 2;
}
