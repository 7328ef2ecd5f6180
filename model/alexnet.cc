// The two-tower AlexNet graph: parameter table, paper initialisation, forward, backward and the
// paper's SGD step. Tower-to-tower traffic happens only in the gather/scatter helpers below.
#include "model/alexnet.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/device.h"
#include "core/error.h"
#include "core/rng.h"
#include "model/layers.h"
#include "model/ops.h"

namespace alexnet {
namespace {

constexpr int kConv1 = 48, kConv2 = 128, kConv3 = 192, kConv4 = 192, kConv5 = 128;  // per tower
constexpr int kFc = 2048;                                                           // per tower
constexpr double kInitStd = 0.01;  // paper §5

// Columns [col0, col0 + src row length) of every row of dst ([N, *]) receive src ([N, *]); any devices.
// src_stream / dst_stream: the streams of the producing and consuming towers (ops::copy_columns).
void put_columns(const Tensor& src, ops::Stream src_stream, Tensor& dst, ops::Stream dst_stream, int64_t col0) {
  ops::copy_columns(src, 0, src_stream, dst, col0, dst_stream, src.numel() / src.dim(0), false, nullptr);
}

// dst ([N, w]) = (accumulate ? dst : 0) + columns [col0, col0 + w) of src ([N, *]); any devices.
// staging ([N, w] on dst's device) is needed to accumulate into a CUDA tensor.
void take_columns(const Tensor& src, ops::Stream src_stream, int64_t col0, Tensor& dst, ops::Stream dst_stream,
                  bool accumulate, Tensor* staging = nullptr) {
  ops::copy_columns(src, col0, src_stream, dst, 0, dst_stream, dst.numel() / dst.dim(0), accumulate, staging);
}

void check_labels(const Tensor& labels, int64_t n, int64_t classes) {
  ALEXNET_CHECK(labels.dtype() == DType::kI64 && labels.ndim() == 1 && labels.dim(0) == n, "labels must be int64 [",
                n, "], got ", labels.describe());
  const int64_t* l = labels.data<int64_t>();
  for (int64_t i = 0; i < labels.numel(); ++i)
    ALEXNET_CHECK(l[i] >= 0 && l[i] < classes, "label ", l[i], " of sample ", i, " is outside [0, ", classes,
                  ") (model.num_classes)");
}

}  // namespace

TowerStream::TowerStream(Device device) : device_(device), stream_(ops::create_stream(device)) {}

TowerStream::~TowerStream() { ops::destroy_stream(device_, stream_); }

TowerStream::TowerStream(TowerStream&& other) noexcept : device_(other.device_), stream_(other.stream_) {
  other.stream_ = nullptr;
}

TowerStream& TowerStream::operator=(TowerStream&& other) noexcept {
  if (this != &other) {
    ops::destroy_stream(device_, stream_);
    device_ = other.device_;
    stream_ = other.stream_;
    other.stream_ = nullptr;
  }
  return *this;
}

Shape ParamInfo::tower_shape(int tower) const {
  Shape s = merged;
  s[0] = tower == 0 ? split : merged[0] - split;
  return s;
}

NetShapes alexnet_shapes(const ModelConfig& cfg) {
  ALEXNET_CHECK(cfg.num_classes >= 2, "config key 'model.num_classes': must be at least 2 (got ",
                cfg.num_classes, ")");
  ALEXNET_CHECK(cfg.pool.size >= 1 && cfg.pool.stride >= 1,
                "config key 'model.pool': size and stride must be positive");
  auto pool = [&](int64_t side) { return side < cfg.pool.size ? 0 : (side - cfg.pool.size) / cfg.pool.stride + 1; };
  NetShapes s;
  s.conv1 = cfg.input_size >= 11 ? conv_out_size(cfg.input_size, 11, 4, 0) : 0;
  s.pool1 = pool(s.conv1);
  s.pool2 = pool(s.pool1);  // conv2 (5/1/2) keeps the side
  s.pool5 = pool(s.pool2);  // conv3-5 (3/1/1) keep it too
  s.fc6_in = 2 * kConv5 * s.pool5 * s.pool5;
  ALEXNET_CHECK(s.pool5 >= 1, "config key 'model.input_size': ", cfg.input_size,
                " is too small for the network with pool ", cfg.pool.size, "/", cfg.pool.stride,
                " (sides: conv1 ", s.conv1, ", pool1 ", s.pool1, ", pool2 ", s.pool2, ", pool5 ",
                s.pool5, ")");
  return s;
}

std::vector<ParamInfo> alexnet_param_table(const ModelConfig& cfg) {
  const NetShapes s = alexnet_shapes(cfg);
  const int64_t k = cfg.num_classes;
  std::vector<ParamInfo> t;
  auto layer = [&](const std::string& name, Shape w) {
    int64_t rows = w[0];
    t.push_back({name + "/weight", w, rows / 2, true, true});
    t.push_back({name + "/bias", {rows}, rows / 2, true, false});
  };
  // Backward-completion order: fc8 first.
  layer("fc8", {k, 2 * kFc});
  layer("fc7", {2 * kFc, 2 * kFc});
  layer("fc6", {2 * kFc, s.fc6_in});
  layer("conv5", {2 * kConv5, kConv4, 3, 3});
  layer("conv4", {2 * kConv4, kConv3, 3, 3});
  layer("conv3", {2 * kConv3, 2 * kConv2, 3, 3});
  const bool bn = cfg.norm == NormKind::kBatchNorm;
  if (bn) {
    t.push_back({"norm2/weight", {2 * kConv2}, kConv2, true, false});
    t.push_back({"norm2/bias", {2 * kConv2}, kConv2, true, false});
  }
  layer("conv2", {2 * kConv2, kConv1, 5, 5});
  if (bn) {
    t.push_back({"norm1/weight", {2 * kConv1}, kConv1, true, false});
    t.push_back({"norm1/bias", {2 * kConv1}, kConv1, true, false});
  }
  layer("conv1", {2 * kConv1, 3, 11, 11});
  if (bn) {
    for (const char* norm : {"norm1", "norm2"}) {
      int64_t c = std::string(norm) == "norm1" ? 2 * kConv1 : 2 * kConv2;
      t.push_back({std::string(norm) + "/running_mean", {c}, c / 2, false, false});
      t.push_back({std::string(norm) + "/running_var", {c}, c / 2, false, false});
    }
  }
  return t;
}

int64_t alexnet_parameter_count(const ModelConfig& cfg) {
  int64_t n = 0;
  for (const ParamInfo& p : alexnet_param_table(cfg))
    if (p.trainable) n += shape_numel(p.merged);
  return n;
}

AlexNet::AlexNet(const ModelConfig& cfg, std::array<Device, kTowers> devices)
    : cfg_(cfg), shapes_(alexnet_shapes(cfg)), table_(alexnet_param_table(cfg)), devices_(devices) {
  for (int t = 0; t < kTowers; ++t) {
#if !ALEXNET_WITH_CUDA
    ALEXNET_CHECK(devices_[t].is_cpu(), "this build has no CUDA backend; tower ", t, " asked for ", devices_[t].str());
#endif
    Tower& tw = towers_[t];
    if (devices_[t].is_cuda()) {
      tw.stream = TowerStream(devices_[t]);
      tw.transfers = std::make_unique<ops::PinnedTransfers>(devices_[t]);
    }
    int64_t total = 0;
    for (const ParamInfo& p : table_)
      if (p.trainable) total += arena_slot(shape_numel(p.tower_shape(t)));
    tw.params = Tensor::zeros({total}, DType::kF32, devices_[t]);
    tw.grads = Tensor::zeros({total}, DType::kF32, devices_[t]);
    tw.velocity = Tensor::zeros({total}, DType::kF32, devices_[t]);
    int64_t off = 0;
    for (const ParamInfo& p : table_) {
      Shape shape = p.tower_shape(t);
      int64_t n = shape_numel(shape);
      if (p.trainable) {
        tw.p.push_back(tw.params.slice0(off, off + n).view(shape));
        tw.g.push_back(tw.grads.slice0(off, off + n).view(shape));
        tw.v.push_back(tw.velocity.slice0(off, off + n).view(shape));
        if (p.decay) tw.decay_ranges.emplace_back(off, off + n);
        off += arena_slot(n);
      } else {
        tw.p.push_back(Tensor::zeros(shape, DType::kF32, devices_[t]));
        tw.g.emplace_back();
        tw.v.emplace_back();
      }
    }
  }
  // Peer access where the hardware allows; copies between the GPUs go through the host otherwise.
  if (devices_[0].is_cuda() && devices_[1].is_cuda() && devices_[0] != devices_[1])
    ops::enable_peer_access(devices_[0], devices_[1]);
  init_paper(1);
}

int AlexNet::index_of(const std::string& name) const {
  for (size_t i = 0; i < table_.size(); ++i)
    if (table_[i].name == name) return static_cast<int>(i);
  ALEXNET_FAIL("no tensor named '", name, "' in this network (norm: ", enum_name(cfg_.norm), ")");
}

void AlexNet::init_paper(uint64_t seed) { init_weights(seed, false, 1.0); }

void AlexNet::init_scaled(uint64_t seed, double input_std) { init_weights(seed, true, input_std); }

void AlexNet::init_weights(uint64_t seed, bool scaled, double input_std) {
  for (size_t i = 0; i < table_.size(); ++i) {
    const ParamInfo& info = table_[i];
    const std::string layer = info.name.substr(0, info.name.find('/'));
    const std::string what = info.name.substr(info.name.find('/') + 1);
    const int64_t row = shape_numel(info.merged) / info.merged[0];
    const PhiloxKey key = make_key(seed, RngPurpose::kInit, static_cast<uint32_t>(i));
    for (int t = 0; t < kTowers; ++t) {
      Tensor host = Tensor::empty(info.tower_shape(t));
      float* d = host.data<float>();
      const int64_t n = host.numel();
      if (what == "weight" && layer.rfind("norm", 0) != 0) {
        const int64_t base = info.tower_rows_begin(t) * row;
        const CounterRng rng(key, 0);
        double std = kInitStd;
        if (scaled) {
          std = std::sqrt((layer == "fc8" ? 1.0 : 2.0) / static_cast<double>(row));
          if (layer == "conv1") std /= input_std;
        }
#pragma omp parallel for
        for (int64_t e = 0; e < n; ++e) d[e] = static_cast<float>(std * rng.normal(base + e));
      } else {
        float value = 0.0f;
        if (!scaled && what == "bias" && (layer == "conv2" || layer == "conv4" || layer == "conv5" ||
                               layer == "fc6" || layer == "fc7"))
          value = 1.0f;
        if (what == "weight" || what == "running_var") value = 1.0f;  // batch-norm scale, variance
        std::fill(d, d + n, value);
      }
      towers_[t].p[i].copy_from(host);
    }
  }
  for (Tower& tw : towers_) tw.velocity.fill_zero();
}

void AlexNet::settle(const char* what) const {
  for (int t = 0; t < kTowers; ++t)
    if (devices_[t].is_cuda() && (t == 0 || devices_[t] != devices_[0])) ops::sync_device(devices_[t], what);
}

std::map<std::string, Tensor> AlexNet::state() const {
  settle("AlexNet::state");
  std::map<std::string, Tensor> out;
  for (size_t i = 0; i < table_.size(); ++i)
    out[table_[i].name] = concat0({towers_[0].p[i].clone(Device::cpu()), towers_[1].p[i].clone(Device::cpu())});
  return out;
}

std::map<std::string, Tensor> AlexNet::gradients() const {
  settle("AlexNet::gradients");
  std::map<std::string, Tensor> out;
  for (size_t i = 0; i < table_.size(); ++i)
    if (table_[i].trainable)
      out[table_[i].name] = concat0({towers_[0].g[i].clone(Device::cpu()), towers_[1].g[i].clone(Device::cpu())});
  return out;
}

std::map<std::string, Tensor> AlexNet::momentum() const {
  settle("AlexNet::momentum");
  std::map<std::string, Tensor> out;
  for (size_t i = 0; i < table_.size(); ++i)
    if (table_[i].trainable)
      out[table_[i].name] = concat0({towers_[0].v[i].clone(Device::cpu()), towers_[1].v[i].clone(Device::cpu())});
  return out;
}

namespace {

// Checks that `given` holds exactly the entries of `table` selected by `want` with their shapes.
void check_tensor_set(const std::vector<ParamInfo>& table, bool trainable_only,
                      const std::map<std::string, Tensor>& given, const std::string& what,
                      const std::string& source) {
  size_t expected = 0;
  for (const ParamInfo& p : table) {
    if (trainable_only && !p.trainable) continue;
    ++expected;
    auto it = given.find(p.name);
    ALEXNET_CHECK(it != given.end(), source, ": ", what, " has no tensor '", p.name,
                  "' that this model needs (", shape_str(p.merged), ")");
    ALEXNET_CHECK(it->second.shape() == p.merged, source, ": ", what, " tensor '", p.name,
                  "' has shape ", shape_str(it->second.shape()), ", the model needs ",
                  shape_str(p.merged));
    ALEXNET_CHECK(it->second.dtype() == DType::kF32, source, ": ", what, " tensor '", p.name,
                  "' is ", dtype_name(it->second.dtype()), ", expected float32");
  }
  if (given.size() != expected) {
    for (const auto& [name, tensor] : given) {
      bool known = false;
      for (const ParamInfo& p : table) known |= (p.name == name && (p.trainable || !trainable_only));
      ALEXNET_CHECK(known, source, ": ", what, " holds '", name,
                    "', which this model (its config's model: section) does not have");
    }
  }
}

}  // namespace

void AlexNet::load_state(const std::map<std::string, Tensor>& state, const std::string& source) {
  check_tensor_set(table_, false, state, "model", source);
  for (size_t i = 0; i < table_.size(); ++i) {
    const Tensor& m = state.at(table_[i].name);
    for (int t = 0; t < kTowers; ++t) {
      int64_t b = table_[i].tower_rows_begin(t);
      towers_[t].p[i].copy_from(m.slice0(b, b + towers_[t].p[i].dim(0)));
    }
  }
}

void AlexNet::load_momentum(const std::map<std::string, Tensor>& momentum, const std::string& source) {
  if (momentum.empty()) {
    for (Tower& tw : towers_) tw.velocity.fill_zero();
    return;
  }
  check_tensor_set(table_, true, momentum, "momentum", source);
  for (size_t i = 0; i < table_.size(); ++i) {
    if (!table_[i].trainable) continue;
    const Tensor& m = momentum.at(table_[i].name);
    for (int t = 0; t < kTowers; ++t) {
      int64_t b = table_[i].tower_rows_begin(t);
      towers_[t].v[i].copy_from(m.slice0(b, b + towers_[t].v[i].dim(0)));
    }
  }
}

Tensor& AlexNet::scratch(int tower, const std::string& name, const Shape& shape, DType dtype) {
  std::map<std::string, Tensor>& ws = tower < 0 ? shared_ws_ : towers_[tower].ws;
  Tensor& t = ws[name];
  if (!t.defined() || t.shape() != shape || t.dtype() != dtype) {
    t = Tensor::empty(shape, dtype, tower < 0 ? Device::cpu() : devices_[tower]);
    if (tower >= 0) ++ws_generation_;  // a captured graph names the buffer this one replaces
  }
  return t;
}

void AlexNet::check_batch(const Tensor& images, const Tensor* labels) const {
  const int64_t s = cfg_.input_size;
  ALEXNET_CHECK(images.dtype() == DType::kF32 && images.ndim() == 4 && images.dim(0) >= 1 && images.dim(1) == 3 &&
                    images.dim(2) == s && images.dim(3) == s,
                "images must be float32 [N, 3, ", s, ", ", s, "] (model.input_size ", s, "), got ",
                images.describe());
  // CPU towers compute on the caller's tensor; CUDA towers copy it to their devices from wherever it is
  // (tower 0 uses it in place when it is already on its GPU).
  ALEXNET_CHECK(images.device().is_cpu() || (devices_[0].is_cuda() && devices_[1].is_cuda()),
                "images on ", images.device().str(), " need both towers on CUDA devices (towers on ",
                devices_[0].str(), " and ", devices_[1].str(), ")");
  if (labels) check_labels(*labels, images.dim(0), cfg_.num_classes);
}

void AlexNet::check_crops(const CropBatch& b, const Tensor* labels) const {
  const int64_t s = cfg_.input_size;
  ALEXNET_CHECK(b.crops.device().is_cpu() && b.crops.dtype() == DType::kU8 && b.crops.ndim() == 4 &&
                    b.crops.dim(0) >= 1 && b.crops.dim(1) == 3 && b.crops.dim(2) == s && b.crops.dim(3) == s,
                "crops must be uint8 [N, 3, ", s, ", ", s, "] (model.input_size ", s, ") on the host, got ",
                b.crops.describe());
  const int64_t n = b.crops.dim(0);
  ALEXNET_CHECK(b.placement.device().is_cpu() && b.placement.dtype() == DType::kI32 && b.placement.shape() == (Shape{n, 3}),
                "crop placement must be int32 [", n, ", 3] on the host, got ", b.placement.describe());
  ALEXNET_CHECK(b.lighting.device().is_cpu() && b.lighting.dtype() == DType::kF32 && b.lighting.shape() == (Shape{n, 3}),
                "lighting must be float32 [", n, ", 3] on the host, got ", b.lighting.describe());
  for (int t = 0; t < kTowers; ++t)
    ALEXNET_CHECK(devices_[t].is_cuda(), "a crop batch is normalised on the towers' GPUs, and tower ", t, " is on ",
                  devices_[t].str(), " (on the CPU the data client normalises: pass the float images)");
  ALEXNET_CHECK(input_mean_[0].defined(), "a crop batch needs the input mean first (AlexNet::set_input_mean)");
  if (input_mean_[0].ndim() == 3) {
    const int64_t side = input_mean_[0].dim(1);
    const int32_t* pl = b.placement.data<int32_t>();
    for (int64_t i = 0; i < n; ++i)
      ALEXNET_CHECK(pl[3 * i] >= 0 && pl[3 * i + 1] >= 0 && pl[3 * i] + s <= side && pl[3 * i + 1] + s <= side,
                    "crop ", i, " at (", pl[3 * i], ", ", pl[3 * i + 1], ") of size ", s, " does not fit the ", side,
                    "x", side, " mean image");
  }
  if (labels) check_labels(*labels, n, cfg_.num_classes);
}

void AlexNet::set_input_mean(const Tensor& mean) {
  ALEXNET_CHECK(mean.device().is_cpu() && mean.dtype() == DType::kF32 &&
                    ((mean.ndim() == 3 && mean.dim(0) == 3 && mean.dim(1) == mean.dim(2) &&
                      mean.dim(1) >= cfg_.input_size) ||
                     mean.shape() == Shape{3}),
                "the input mean must be float32 [3, side, side] (side >= ", cfg_.input_size, ") or [3] on the host, got ",
                mean.describe());
  for (int t = 0; t < kTowers; ++t) input_mean_[t] = mean.clone(devices_[t]);
  ++ws_generation_;
}

Tensor AlexNet::forward(const Tensor* images, const CropBatch* crops, bool training, const PassOptions& opt) {
  stage_inputs(images, crops, training, opt);
  return forward_compute(training, opt);
}

void AlexNet::stage_inputs(const Tensor* images, const CropBatch* crops, bool training, const PassOptions& opt) {
  const int64_t n = images ? images->dim(0) : crops->crops.dim(0);
  const bool dropout = training && opt.dropout && cfg_.dropout > 0;
  pass_dropout_ = dropout;
  pass_n_ = n;
  pass_crops_ = crops != nullptr;
  pass_ids_.clear();
  if (dropout) {
    pass_ids_.resize(n);
    for (int64_t i = 0; i < n; ++i) pass_ids_[i] = opt.sample_ids ? opt.sample_ids[i] : i;
  }
  // On a GPU, each row's draw counter, (step << 32) | sample (kernel_elements.h: dropout_fwd), made here,
  // so the step reaches the kernels as data (their step argument is 0) and a replayed graph draws the new
  // step's masks.
  Tensor counters;
  if (dropout && (devices_[0].is_cuda() || devices_[1].is_cuda())) {
    counters = Tensor::empty({n}, DType::kI64);
    for (int64_t i = 0; i < n; ++i)
      counters.data<int64_t>()[i] = static_cast<int64_t>((opt.step << 32) | static_cast<uint64_t>(pass_ids_[i]));
  }
  // Each tower's copy of the input (the host batch itself on the CPU), and of the sample ids for the
  // dropout draws on a device. With both towers on CUDA devices only tower 0 takes the batch from the
  // host (and normalises the crops); tower 1 copies tower 0's input on the device (or over the peer
  // link), which costs far less than a second host transfer and input step. Host data goes up through
  // the tower's pinned transfers, queued on its stream: the host does not wait for the copies.
  const int64_t side = cfg_.input_size;
  for (int t = 0; t < kTowers; ++t) {
    if (devices_[t].is_cpu()) {
      towers_[t].ws["x"] = *images;
      continue;
    }
    ops::PinnedTransfers& io = *towers_[t].transfers;
    io.finish();  // after a pass that stopped on an error, its copies are still counted
    ops::StreamScope on(stream(t));
    // (256-byte aligned, as cuDNN's fastest kernels want: a slice at an odd row is copied instead)
    const bool in_place = t == 0 && images && images->device() == devices_[0] &&
                          reinterpret_cast<uintptr_t>(images->raw_data()) % 256 == 0;
    if (towers_[t].input_is_callers && !in_place) {
      towers_[t].ws.erase("x");  // the caller's batch of an earlier pass: not scratch to write into
      towers_[t].input_is_callers = false;
    }
    if (in_place) {
      // Already on tower 0's GPU (a benchmark keeps its batch there, as frameworks do): used in place,
      // as the CPU towers use the host batch; nothing in the graph writes its input. Read after what
      // was issued before on the device's blocking streams, as the copy it replaces was.
      towers_[0].ws["x"] = *images;
      towers_[0].input_is_callers = true;
      ops::wait_for_default_stream(devices_[0], stream(0));
    } else {
      Tensor& x = scratch(t, "x", {n, 3, side, side});
      if (t == 1 && devices_[0].is_cuda()) {
        // filled from tower 0's input by forward_compute
      } else if (images && images->device().is_cpu()) {
        io.upload(*images, x);
      } else if (images) {
        x.copy_from(*images);
      } else {
        // The input step's operands: uint8 crops, placement and lighting, normalised by forward_compute.
        io.upload(crops->crops, scratch(t, "crops", crops->crops.shape(), DType::kU8));
        io.upload(crops->placement, scratch(t, "placement", {n, 3}, DType::kI32));
        io.upload(crops->lighting, scratch(t, "lighting", {n, 3}));
      }
    }
    if (dropout) io.upload(counters, scratch(t, "sample_ids", {n}, DType::kI64));
  }
}

Tensor AlexNet::forward_compute(bool training, const PassOptions& opt) {
  const int64_t n = pass_n_;
  const NetShapes& s = shapes_;
  const bool relu = cfg_.activation == Activation::kRelu;
  const LrnParams lrn{cfg_.lrn.k, cfg_.lrn.n, cfg_.lrn.alpha, cfg_.lrn.beta};
  const PoolParams pool{cfg_.pool.size, cfg_.pool.stride};
  const BatchNormParams bnp;
  const bool dropout = pass_dropout_;
  const int64_t c1 = s.conv1, p1 = s.pool1, p2 = s.pool2, p5 = s.pool5;
  std::array<Tensor, kTowers> xin;
  std::array<const Tensor*, kTowers> ids_dev{};
  for (int t = 0; t < kTowers; ++t) {
    Tower& tw = towers_[t];
    if (devices_[t].is_cuda()) {
      ops::StreamScope on(stream(t));
      if (t == 1 && devices_[0].is_cuda())
        put_columns(towers_[0].ws.at("x"), stream(0), tw.ws.at("x"), stream(1), 0);
      else if (pass_crops_)
        ops::normalize_crops(tw.ws.at("crops"), tw.ws.at("placement"), tw.ws.at("lighting"), input_mean_[t],
                             tw.ws.at("x"));
      if (dropout) ids_dev[t] = &tw.ws.at("sample_ids");
    }
    xin[t] = tw.ws.at("x");
  }

  auto act = [&](Tensor& a) {
    if (!relu) ops::tanh_forward(a, a);
  };
  auto norm = [&](int t, int which, const Tensor& a, const std::string& tag) -> Tensor {
    switch (cfg_.norm) {
      case NormKind::kNone: return a;
      case NormKind::kLrn:
      case NormKind::kLrn2d: {
        Tensor& y = scratch(t, tag, a.shape());
        Tensor& sc = scratch(t, tag + ".scale", a.shape());
        ops::lrn_forward(a, y, sc, lrn, cfg_.norm == NormKind::kLrn2d);
        return y;
      }
      case NormKind::kBatchNorm: {
        const std::string nm = which == 1 ? "norm1" : "norm2";
        Tower& tw = towers_[t];
        Tensor& y = scratch(t, tag, a.shape());
        Tensor& mean = scratch(t, tag + ".mean", {a.dim(1)});
        Tensor& invstd = scratch(t, tag + ".invstd", {a.dim(1)});
        Tensor& stats = scratch(t, tag + ".stats", {2 * a.dim(1)}, DType::kF64);
        ops::batchnorm_forward(a, tw.p[index_of(nm + "/weight")], tw.p[index_of(nm + "/bias")],
                               tw.p[index_of(nm + "/running_mean")], tw.p[index_of(nm + "/running_var")],
                               training, y, mean, invstd, bnp, stats);
        return y;
      }
    }
    ALEXNET_FAIL("unknown norm kind");
  };
  auto P = [&](int t, const char* name) -> Tensor& { return towers_[t].p[index_of(name)]; };
  auto pool_fwd = [&](int t, const Tensor& in, int64_t side, const std::string& tag) -> Tensor& {
    Shape shape{n, in.dim(1), side, side};
    Tensor& y = scratch(t, tag, shape);
    ops::maxpool_forward(in, y, scratch(t, tag + ".argmax", shape, DType::kI32), pool);
    return y;
  };
  auto fc = [&](int t, const Tensor& in, const char* layer, int64_t out, const std::string& tag) -> Tensor& {
    Tensor& h = scratch(t, tag, {n, out});
    ops::linear_forward(in, P(t, (std::string(layer) + "/weight").c_str()),
                        P(t, (std::string(layer) + "/bias").c_str()), h, relu);
    act(h);
    return h;
  };
  auto drop = [&](int t, Tensor& h, uint32_t layer_id, const std::string& tag) -> Tensor& {
    if (!dropout) return h;
    Tensor& y = scratch(t, tag, h.shape());
    // (on a GPU the step is inside the uploaded counters: stage_inputs)
    DropoutKeying k{make_key(opt.seed, RngPurpose::kDropout, layer_id), devices_[t].is_cuda() ? 0 : opt.step,
                    pass_ids_.data(), t * kFc};
    ops::dropout_forward(h, y, scratch(t, tag + ".mask", h.shape(), DType::kU8), cfg_.dropout, {k, ids_dev[t]});
    return y;
  };

  // conv1 .. pool2: each tower alone.
  std::array<Tensor, kTowers> pool2;
  for (int t = 0; t < kTowers; ++t) {
    ops::StreamScope on(stream(t));
    Tensor& a1 = scratch(t, "a1", {n, kConv1, c1, c1});
    ops::conv2d_forward(xin[t], P(t, "conv1/weight"), P(t, "conv1/bias"), a1, {4, 0, 1}, relu);
    act(a1);
    Tensor n1 = norm(t, 1, a1, "n1");
    Tensor& q1 = pool_fwd(t, n1, p1, "p1");
    Tensor& a2 = scratch(t, "a2", {n, kConv2, p1, p1});
    ops::conv2d_forward(q1, P(t, "conv2/weight"), P(t, "conv2/bias"), a2, {1, 2, 1}, relu);
    act(a2);
    Tensor n2 = norm(t, 2, a2, "n2");
    pool2[t] = pool_fwd(t, n2, p2, "p2");
  }
  // Where the towers cross, both gathers are queued before either tower's compute: a gather makes the
  // reading stream wait for the other tower's stream (and that one for the copy), so a gather queued
  // after tower 0's compute would hold tower 1 back until that compute had finished.
  // conv3 sees both towers' maps (tower 0's channels first).
  std::array<Tensor*, kTowers> in3{};
  for (int t = 0; t < kTowers; ++t) {
    in3[t] = &scratch(t, "in3", {n, 2 * kConv2, p2, p2});
    put_columns(pool2[0], stream(0), *in3[t], stream(t), 0);
    put_columns(pool2[1], stream(1), *in3[t], stream(t), kConv2 * p2 * p2);
  }
  std::array<Tensor, kTowers> pool5;
  for (int t = 0; t < kTowers; ++t) {
    ops::StreamScope on(stream(t));
    Tensor& a3 = scratch(t, "a3", {n, kConv3, p2, p2});
    ops::conv2d_forward(*in3[t], P(t, "conv3/weight"), P(t, "conv3/bias"), a3, {1, 1, 1}, relu);
    act(a3);
    Tensor& a4 = scratch(t, "a4", {n, kConv4, p2, p2});
    ops::conv2d_forward(a3, P(t, "conv4/weight"), P(t, "conv4/bias"), a4, {1, 1, 1}, relu);
    act(a4);
    Tensor& a5 = scratch(t, "a5", {n, kConv5, p2, p2});
    ops::conv2d_forward(a4, P(t, "conv5/weight"), P(t, "conv5/bias"), a5, {1, 1, 1}, relu);
    act(a5);
    pool5[t] = pool_fwd(t, a5, p5, "p5");
  }
  // fc6, fc7, fc8: every tower reads the concatenation of both towers' outputs.
  std::array<Tensor, kTowers> prev = pool5;
  const char* fcs[] = {"fc6", "fc7"};
  for (int l = 0; l < 2; ++l) {
    std::array<Tensor, kTowers> next;
    const std::string tag = fcs[l];
    std::array<Tensor*, kTowers> in{};
    const int64_t w0 = prev[0].numel() / n;
    for (int t = 0; t < kTowers; ++t) {
      in[t] = &scratch(t, "in_" + tag, {n, w0 + prev[1].numel() / n});
      put_columns(prev[0], stream(0), *in[t], stream(t), 0);
      put_columns(prev[1], stream(1), *in[t], stream(t), w0);
    }
    for (int t = 0; t < kTowers; ++t) {
      ops::StreamScope on(stream(t));
      Tensor& h = fc(t, *in[t], fcs[l], kFc, "h_" + tag);
      next[t] = drop(t, h, static_cast<uint32_t>(6 + l), "d_" + tag);
    }
    prev = next;
  }
  const int64_t split8 = table_[index_of("fc8/weight")].split;
  std::array<Tensor*, kTowers> in8{}, out8{};
  for (int t = 0; t < kTowers; ++t) {
    in8[t] = &scratch(t, "in_fc8", {n, 2 * kFc});
    put_columns(prev[0], stream(0), *in8[t], stream(t), 0);
    put_columns(prev[1], stream(1), *in8[t], stream(t), kFc);
  }
  for (int t = 0; t < kTowers; ++t) {
    ops::StreamScope on(stream(t));
    out8[t] = &scratch(t, "logits", {n, t == 0 ? split8 : cfg_.num_classes - split8});
    ops::linear_forward(*in8[t], P(t, "fc8/weight"), P(t, "fc8/bias"), *out8[t], false);
  }
  // Both towers' fc8 are queued before the logits are gathered: on tower 0's GPU, where the loss is
  // computed without the host waiting, or on the host for a CPU tower 0.
  const bool on_device = devices_[0].is_cuda();
  Tensor& logits = on_device ? scratch(0, "logits_all", {n, cfg_.num_classes}) : scratch(-1, "logits", {n, cfg_.num_classes});
  for (int t = 0; t < kTowers; ++t)
    put_columns(*out8[t], stream(t), logits, on_device ? stream(0) : nullptr, t == 0 ? 0 : split8);
  return logits;
}

void AlexNet::backward(const Tensor& dlogits) {
  const int64_t n = dlogits.dim(0);
  const NetShapes& s = shapes_;
  const bool relu = cfg_.activation == Activation::kRelu;
  const LrnParams lrn{cfg_.lrn.k, cfg_.lrn.n, cfg_.lrn.alpha, cfg_.lrn.beta};
  const bool dropout = pass_dropout_;
  auto W = [&](int t, const std::string& layer) -> Tensor& { return towers_[t].p[index_of(layer + "/weight")]; };
  auto GW = [&](int t, const std::string& layer) -> Tensor& { return towers_[t].g[index_of(layer + "/weight")]; };
  auto GB = [&](int t, const std::string& layer) -> Tensor& { return towers_[t].g[index_of(layer + "/bias")]; };
  auto ws = [&](int t, const std::string& name) -> Tensor& { return towers_[t].ws.at(name); };
  // Tower t's weight and bias gradients of `layer` are final.
  auto ready = [&](int t, const std::string& layer) {
    if (!graphs_.capturing && !grad_ready_) return;
    const auto w = static_cast<size_t>(index_of(layer + "/weight")), b = static_cast<size_t>(index_of(layer + "/bias"));
    if (graphs_.capturing) {
      // Captured: the consumers are called at each replay, after the launch, with this point's event.
      const int mark = graphs_.graph->mark(stream(t));
      graphs_.points.push_back({t, w, mark});
      graphs_.points.push_back({t, b, mark});
      return;
    }
    grad_ready_(t, w);
    grad_ready_(t, b);
  };
  // In place: dy becomes the gradient before the activation whose output is y.
  auto act_bwd = [&](const Tensor& y, Tensor& dy) {
    if (relu) ops::relu_backward(y, dy, dy);
    else ops::tanh_backward(y, dy, dy);
  };
  // Gradient of tower t's part of a gathered input: the sum over both towers' input gradients.
  const PoolParams pool{cfg_.pool.size, cfg_.pool.stride};
  // out lives on tower t's device; the other tower's part arrives through a staging copy there.
  auto scatter = [&](const std::string& dx_name, int64_t col0, Tensor& out, int t) {
    take_columns(ws(0, dx_name), stream(0), col0, out, stream(t), false);
    Tensor* staging = out.device().is_cpu() ? nullptr : &scratch(t, dx_name + ".staging", out.shape());
    take_columns(ws(1, dx_name), stream(1), col0, out, stream(t), true, staging);
  };

  const int64_t split8 = table_[index_of("fc8/weight")].split;
  // Each tower's share of dlogits (on the host, or on tower 0's GPU), both copies queued before either
  // tower's compute, as at every crossing below.
  for (int t = 0; t < kTowers; ++t) {
    ops::StreamScope on(stream(t));
    Tensor& dl = scratch(t, "dlogits", ws(t, "logits").shape());
    take_columns(dlogits, dlogits.device().is_cpu() ? nullptr : stream(0), t == 0 ? 0 : split8, dl, stream(t), false);
  }
  for (int t = 0; t < kTowers; ++t) {
    ops::StreamScope on(stream(t));
    Tensor& dx = scratch(t, "dx_fc8", ws(t, "in_fc8").shape());
    ops::linear_backward(ws(t, "in_fc8"), W(t, "fc8"), ws(t, "dlogits"), &dx, GW(t, "fc8"), GB(t, "fc8"));
    ready(t, "fc8");
  }
  std::string next_dx = "dx_fc8";
  // As in forward: at each crossing both towers' scatters are queued before either tower's compute.
  for (const std::string layer : {"fc7", "fc6"}) {
    for (int t = 0; t < kTowers; ++t) {
      ops::StreamScope on(stream(t));
      scatter(next_dx, t * kFc, scratch(t, "dh_" + layer, {n, kFc}), t);
    }
    for (int t = 0; t < kTowers; ++t) {
      ops::StreamScope on(stream(t));
      Tensor& dh = ws(t, "dh_" + layer);
      if (dropout) ops::dropout_backward(dh, ws(t, "d_" + layer + ".mask"), cfg_.dropout, dh);
      act_bwd(ws(t, "h_" + layer), dh);
      Tensor& dx = scratch(t, "dx_" + layer, ws(t, "in_" + layer).shape());
      ops::linear_backward(ws(t, "in_" + layer), W(t, layer), ws(t, "dh_" + layer), &dx, GW(t, layer),
                          GB(t, layer));
      ready(t, layer);
    }
    next_dx = "dx_" + layer;
  }
  const int64_t p2 = s.pool2, p5 = s.pool5;
  for (int t = 0; t < kTowers; ++t) {
    ops::StreamScope on(stream(t));
    scatter("dx_fc6", t * kConv5 * p5 * p5, scratch(t, "dp5", {n, kConv5, p5, p5}), t);
  }
  for (int t = 0; t < kTowers; ++t) {
    ops::StreamScope on(stream(t));
    Tensor& dp5 = ws(t, "dp5");
    Tensor& da5 = scratch(t, "da5", {n, kConv5, p2, p2});
    ops::maxpool_backward(dp5, ws(t, "p5.argmax"), da5, pool);
    act_bwd(ws(t, "a5"), da5);
    Tensor& da4 = scratch(t, "da4", {n, kConv4, p2, p2});
    ops::conv2d_backward(ws(t, "a4"), W(t, "conv5"), da5, &da4, GW(t, "conv5"), GB(t, "conv5"), {1, 1, 1});
    ready(t, "conv5");
    act_bwd(ws(t, "a4"), da4);
    Tensor& da3 = scratch(t, "da3", {n, kConv3, p2, p2});
    ops::conv2d_backward(ws(t, "a3"), W(t, "conv4"), da4, &da3, GW(t, "conv4"), GB(t, "conv4"), {1, 1, 1});
    ready(t, "conv4");
    act_bwd(ws(t, "a3"), da3);
    Tensor& din3 = scratch(t, "dx_in3", ws(t, "in3").shape());
    ops::conv2d_backward(ws(t, "in3"), W(t, "conv3"), da3, &din3, GW(t, "conv3"), GB(t, "conv3"), {1, 1, 1});
    ready(t, "conv3");
  }
  for (int t = 0; t < kTowers; ++t) {
    ops::StreamScope on(stream(t));
    scatter("dx_in3", t * kConv2 * p2 * p2, scratch(t, "dp2", {n, kConv2, p2, p2}), t);
  }
  for (int t = 0; t < kTowers; ++t) {
    ops::StreamScope on(stream(t));
    Tower& tw = towers_[t];
    Tensor& dp2 = ws(t, "dp2");
    for (int which : {2, 1}) {
      // pool -> norm -> activation -> conv, for conv2 then conv1.
      const std::string k = std::to_string(which);
      const Tensor& a = ws(t, "a" + k);
      Tensor& dnorm = scratch(t, "dn" + k, a.shape());
      ops::maxpool_backward(which == 2 ? dp2 : ws(t, "dp1"), ws(t, "p" + k + ".argmax"), dnorm, pool);
      Tensor* da = &dnorm;
      if (cfg_.norm != NormKind::kNone) {
        da = &scratch(t, "da" + k, a.shape());
        const std::string tag = "n" + k;
        if (cfg_.norm == NormKind::kLrn || cfg_.norm == NormKind::kLrn2d)
          ops::lrn_backward(a, ws(t, tag), ws(t, tag + ".scale"), dnorm, *da, lrn, cfg_.norm == NormKind::kLrn2d);
        else
          ops::batchnorm_backward(a, tw.p[index_of("norm" + k + "/weight")], ws(t, tag + ".mean"),
                                 ws(t, tag + ".invstd"), dnorm, *da,
                                 tw.g[index_of("norm" + k + "/weight")], tw.g[index_of("norm" + k + "/bias")]);
        if (cfg_.norm == NormKind::kBatchNorm) ready(t, "norm" + k);
      }
      act_bwd(a, *da);
      if (which == 2) {
        Tensor& dp1 = scratch(t, "dp1", ws(t, "p1").shape());
        ops::conv2d_backward(ws(t, "p1"), W(t, "conv2"), *da, &dp1, GW(t, "conv2"), GB(t, "conv2"), {1, 2, 1});
        ready(t, "conv2");
      } else {
        ops::conv2d_backward(ws(t, "x"), W(t, "conv1"), *da, nullptr, GW(t, "conv1"),
                            GB(t, "conv1"), {4, 0, 1});
        ready(t, "conv1");
      }
    }
  }
}

double AlexNet::train_pass(const Tensor& images, const Tensor& labels, const PassOptions& opt,
                           Tensor* logits_out) {
  check_batch(images, &labels);
  return train_from(&images, nullptr, labels, opt, logits_out);
}

double AlexNet::train_pass(const CropBatch& batch, const Tensor& labels, const PassOptions& opt, Tensor* logits_out) {
  check_crops(batch, &labels);
  return train_from(nullptr, &batch, labels, opt, logits_out);
}

double AlexNet::train_from(const Tensor* images, const CropBatch* crops, const Tensor& labels, const PassOptions& opt,
                           Tensor* logits_out) {
  stage_inputs(images, crops, true, opt);
  const int64_t n = pass_n_;
  grad_ready_ = opt.on_grad_ready;
  struct ClearCallback {
    std::function<void(int, size_t)>& f;
    ~ClearCallback() { f = nullptr; }
  } clear{grad_ready_};
  if (devices_[0].is_cpu()) {
    Tensor logits = forward_compute(true, opt);
    Tensor& probs = scratch(-1, "probs", logits.shape());
    const double loss = softmax_xent_forward_cpu(logits, labels, probs);
    Tensor& dlogits = scratch(-1, "dlogits", logits.shape());
    softmax_xent_backward_cpu(probs, labels, dlogits);
    if (logits_out) *logits_out = logits.clone();
    backward(dlogits);
    return loss;
  }
  // On tower 0's GPU, and nothing waits: backward is queued behind the loss at once, and the per-row
  // losses (and the logits) come back through pinned copies, read once the whole pass is queued.
  ops::PinnedTransfers& io = *towers_[0].transfers;
  {
    ops::StreamScope on(stream(0));
    io.upload(labels, scratch(0, "labels", {n}, DType::kI64));
  }
  // The copies back, queued on the current stream once the loss and logits are final.
  auto read_back = [&] {
    io.download(towers_[0].ws.at("row_loss"), scratch(-1, "row_loss", {n}, DType::kF64));
    if (logits_out) {
      const Tensor& logits = towers_[0].ws.at("logits_all");
      io.download(logits, scratch(-1, "logits", logits.shape()));
    }
  };
  auto compute = [&] {
    Tensor logits = forward_compute(true, opt);
    ops::StreamScope on(stream(0));
    const Tensor& labels_dev = towers_[0].ws.at("labels");
    Tensor& probs = scratch(0, "probs", logits.shape());
    ops::softmax_xent_rows(logits, labels_dev, probs, scratch(0, "row_loss", {n}, DType::kF64));
    // Captured, the copies back cannot be in the graph (the host waits for them); they go on a stream
    // of their own after the graph's event here, so the host still waits for the loss only, not for
    // backward.
    if (graphs_.capturing) graphs_.loss_mark = graphs_.graph->mark(stream(0));
    else read_back();
    Tensor& dlogits = scratch(0, "dlogits_all", logits.shape());
    ops::softmax_xent_backward(probs, labels_dev, dlogits);
    backward(dlogits);
  };
  if (graphed_pass(opt, compute)) {
    graphs_.graph->wait(graphs_.loss_mark, graphs_.readback.get(), devices_[0]);
    ops::StreamScope on(graphs_.readback.get());
    read_back();
  } else {
    compute();
  }
  for (Tower& tw : towers_)
    if (tw.transfers) tw.transfers->finish();
  const double loss = softmax_xent_mean(shared_ws_.at("row_loss").data<double>(), n, cfg_.num_classes);
  if (logits_out) *logits_out = shared_ws_.at("logits").clone();
  return loss;
}

PassKey AlexNet::pass_key(const PassOptions& opt) const {
  const Tower& t0 = towers_[0];
  PassKey key;
  key.n = pass_n_;
  key.crops = pass_crops_;
  key.dropout = pass_dropout_;
  key.input = t0.input_is_callers ? t0.ws.at("x").raw_data() : nullptr;
  key.seed = opt.seed;
  key.ws_generation = ws_generation_;
  key.resource_generation = ops::device_resource_generation();
  return key;
}

bool AlexNet::graphed_pass(const PassOptions& opt, const std::function<void()>& compute) {
  const PassKey key = pass_key(opt);
  switch (graphs_.schedule.next(key)) {
    case GraphSchedule::Action::kStreams: return false;
    case GraphSchedule::Action::kReplay: replay_graph(); return true;
    case GraphSchedule::Action::kCapture: break;
  }
  if (!graphs_.graph) {
    // Marks per stream: one per layer with parameters (ready() in backward: 10 with batch norm), and the
    // loss's on tower 0's.
    graphs_.graph = std::make_unique<ops::PassGraph>(
        stream(0), devices_[0], std::vector<std::pair<ops::Stream, Device>>{{stream(1), devices_[1]}}, 11);
  }
  graphs_.points.clear();
  std::string why;
  bool captured = false;
  try {
    graphs_.graph->begin();
    graphs_.capturing = true;
    compute();
    graphs_.capturing = false;
    captured = graphs_.graph->end(&why);
  } catch (const std::exception& e) {
    graphs_.capturing = false;
    why = e.what();
    ALEXNET_CHECK(graphs_.graph->abandon(), "a tower stream stayed in CUDA graph capture after: ", why);
  } catch (...) {
    graphs_.capturing = false;
    graphs_.graph->abandon();
    throw;
  }
  if (captured && pass_key(opt) != key) {
    captured = false;
    why = "the pass replaced device memory while it was captured";
  }
  if (!captured) {
    // Nothing captured has run: the caller runs the pass stream by stream, as every later one.
    graphs_.schedule.refuse(why);
    graphs_.graph.reset();
    return false;
  }
  graphs_.schedule.captured(key);
  ++graphs_.captures;
  graphs_.nodes = graphs_.graph->nodes();
  replay_graph();
  return true;
}

void AlexNet::replay_graph() {
  graphs_.graph->launch();
  ++graphs_.replays;
  if (!grad_ready_) return;
  // In backward's order; each consumer waits, on its own stream, for its point inside the graph.
  for (const GraphPoint& p : graphs_.points) {
    CudaReadyEventScope scope(graphs_.graph->event(p.mark));
    grad_ready_(p.tower, p.index);
  }
}

void AlexNet::set_cuda_graphs(bool on) {
  const bool enabled = on && devices_[0].is_cuda() && devices_[1].is_cuda();
  graphs_.schedule.set_enabled(enabled);
  if (!enabled) graphs_.graph.reset();
  if (enabled && !graphs_.readback.get()) graphs_.readback = TowerStream(devices_[0]);
}

AlexNet::GraphStatus AlexNet::graph_status() const {
  GraphStatus g;
  g.enabled = graphs_.schedule.enabled();
  g.captures = graphs_.captures;
  g.replays = graphs_.replays;
  g.nodes = graphs_.nodes;
  g.refused = graphs_.schedule.refused();
  return g;
}

Tensor AlexNet::infer(const Tensor& images) {
  check_batch(images, nullptr);
  PassOptions no_dropout;
  no_dropout.dropout = false;
  return forward(&images, nullptr, false, no_dropout).clone(Device::cpu());
}

Tensor AlexNet::infer(const CropBatch& batch) {
  check_crops(batch, nullptr);
  PassOptions no_dropout;
  no_dropout.dropout = false;
  return forward(nullptr, &batch, false, no_dropout).clone(Device::cpu());
}

Tensor AlexNet::activation(int tower, const std::string& name) const {
  ALEXNET_CHECK(tower >= 0 && tower < kTowers, "tower must be 0 or 1, got ", tower);
  auto it = towers_[tower].ws.find(name);
  ALEXNET_CHECK(it != towers_[tower].ws.end(), "no activation '", name, "' in tower ", tower,
                " (run a pass first; norm: none has no n1/n2)");
  return it->second;
}

void AlexNet::sgd_step(double lr, double momentum, double weight_decay) {
  for (Tower& tw : towers_) {
    ops::StreamScope on(tw.stream.get());
    if (tw.params.device().is_cuda()) {
      // One launch for the tower's whole arena (the padding between tensors is zero and stays zero).
      ops::sgd_update_arena(tw.params, tw.grads, tw.velocity, tw.decay_ranges, lr, momentum, weight_decay);
      continue;
    }
    for (size_t i = 0; i < table_.size(); ++i)
      if (table_[i].trainable)
        ops::sgd_update(tw.p[i], tw.g[i], tw.v[i], lr, momentum, table_[i].decay ? weight_decay : 0.0);
  }
}

}  // namespace alexnet
