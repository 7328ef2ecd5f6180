// Packing and checking of data-service messages.
#include "data_service/wire.h"

#include <cstring>

#include "core/error.h"

namespace alexnet::wire {

size_t batch_message_bytes(int count, int crop) {
  return sizeof(BatchHeader) + static_cast<size_t>(count) * sizeof(SampleRecord) +
         static_cast<size_t>(count) * 3 * crop * crop;
}

uint8_t* batch_pixels(uint8_t* msg, int count, int crop, int i) {
  return msg + sizeof(BatchHeader) + static_cast<size_t>(count) * sizeof(SampleRecord) +
         static_cast<size_t>(i) * 3 * crop * crop;
}

const uint8_t* batch_pixels(const uint8_t* msg, int count, int crop, int i) {
  return batch_pixels(const_cast<uint8_t*>(msg), count, crop, i);
}

void check_batch_message(const uint8_t* msg, size_t bytes, RequestKind kind, int64_t a, int64_t b,
                         const std::string& from) {
  ALEXNET_CHECK(bytes >= sizeof(BatchHeader), "batch message of ", bytes, " bytes from ", from,
                " is shorter than its header");
  const BatchHeader* h = batch_header(msg);
  ALEXNET_CHECK(h->magic == kMagic, "batch message from ", from, " has a bad magic number");
  ALEXNET_CHECK(h->count >= 0 && h->crop > 0 && bytes == batch_message_bytes(h->count, h->crop),
                "batch message from ", from, ": ", bytes, " bytes, expected ",
                batch_message_bytes(h->count, h->crop), " for ", h->count, " crops of ", h->crop);
  ALEXNET_CHECK(h->kind == kind && h->a == a && h->b == b, "batch message from ", from, " answers (",
                static_cast<int>(h->kind), ", ", h->a, ", ", h->b, "), expected (", static_cast<int>(kind), ", ",
                a, ", ", b, ")");
}

SampleAugment record_augment(const SampleRecord& r) {
  SampleAugment a;
  a.crop_x = r.crop_x;
  a.crop_y = r.crop_y;
  a.flip = r.flip != 0;
  for (int c = 0; c < 3; ++c) a.lighting[c] = r.lighting[c];
  return a;
}

void set_record_augment(SampleRecord& r, const SampleAugment& a) {
  r.crop_x = a.crop_x;
  r.crop_y = a.crop_y;
  r.flip = a.flip ? 1 : 0;
  for (int c = 0; c < 3; ++c) r.lighting[c] = a.lighting[c];
}

std::vector<uint8_t> pack_info(const InfoHeader& header, const ImageStats& stats) {
  InfoHeader h = header;
  h.stats_side = stats.side;
  ALEXNET_ASSERT(stats.mean_image.size() == static_cast<size_t>(3) * stats.side * stats.side,
                 "mean image of ", stats.mean_image.size(), " values for side ", stats.side);
  for (int i = 0; i < 3; ++i) h.channel_mean[i] = stats.channel_mean[i];
  for (int i = 0; i < 9; ++i) h.covariance[i] = stats.covariance[i];
  for (int i = 0; i < 3; ++i) h.eigenvalues[i] = stats.eigenvalues[i];
  for (int i = 0; i < 9; ++i) h.eigenvectors[i] = stats.eigenvectors[i];
  std::vector<uint8_t> out(sizeof(InfoHeader) + stats.mean_image.size() * sizeof(float));
  std::memcpy(out.data(), &h, sizeof(InfoHeader));
  std::memcpy(out.data() + sizeof(InfoHeader), stats.mean_image.data(), stats.mean_image.size() * sizeof(float));
  return out;
}

InfoHeader unpack_info(const uint8_t* msg, size_t bytes, ImageStats& stats, const std::string& from) {
  ALEXNET_CHECK(bytes >= sizeof(InfoHeader), "handshake reply of ", bytes, " bytes from ", from, " is truncated");
  InfoHeader h;
  std::memcpy(&h, msg, sizeof(InfoHeader));
  ALEXNET_CHECK(h.magic == kMagic && h.version == kVersion, "handshake reply from ", from,
                " speaks wire version ", h.version, ", this build speaks ", kVersion,
                " (run the same build everywhere)");
  const size_t mean_values = static_cast<size_t>(3) * h.stats_side * h.stats_side;
  ALEXNET_CHECK(h.stats_side > 0 && bytes == sizeof(InfoHeader) + mean_values * sizeof(float),
                "handshake reply from ", from, ": ", bytes, " bytes for a mean image of side ", h.stats_side);
  stats.side = h.stats_side;
  stats.mean_image.resize(mean_values);
  std::memcpy(stats.mean_image.data(), msg + sizeof(InfoHeader), mean_values * sizeof(float));
  for (int i = 0; i < 3; ++i) stats.channel_mean[i] = h.channel_mean[i];
  for (int i = 0; i < 9; ++i) stats.covariance[i] = h.covariance[i];
  for (int i = 0; i < 3; ++i) stats.eigenvalues[i] = h.eigenvalues[i];
  for (int i = 0; i < 9; ++i) stats.eigenvectors[i] = h.eigenvectors[i];
  return h;
}

}  // namespace alexnet::wire
