// The paper's two-tower AlexNet (Krizhevsky, Sutskever, Hinton 2012, §3.5 and Figure 2): each tower
// owns half the kernels of every layer and sits on its own device; the towers exchange activations
// at conv3 and at fc6-fc8. Parameters live per tower; the checkpoint sees them tower-merged.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/config.h"
#include "core/tensor.h"
#include "model/graph_schedule.h"
#include "model/ops.h"

struct CUstream_st;

namespace alexnet {

constexpr int kTowers = 2;

// The stream a CUDA tower's work goes to (none for a CPU tower); destroyed, after its work, with the
// tower. Move-only.
class TowerStream {
 public:
  TowerStream() = default;
  explicit TowerStream(Device device);
  ~TowerStream();
  TowerStream(TowerStream&& other) noexcept;
  TowerStream& operator=(TowerStream&& other) noexcept;
  TowerStream(const TowerStream&) = delete;
  TowerStream& operator=(const TowerStream&) = delete;
  CUstream_st* get() const { return stream_; }

 private:
  Device device_ = Device::cpu();
  CUstream_st* stream_ = nullptr;
};

// One tensor of the network in the checkpoint's merged layout (shared/ARCHITECTURE.md, layout v1).
// Tower 0 owns rows [0, split) of dimension 0, tower 1 rows [split, merged[0]).
struct ParamInfo {
  std::string name;      // "conv1/weight", "norm1/running_mean"
  Shape merged;          // [96, 3, 11, 11]
  int64_t split = 0;     // rows of dimension 0 that tower 0 owns
  bool trainable = true; // false: a batch-norm running statistic (no gradient, no momentum)
  bool decay = false;    // weight decay applies (conv and FC weights only)

  Shape tower_shape(int tower) const;
  int64_t tower_rows_begin(int tower) const { return tower == 0 ? 0 : split; }
};

// Spatial sizes through the network for a config; errors name model.input_size or model.pool
// when the input is too small for the layer stack.
struct NetShapes {
  int64_t conv1 = 0;  // side after conv1 (55 for 227)
  int64_t pool1 = 0;  // 27
  int64_t pool2 = 0;  // 13 (conv2..conv5 keep the side)
  int64_t pool5 = 0;  // 6
  int64_t fc6_in = 0; // 256 * pool5^2 = 9216
};
NetShapes alexnet_shapes(const ModelConfig& cfg);

// Every tensor of the network for `cfg`: trainable parameters in the order the backward pass
// finishes their gradients (fc8 first: the order a bucketed allreduce wants), then the buffers.
std::vector<ParamInfo> alexnet_param_table(const ModelConfig& cfg);
// Number of trainable scalars (60,965,224 for 1000 classes with LRN).
int64_t alexnet_parameter_count(const ModelConfig& cfg);

// How one training pass draws its dropout masks (ignored when dropout is off).
struct PassOptions {
  bool dropout = true;                  // false: dropout disabled (reference I/O, evaluation)
  uint64_t seed = 1;                    // train.seed
  uint64_t step = 0;                    // global step: part of the dropout key
  const int64_t* sample_ids = nullptr;  // global sample index of each row; nullptr: 0..N-1
  // Called during backward as soon as tower `tower`'s gradient of table entry `index` is final (fc8
  // first), so its allreduce can start while backward goes on. Every trainable entry of both towers
  // is reported exactly once per pass.
  std::function<void(int tower, size_t index)> on_grad_ready;
};

// A batch as the data service sends it, for CUDA towers that make the network input on their own GPUs
// (the input step, normalize_crops_cuda): the host copies uint8 pixels, a quarter of the float bytes, and
// does no arithmetic. The mean comes from AlexNet::set_input_mean.
struct CropBatch {
  Tensor crops;      // uint8 [N, 3, S, S] on the host (S = model.input_size)
  Tensor placement;  // int32 [N, 3]: crop_x, crop_y (in the mean image), flip (0/1)
  Tensor lighting;   // float32 [N, 3]: the RGB offset added to every pixel
};

class AlexNet {
 public:
  // devices[t] is where tower t's parameters and activations live (the CPU backend: both host).
  explicit AlexNet(const ModelConfig& cfg,
                   std::array<Device, kTowers> devices = {Device::cpu(), Device::cpu()});

  const ModelConfig& config() const { return cfg_; }
  const NetShapes& shapes() const { return shapes_; }
  const std::vector<ParamInfo>& table() const { return table_; }
  Device device(int tower) const { return devices_[tower]; }
  // Tower t's CUDA stream (nullptr on the CPU): every op of the tower is queued on it, so a consumer of
  // its results on another stream (the NCCL reduction of its gradients) waits for it.
  CUstream_st* stream(int tower) const { return towers_[tower].stream.get(); }

  // The paper's initialisation (§5): weights ~ N(0, 0.01^2), biases 1 in conv2, conv4, conv5, fc6,
  // fc7 and 0 elsewhere; batch-norm scale 1, shift 0, running mean 0, variance 1. Each element's
  // draw is keyed by (seed, layer, merged index), so it does not depend on tower placement.
  void init_paper(uint64_t seed);
  // He et al. (2015) scaling instead of the paper's fixed 0.01: weights ~ N(0, 2 / fan_in) (fan_in: the
  // inputs one output sees, per group; fc8: 1 / fan_in), conv1's divided further by `input_std` (the
  // spread of the mean-subtracted 0..255 pixels), every bias 0. Same keyed draws as init_paper.
  // Trains from scratch much sooner than the paper's initialisation (train.init: scaled).
  void init_scaled(uint64_t seed, double input_std = 64.0);

  // Parameters and buffers as CPU float32 tensors in the merged layout, keyed "conv1/weight".
  std::map<std::string, Tensor> state() const;
  // Loads a state: exactly the table's names with the table's shapes, else an error naming the
  // first missing, unexpected or misshapen entry and `source` (e.g. the checkpoint path).
  void load_state(const std::map<std::string, Tensor>& state, const std::string& source);
  // Gradients of the last backward pass (trainable tensors only), merged layout.
  std::map<std::string, Tensor> gradients() const;
  // SGD velocity (trainable tensors only), merged layout; load accepts an empty map (zero).
  std::map<std::string, Tensor> momentum() const;
  void load_momentum(const std::map<std::string, Tensor>& momentum, const std::string& source);

  // Training pass: forward (batch-norm with batch statistics, which also updates the running
  // ones; dropout per `opt`), mean softmax cross-entropy, backward. Gradients are overwritten.
  // images: [N, 3, S, S] float32 on the host, or on a GPU when both towers are CUDA towers (copied to each
  // tower's device; on tower 0's own GPU, 256-byte aligned, read in place: the GPU reads it until the
  // pass's work there is done, so write it again only on the default stream, which waits for that, or
  // after a synchronisation); labels: int64 [N] in [0, num_classes).
  // Returns the mean loss; `logits` (optional) receives [N, num_classes] float32 on the host. With both towers
  // on GPUs the loss is computed on tower 0's and the host waits once, after the whole pass has been queued.
  double train_pass(const Tensor& images, const Tensor& labels, const PassOptions& opt,
                    Tensor* logits = nullptr);
  // Inference: running batch-norm statistics, no dropout. Returns logits [N, num_classes] on the host.
  Tensor infer(const Tensor& images);

  // The same passes from uint8 crops, normalised on tower 0's GPU exactly as normalize_crop does on
  // the CPU (tower 1 copies that input). Both towers must be on CUDA devices and set_input_mean must have been called; a crop that
  // does not fit the mean image is an error naming the row.
  double train_pass(const CropBatch& batch, const Tensor& labels, const PassOptions& opt, Tensor* logits = nullptr);
  Tensor infer(const CropBatch& batch);
  // What the input step subtracts: float32 [3, side, side] (the mean image) or [3] (channel means) on the
  // host, copied to each tower's device.
  void set_input_mean(const Tensor& mean);

  // The paper's rule on every trainable tensor: v <- momentum v - decay lr w - lr g; w <- w + v,
  // with decay = weight_decay for conv/FC weights and 0 for biases and batch-norm parameters.
  void sgd_step(double lr, double momentum, double weight_decay);

  // CUDA graphs (parallel.cuda_graphs). With both towers on CUDA devices, a training pass like the one before
  // it (the same batch size, input kind and dropout, and no buffer or workspace replaced since) is captured
  // once, forward, loss and backward with the towers' crossings, and every later one like it replays that
  // graph: one launch instead of a few hundred. The uploads (input, labels, dropout counters) and the
  // reads of the loss and logits stay outside, so results are bit for bit those of the passes issued
  // stream by stream. on_grad_ready is called after each launch, in backward's order, with the event in
  // the graph where that gradient is final (CudaReadyEventScope, core/device.h). A capture that CUDA
  // refuses leaves the model stream by stream for good, and graph_status().refused says why. No effect on
  // CPU towers.
  void set_cuda_graphs(bool on);
  struct GraphStatus {
    bool enabled = false;
    int64_t captures = 0;  // graphs captured (again after a change of batch size, input or buffers)
    int64_t replays = 0;   // passes run as a graph launch, the capturing ones included
    size_t nodes = 0;      // nodes of the last graph
    std::string refused;   // why capture was given up (empty: it was not)
  };
  GraphStatus graph_status() const;

  // An activation of tower t from the last pass, on its device: "a1".."a5" (after the activation
  // function), "n1", "n2" (after the norm layer; absent for norm: none), "p1", "p2", "p5" (after
  // pooling), "h_fc6", "h_fc7" (after the activation), "logits" (tower t's share of the classes).
  Tensor activation(int tower, const std::string& name) const;

  // Tower t's gradients as one flat float32 tensor on its device (the allreduce buffer), laid out
  // in table order; views of it back every per-tensor gradient. Each trainable tensor takes
  // arena_slot(numel) floats of it (and of the parameter and velocity arenas), its elements first.
  Tensor grad_arena(int tower) const { return towers_[tower].grads; }
  // A tensor's element count rounded up to 64 floats (256 bytes): every tensor of an arena then starts
  // aligned for vectorised and tensor-core kernels whatever the class count (10 classes give fc8 a
  // 5-float bias per tower, which left every later tensor 4 bytes off a 16-byte boundary). The padding
  // is never written, stays zero, and is reduced along with the tensor before it.
  static constexpr int64_t kArenaAlign = 64;
  static int64_t arena_slot(int64_t numel) { return (numel + kArenaAlign - 1) / kArenaAlign * kArenaAlign; }
  // Tower t's share of table entry `index` on its device (a view: writing it changes the model).
  Tensor tower_tensor(int tower, size_t index) const { return towers_[tower].p[index]; }

 private:
  struct Tower {
    Tensor params, grads, velocity;  // flat arenas of the trainable tensors, table order
    std::vector<Tensor> p, g, v;     // per table entry (buffers: p only, g/v undefined)
    std::map<std::string, Tensor> ws;  // activations and scratch, reused across passes
    TowerStream stream;
    // CUDA towers: the pass's host <-> device copies (input, labels, sample ids, loss rows, logits).
    std::unique_ptr<ops::PinnedTransfers> transfers;
    // ws["x"] is the caller's batch, already on this tower's GPU and used in place: it must not be
    // taken as scratch (written into) by a later pass.
    bool input_is_callers = false;
    // The arena ranges [begin, end) of the weight-decayed tensors (conv and FC weights), for the
    // one-launch SGD step of a CUDA tower.
    std::vector<std::pair<int64_t, int64_t>> decay_ranges;
  };

  int index_of(const std::string& name) const;
  // Waits for all work on the towers' GPUs (their streams, the NCCL reductions of their gradients): what
  // state(), gradients() and momentum() read is then final, whatever stream wrote it.
  void settle(const char* what) const;
  void init_weights(uint64_t seed, bool scaled, double input_std);
  Tensor& scratch(int tower, const std::string& name, const Shape& shape, DType dtype = DType::kF32);
  void check_batch(const Tensor& images, const Tensor* labels) const;
  void check_crops(const CropBatch& batch, const Tensor* labels) const;
  // Runs the forward pass on `images` (float32, host) or `crops`; returns the logits [N, K] (a scratch tensor,
  // on tower 0's device when that is a GPU, else on the host).
  Tensor forward(const Tensor* images, const CropBatch* crops, bool training, const PassOptions& opt);
  // The two halves of forward: what the host hands to the towers (the input, its uploads, the dropout
  // counters), and the towers' work from there, which a CUDA graph can capture and replay.
  void stage_inputs(const Tensor* images, const CropBatch* crops, bool training, const PassOptions& opt);
  Tensor forward_compute(bool training, const PassOptions& opt);
  // What a captured graph of the pass just staged depends on (model/graph_schedule.h).
  PassKey pass_key(const PassOptions& opt) const;
  // Runs `compute` (the device work of a training pass) as a CUDA graph, capturing it first when due;
  // false when the pass is to run stream by stream (graphs off, refused, or a first pass of its kind).
  bool graphed_pass(const PassOptions& opt, const std::function<void()>& compute);
  void replay_graph();
  double train_from(const Tensor* images, const CropBatch* crops, const Tensor& labels, const PassOptions& opt,
                    Tensor* logits);
  void backward(const Tensor& dlogits);

  ModelConfig cfg_;
  NetShapes shapes_;
  std::vector<ParamInfo> table_;
  std::array<Device, kTowers> devices_;
  // Before towers_: destroyed after the tower streams that read it have been synchronised and destroyed.
  std::array<Tensor, kTowers> input_mean_;  // set_input_mean, on each tower's device
  std::array<Tower, kTowers> towers_;
  std::map<std::string, Tensor> shared_ws_;
  bool pass_dropout_ = false;  // whether the last forward pass applied dropout
  int64_t pass_n_ = 0;         // the last pass's batch size
  bool pass_crops_ = false;    // whether its input came as crops
  std::vector<int64_t> pass_ids_;  // its sample ids (dropout only)
  uint64_t ws_generation_ = 0;     // counts the device buffers (re)allocated by scratch() and set_input_mean
  // A gradient of the captured backward: tower, table index, and the graph's event where it is final.
  struct GraphPoint {
    int tower = 0;
    size_t index = 0;
    int mark = 0;
  };
  struct Graphs {
    int64_t captures = 0, replays = 0;  // GraphStatus's counts
    size_t nodes = 0;
    // The stream on tower 0's device that copies the loss and logits back after a launch.
    TowerStream readback;
    std::unique_ptr<ops::PassGraph> graph;  // destroyed before the tower streams (declared after towers_)
    int loss_mark = 0;  // the graph's mark where the loss and logits are final
    GraphSchedule schedule;
    bool capturing = false;
    std::vector<GraphPoint> points;
  } graphs_;
  std::function<void(int, size_t)> grad_ready_;  // the running pass's PassOptions::on_grad_ready
};

}  // namespace alexnet
