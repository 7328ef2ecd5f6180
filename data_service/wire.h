// The data service's wire format (docs/data-service.md): message tags, fixed-layout headers and the
// packing of batches (uint8 planar crops plus per-crop records) and of the handshake (sizes, ImageStats).
// Both ends run the same binary build on one kind of machine, so records travel in native byte order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "data_service/augment.h"

namespace alexnet::wire {

constexpr uint32_t kMagic = 0x41584453;  // "SDXA"
constexpr uint32_t kVersion = 1;

// MPI tags on the data communicator (a duplicate of MPI_COMM_WORLD that carries nothing else).
constexpr int kTagHello = 7101;    // worker -> service: Hello
constexpr int kTagInfo = 7102;     // service -> worker: InfoHeader + stats
constexpr int kTagRequest = 7103;  // worker -> service: Request
constexpr int kTagBatch = 7104;    // service -> worker: BatchHeader + records + pixels

enum class RequestKind : int32_t { kTrain = 1, kEval = 2, kDone = 3 };

struct Hello {
  uint32_t magic = kMagic;
  uint32_t version = kVersion;
  int32_t worker_index = 0;    // rank among the workers
  int32_t num_workers = 0;
  int64_t global_batch = 0;    // train.batch_size as the worker read it (checked against the service's)
  uint64_t seed = 0;           // train.seed, likewise
};

struct InfoHeader {
  uint32_t magic = kMagic;
  uint32_t version = kVersion;
  int64_t num_train = 0;
  int64_t num_val = 0;
  int32_t num_classes = 0;
  int32_t crop = 0;            // 227
  int32_t src_side = 0;        // 256
  int32_t batch = 0;           // training images per worker per step
  int64_t steps_per_epoch = 0;
  int32_t eval_batch = 0;      // validation images per worker per evaluation batch
  int32_t views = 0;           // crops per validation image: 1 or 10
  int64_t eval_batches = 0;    // evaluation batches per pass (the same for every worker)
  // ImageStats: scalars here, the mean image [3, stats_side, stats_side] float32 follows the header.
  int32_t stats_side = 0;
  int32_t pad = 0;
  double channel_mean[3] = {};
  double covariance[9] = {};
  double eigenvalues[3] = {};
  double eigenvectors[9] = {};
};

struct Request {
  RequestKind kind = RequestKind::kTrain;
  int32_t pad = 0;
  int64_t a = 0;  // kTrain: epoch; kEval: evaluation batch index
  int64_t b = 0;  // kTrain: step
};

struct BatchHeader {
  uint32_t magic = kMagic;
  RequestKind kind = RequestKind::kTrain;
  int32_t count = 0;  // crops in the message (images x views)
  int32_t views = 1;
  int32_t crop = 0;
  int32_t pad = 0;
  int64_t a = 0;      // as in the request it answers
  int64_t b = 0;
};

// One per crop, in batch order (for ten views, image j's crops are j*10 .. j*10+9, in EvalView order).
struct SampleRecord {
  int64_t sample = 0;   // global index into the training or validation set (a replacement's when the file was bad)
  int32_t label = 0;
  int32_t crop_x = 0;
  int32_t crop_y = 0;
  uint8_t flip = 0;
  uint8_t mask = 1;     // evaluation: 0 for padding
  uint8_t pad[2] = {};
  float lighting[3] = {};
  int32_t pad2 = 0;
};
static_assert(sizeof(Hello) == 32 && sizeof(InfoHeader) == 264 && sizeof(Request) == 24 &&
                  sizeof(BatchHeader) == 40 && sizeof(SampleRecord) == 40,
              "wire layouts are documented in docs/data-service.md");

// Bytes of a batch message with `count` crops of side `crop`.
size_t batch_message_bytes(int count, int crop);
// Views into a batch message buffer.
inline BatchHeader* batch_header(uint8_t* msg) { return reinterpret_cast<BatchHeader*>(msg); }
inline const BatchHeader* batch_header(const uint8_t* msg) { return reinterpret_cast<const BatchHeader*>(msg); }
inline SampleRecord* batch_records(uint8_t* msg) { return reinterpret_cast<SampleRecord*>(msg + sizeof(BatchHeader)); }
inline const SampleRecord* batch_records(const uint8_t* msg) {
  return reinterpret_cast<const SampleRecord*>(msg + sizeof(BatchHeader));
}
// Crop i's pixels [3, crop, crop] planar uint8.
uint8_t* batch_pixels(uint8_t* msg, int count, int crop, int i);
const uint8_t* batch_pixels(const uint8_t* msg, int count, int crop, int i);
// Checks a received batch message (magic, size, kind); errors name `from`.
void check_batch_message(const uint8_t* msg, size_t bytes, RequestKind kind, int64_t a, int64_t b,
                         const std::string& from);

SampleAugment record_augment(const SampleRecord& r);
void set_record_augment(SampleRecord& r, const SampleAugment& a);

// Handshake reply: InfoHeader followed by the mean image.
std::vector<uint8_t> pack_info(const InfoHeader& header, const ImageStats& stats);
// Splits a handshake reply; errors name `from` (version mismatch, truncated message).
InfoHeader unpack_info(const uint8_t* msg, size_t bytes, ImageStats& stats, const std::string& from);

}  // namespace alexnet::wire
