// SampleProducer over the prepared folder: the index, the statistics and the shards or original files.
#include <memory>

#include "core/error.h"
#include "data_service/prepared.h"
#include "data_service/service.h"

namespace alexnet {
namespace {

class PreparedProducer : public SampleProducer {
 public:
  explicit PreparedProducer(const std::string& folder)
      : index_(read_prepared_index(folder)), stats_(read_image_stats(folder)),
        source_(open_sample_source(index_, folder)) {}

  int64_t num_train() const override { return static_cast<int64_t>(index_.train.size()); }
  int64_t num_val() const override { return static_cast<int64_t>(index_.val.size()); }
  int num_classes() const override { return static_cast<int>(index_.wnids.size()); }
  int32_t label(bool val, int64_t i) const override { return entries(val)[static_cast<size_t>(i)].label; }
  const ImageStats& stats() const override { return stats_; }
  std::string name(bool val, int64_t i) const override { return source_->name(val, i); }

  Status load(bool val, int64_t i, int side, Image& out) const override {
    StatusOr<std::vector<uint8_t>> bytes = source_->read(val, i);
    if (!bytes.ok()) return bytes.status();
    const std::vector<uint8_t>& b = bytes.value();
    const std::string file = source_->name(val, i);
    if (source_->pre_resized()) {
      Status st = decode(b, file, 0, out);
      if (!st.ok()) return st;
      if (out.width != side || out.height != side)
        return Status::error(str_cat(file, ": pre-resized image is ", out.width, "x", out.height, ", expected ",
                                     side, "x", side));
      return Status();
    }
    // Decode at the smallest DCT scale that keeps the shorter side >= side, then the paper's rescale.
    thread_local Image decoded;
    Status st = decode(b, file, side, decoded);
    if (!st.ok()) return st;
    resize_shorter_and_center_crop_into(decoded, side, out);
    return Status();
  }

 private:
  static Status decode(const std::vector<uint8_t>& b, const std::string& file, int min_side, Image& out) {
    return decode_image_into(b.data(), b.size(), file, min_side, out);
  }

  const std::vector<DatasetEntry>& entries(bool val) const { return val ? index_.val : index_.train; }
  DatasetIndex index_;
  ImageStats stats_;
  std::unique_ptr<SampleSource> source_;
};

}  // namespace

std::unique_ptr<SampleProducer> open_prepared_producer(const DataConfig& data) {
  ALEXNET_CHECK(!data.prepared.empty() || !data.root.empty(),
                "neither data.prepared nor data.root is set; run `alexnet-tool prepare` and set one of them");
  const std::string folder = !data.prepared.empty() ? data.prepared : data.root + "/.prepared";
  return std::make_unique<PreparedProducer>(folder);
}

}  // namespace alexnet
