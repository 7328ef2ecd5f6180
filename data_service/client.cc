// Worker-side data client: MPI point-to-point with the rank's service, on the calling thread only.
#include "data_service/client.h"

#include <chrono>
#include <thread>

#include "core/error.h"
#include "core/log.h"

namespace alexnet {

using Clock = std::chrono::steady_clock;
using wire::RequestKind;

namespace {

// Polls until `done()` (which makes MPI progress) holds, or data.timeout_s passes.
template <class F>
void poll_until(F done, double timeout_s, const std::string& service, const char* what) {
  const Clock::time_point start = Clock::now();
  for (int spin = 0; !done(); ++spin) {
    if (spin > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
    if (timeout_s > 0 && (spin & 255) == 0) {
      const double waited = std::chrono::duration<double>(Clock::now() - start).count();
      ALEXNET_CHECK(waited < timeout_s, "no answer from ", service, " for ", static_cast<int64_t>(waited),
                    " s (data.timeout_s ", timeout_s, ") while waiting for ", what, "; it stopped or hangs");
    }
  }
}

}  // namespace

DataClient::DataClient(const JobLayout& layout, const Config& config)
    : layout_(layout), buffers_(std::make_shared<BufferPool>()) {
  ALEXNET_ASSERT(layout.role() == JobRole::kWorker, "DataClient on a data-service rank");
  service_ = layout.service_rank();
  service_name_ = layout.name_of(service_);
  timeout_s_ = config.data.timeout_s;
  use_mean_image_ = config.data.mean == MeanKind::kImage;

  wire::Hello h;
  h.worker_index = layout.index();
  h.num_workers = layout.num_workers();
  h.global_batch = config.train.batch_size;
  h.seed = config.train.seed;
  check_mpi(MPI_Send(&h, sizeof(h), MPI_BYTE, service_, wire::kTagHello, layout.data_comm()), "MPI_Send of the handshake");
  MPI_Status st;
  poll_until(
      [&] {
        int flag = 0;
        check_mpi(MPI_Iprobe(service_, wire::kTagInfo, layout_.data_comm(), &flag, &st), "MPI_Iprobe");
        return flag != 0;
      },
      timeout_s_, service_name_, "the handshake reply");
  int bytes = 0;
  check_mpi(MPI_Get_count(&st, MPI_BYTE, &bytes), "MPI_Get_count");
  std::vector<uint8_t> msg(static_cast<size_t>(bytes));
  check_mpi(MPI_Recv(msg.data(), bytes, MPI_BYTE, service_, wire::kTagInfo, layout.data_comm(), MPI_STATUS_IGNORE),
            "MPI_Recv of the handshake reply");
  const wire::InfoHeader info = wire::unpack_info(msg.data(), msg.size(), info_.stats, service_name_);
  info_.num_train = info.num_train;
  info_.num_val = info.num_val;
  info_.num_classes = info.num_classes;
  info_.crop = info.crop;
  info_.src_side = info.src_side;
  info_.batch = info.batch;
  info_.steps_per_epoch = info.steps_per_epoch;
  info_.eval_batch = info.eval_batch;
  info_.views = info.views;
  info_.eval_batches = info.eval_batches;
  ALEXNET_CHECK(info_.crop == config.model.input_size, service_name_, " serves ", info_.crop,
                "-pixel crops, model.input_size is ", config.model.input_size);
  ALEXNET_CHECK(info_.num_classes <= config.model.num_classes, "the dataset has ", info_.num_classes,
                " classes, model.num_classes is ", config.model.num_classes);
}

DataClient::~DataClient() {
  // A request still in flight is left to MPI_Finalize or MPI_Abort: the client cannot wait in a destructor.
  if (pending_ && pending_->req != MPI_REQUEST_NULL) {
    int finalized = 1;
    MPI_Finalized(&finalized);
    if (!finalized) {
      MPI_Cancel(&pending_->req);
      MPI_Request_free(&pending_->req);
      // A receive already matched may still be writing into its buffer after the cancel: the buffer is
      // left allocated (one message, at the end of the process) rather than freed under it.
      static_cast<void>(new std::shared_ptr<Storage>(std::move(pending_->buffer)));
    }
  }
}

void DataClient::post(RequestKind kind, int64_t a, int64_t b) {
  ALEXNET_ASSERT(!pending_, "a second request in flight");
  Message m;
  m.kind = kind;
  m.a = a;
  m.b = b;
  const int count = kind == RequestKind::kTrain ? info_.batch : info_.eval_batch * info_.views;
  m.buffer = buffers_->get(wire::batch_message_bytes(count, info_.crop), page_locked_);
  check_mpi(MPI_Irecv(m.data(), static_cast<int>(m.buffer->bytes()), MPI_BYTE, service_, wire::kTagBatch,
                      layout_.data_comm(), &m.req),
            "MPI_Irecv of a batch");
  wire::Request r;
  r.kind = kind;
  r.a = a;
  r.b = b;
  check_mpi(MPI_Send(&r, sizeof(r), MPI_BYTE, service_, wire::kTagRequest, layout_.data_comm()), "MPI_Send of a request");
  pending_ = std::move(m);
}

bool DataClient::test(Message& m) {
  if (m.arrived) return true;
  MPI_Status st;
  int flag = 0;
  check_mpi(MPI_Test(&m.req, &flag, &st), "MPI_Test of a batch");
  if (!flag) return false;
  check_mpi(MPI_Get_count(&st, MPI_BYTE, &m.bytes), "MPI_Get_count");
  m.arrived = true;
  return true;
}

void DataClient::progress() {
  if (pending_ && !shut_down_) test(*pending_);
}

void DataClient::wait(Message& m, const char* what) {
  poll_until([&] { return test(m); }, timeout_s_, service_name_, what);
  wire::check_batch_message(m.data(), static_cast<size_t>(m.bytes), m.kind, m.a, m.b, service_name_);
}

DataClient::Message DataClient::take(RequestKind kind, int64_t a, int64_t b) {
  ALEXNET_CHECK(!shut_down_, "the data client was shut down");
  if (stash_ && stash_->kind == kind && stash_->a == a && stash_->b == b) {
    Message m = std::move(*stash_);
    stash_.reset();
    return m;
  }
  if (pending_) {
    Message m = std::move(*pending_);
    pending_.reset();
    wait(m, "a batch");
    if (m.kind == kind && m.a == a && m.b == b) return m;
    // Asked for something else (evaluation after training, a jump): keep a training batch for later.
    if (m.kind == RequestKind::kTrain) stash_ = std::move(m);
  }
  post(kind, a, b);
  Message m = std::move(*pending_);
  pending_.reset();
  wait(m, kind == RequestKind::kTrain ? "a training batch" : "an evaluation batch");
  return m;
}

Tensor DataClient::crops_of(const Message& m, int count) const {
  const int crop = info_.crop;
  const size_t offset = static_cast<size_t>(wire::batch_pixels(m.data(), count, crop, 0) - m.data());
  return Tensor::over(m.buffer, offset, {count, 3, crop, crop}, DType::kU8);
}

Tensor DataClient::normalise(const uint8_t* msg, int count, const std::vector<SampleAugment>& augment) const {
  const int crop = info_.crop;
  Tensor images = Tensor::empty({count, 3, crop, crop}, DType::kF32);
  float* out = images.data<float>();
  const size_t plane = static_cast<size_t>(3) * crop * crop;
#pragma omp parallel for schedule(static)
  for (int i = 0; i < count; ++i)
    normalize_crop(wire::batch_pixels(msg, count, crop, i), crop, augment[i], info_.stats, use_mean_image_,
                   out + i * plane);
  return images;
}

Tensor DataClient::input_mean() const {
  if (!use_mean_image_) {
    const auto& m = info_.stats.channel_mean;
    return Tensor::from_vector<float>({3}, {static_cast<float>(m[0]), static_cast<float>(m[1]), static_cast<float>(m[2])});
  }
  const int side = info_.stats.side;
  ALEXNET_CHECK(info_.stats.mean_image.size() == static_cast<size_t>(3) * side * side, "mean image holds ",
                info_.stats.mean_image.size(), " values, expected 3 x ", side, " x ", side);
  return Tensor::from_vector<float>({3, side, side}, info_.stats.mean_image);
}

TrainBatch DataClient::next_train_batch(int64_t epoch, int64_t step) {
  ALEXNET_CHECK(epoch >= 0 && step >= 0 && step < info_.steps_per_epoch, "training batch (epoch ", epoch, ", step ",
                step, ") out of range: ", info_.steps_per_epoch, " steps per epoch");
  Message m = take(RequestKind::kTrain, epoch, step);
  // Ask for the next batch now, so the service's send overlaps this step's compute.
  if (!pending_) {
    if (step + 1 < info_.steps_per_epoch)
      post(RequestKind::kTrain, epoch, step + 1);
    else
      post(RequestKind::kTrain, epoch + 1, 0);
  }
  const int n = wire::batch_header(m.data())->count;
  ALEXNET_CHECK(n == info_.batch, service_name_, " sent ", n, " training images, expected ", info_.batch);
  TrainBatch out;
  out.epoch = epoch;
  out.step = step;
  const wire::SampleRecord* rec = wire::batch_records(m.data());
  out.labels = Tensor::empty({n}, DType::kI64);
  int64_t* labels = out.labels.data<int64_t>();
  out.samples.resize(n);
  out.augment.resize(n);
  for (int i = 0; i < n; ++i) {
    out.samples[i] = rec[i].sample;
    labels[i] = rec[i].label;
    out.augment[i] = wire::record_augment(rec[i]);
  }
  if (host_normalise_) out.images = normalise(m.data(), n, out.augment);
  out.crops = crops_of(m, n);
  return out;
}

EvalData DataClient::eval_batch(int64_t index) {
  ALEXNET_CHECK(index >= 0 && index < info_.eval_batches, "evaluation batch ", index, " out of range: ",
                info_.eval_batches, " batches");
  Message m = take(RequestKind::kEval, index, 0);
  if (!pending_ && index + 1 < info_.eval_batches) post(RequestKind::kEval, index + 1, 0);
  const int count = wire::batch_header(m.data())->count;
  const int views = info_.views;
  ALEXNET_CHECK(count == info_.eval_batch * views, service_name_, " sent ", count, " evaluation crops, expected ",
                info_.eval_batch * views);
  const int n = count / views;
  EvalData out;
  out.index = index;
  out.views = views;
  const wire::SampleRecord* rec = wire::batch_records(m.data());
  out.labels = Tensor::empty({n}, DType::kI64);
  int64_t* labels = out.labels.data<int64_t>();
  out.samples.resize(n);
  out.mask.resize(n);
  out.augment.resize(count);
  for (int k = 0; k < count; ++k) out.augment[k] = wire::record_augment(rec[k]);
  for (int j = 0; j < n; ++j) {
    out.samples[j] = rec[j * views].sample;
    labels[j] = rec[j * views].label;
    out.mask[j] = rec[j * views].mask;
  }
  if (host_normalise_) out.images = normalise(m.data(), count, out.augment);
  out.crops = crops_of(m, count);
  return out;
}

void DataClient::shutdown() {
  if (shut_down_) return;
  if (pending_) {
    Message m = std::move(*pending_);
    pending_.reset();
    wait(m, "the last batch in flight");
  }
  stash_.reset();
  wire::Request r;
  r.kind = RequestKind::kDone;
  check_mpi(MPI_Send(&r, sizeof(r), MPI_BYTE, service_, wire::kTagRequest, layout_.data_comm()),
            "MPI_Send of the end of training");
  shut_down_ = true;
}

}  // namespace alexnet
