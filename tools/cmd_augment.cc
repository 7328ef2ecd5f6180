// alexnet-tool augment-dump: the exact samples the data service would send for an epoch (training) or an
// evaluation pass, normalised as the worker sees them, with their crop/flip/lighting parameters, and
// optionally a contact sheet to look at.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "checkpoint/h5file.h"
#include "core/cli.h"
#include "core/config.h"
#include "core/error.h"
#include "core/tensor.h"
#include "data_service/augment.h"
#include "data_service/jpeg_encode.h"
#include "data_service/sampler.h"
#include "data_service/service.h"
#include "tools/tool_command.h"

namespace alexnet {
namespace {

// A grid of the crops as the network sees them before mean subtraction (crop + lighting, clamped),
// `columns` wide with a 2-pixel gap.
Image contact_sheet(const std::vector<uint8_t>& crops, const std::vector<SampleAugment>& aug, int crop,
                    int columns) {
  const int count = static_cast<int>(aug.size());
  const int gap = 2;
  columns = std::max(1, std::min(columns, count));
  const int rows = (count + columns - 1) / columns;
  Image sheet;
  sheet.width = columns * crop + (columns + 1) * gap;
  sheet.height = rows * crop + (rows + 1) * gap;
  sheet.rgb.assign(static_cast<size_t>(sheet.width) * sheet.height * 3, 255);
  const size_t plane = static_cast<size_t>(crop) * crop;
  for (int k = 0; k < count; ++k) {
    const int x0 = gap + (k % columns) * (crop + gap), y0 = gap + (k / columns) * (crop + gap);
    const uint8_t* src = crops.data() + static_cast<size_t>(k) * 3 * plane;
    for (int y = 0; y < crop; ++y)
      for (int x = 0; x < crop; ++x)
        for (int c = 0; c < 3; ++c) {
          const float v = src[c * plane + static_cast<size_t>(y) * crop + x] + aug[k].lighting[c];
          sheet.rgb[(static_cast<size_t>(y0 + y) * sheet.width + x0 + x) * 3 + c] =
              static_cast<uint8_t>(std::clamp(std::lround(v), 0L, 255L));
        }
  }
  return sheet;
}

int cmd_augment_dump(int argc, char** argv) {
  ArgParser args("alexnet-tool augment-dump",
                 "--config C --split train|val --epoch E --count K --out D.h5 [--png SHEET.png]: the exact "
                 "samples the data service would send");
  args.config_options();
  args.option("--split", "train (the first K samples of the epoch's order) or val (the first K images)");
  args.option("--epoch", "training epoch (default 0; ignored for val)");
  args.option("--count", "number of samples (default 16)");
  args.option("--out", "output HDF5 file");
  args.option("--png", "also write a contact sheet of the crops (PNG)");
  args.option("--columns", "contact sheet columns (default 8)");
  if (!args.parse(argc, argv, 2)) return 0;
  const Config cfg = args.load_config();
  const std::string split = args.get_or("--split", "train");
  ALEXNET_CHECK(split == "train" || split == "val", "alexnet-tool augment-dump: --split must be train or val, got '",
                split, "'");
  const bool val = split == "val";
  const int64_t epoch = args.get_int_or("--epoch", 0);
  ALEXNET_CHECK(epoch >= 0, "alexnet-tool augment-dump: --epoch must be >= 0, got ", epoch);
  const int64_t count = args.get_int_or("--count", 16);
  ALEXNET_CHECK(count >= 1, "alexnet-tool augment-dump: --count must be >= 1, got ", count);
  const std::string out = args.get("--out");

  std::unique_ptr<SampleProducer> producer = open_prepared_producer(cfg.data);
  const ServiceOptions opt = ServiceOptions::from_config(cfg);
  SampleMaker maker(*producer, opt);
  const int64_t n = val ? producer->num_val() : producer->num_train();
  ALEXNET_CHECK(count <= n, "alexnet-tool augment-dump: --count ", count, " exceeds the ", n, " images of the ",
                split, " set");
  // Training: the epoch's permutation, whose consecutive slices are the global batches (TrainSampler);
  // evaluation: images in index order, as the padded evaluation batches cover them.
  std::vector<int64_t> order(static_cast<size_t>(count));
  if (val) {
    for (int64_t k = 0; k < count; ++k) order[k] = k;
  } else {
    const std::vector<int64_t> perm = TrainSampler(n, 1, 1, opt.seed).permutation(epoch);
    std::copy(perm.begin(), perm.begin() + count, order.begin());
  }
  const int views = val && opt.ten_crop ? 10 : 1;
  const int crop = opt.crop;
  const int64_t rows = count * views;
  const size_t plane = static_cast<size_t>(crop) * crop;
  std::vector<uint8_t> crops(static_cast<size_t>(rows) * 3 * plane);
  Tensor images = Tensor::empty({rows, 3, crop, crop});
  std::vector<int64_t> requested(rows), loaded(rows), labels(rows), crop_x(rows), crop_y(rows), flip(rows);
  std::vector<float> lighting(static_cast<size_t>(rows) * 3);
  std::vector<SampleAugment> augments(rows);
  const bool use_mean_image = cfg.data.mean == MeanKind::kImage;
  Image image;
  for (int64_t k = 0; k < count; ++k) {
    const int64_t used = maker.load_or_replace(val, order[k], image);
    for (int v = 0; v < views; ++v) {
      const int64_t r = k * views + v;
      const SampleAugment a = maker.augment(val, epoch, used, v, views);
      uint8_t* c = crops.data() + static_cast<size_t>(r) * 3 * plane;
      extract_crop(image.rgb.data(), opt.src_side, a, crop, c);
      normalize_crop(c, crop, a, producer->stats(), use_mean_image, images.data<float>() + r * 3 * plane);
      requested[r] = order[k];
      loaded[r] = used;
      labels[r] = producer->label(val, used);
      crop_x[r] = a.crop_x;
      crop_y[r] = a.crop_y;
      flip[r] = a.flip ? 1 : 0;
      for (int ch = 0; ch < 3; ++ch) lighting[r * 3 + ch] = a.lighting[ch];
      augments[r] = a;
    }
  }
  auto i64 = [&](const std::vector<int64_t>& v) { return Tensor::from_vector<int64_t>({rows}, v); };
  write_hdf5_atomically(out, "augment dump", [&](H5File& f) {
    f.write_tensor("/images", images);
    Tensor c = Tensor::empty({rows, 3, crop, crop}, DType::kU8);
    std::copy(crops.begin(), crops.end(), c.data<uint8_t>());
    f.write_tensor("/crops", c);
    f.write_tensor("/labels", i64(labels));
    f.write_tensor("/sample_ids", i64(requested));
    f.write_tensor("/loaded_ids", i64(loaded));
    f.write_tensor("/crop_x", i64(crop_x));
    f.write_tensor("/crop_y", i64(crop_y));
    f.write_tensor("/flip", i64(flip));
    f.write_tensor("/lighting", Tensor::from_vector<float>({rows, 3}, lighting));
    f.write_string("/config", config_to_yaml(cfg));
  });
  std::cout << "wrote " << out << ": " << rows << " " << split << " samples"
            << (val ? "" : str_cat(" of epoch ", epoch)) << " (" << maker.replaced() << " replaced by the next valid image)\n";
  if (args.has("--png")) {
    const std::string png = args.get("--png");
    const Image sheet = contact_sheet(crops, augments, crop, static_cast<int>(args.get_int_or("--columns", 8)));
    const std::vector<uint8_t> bytes = encode_png(sheet);
    const std::string tmp = png + ".tmp";
    {
      std::ofstream os(tmp, std::ios::binary);
      ALEXNET_CHECK(os.good(), "alexnet-tool augment-dump: cannot write '", png, "'");
      os.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
      ALEXNET_CHECK(os.good(), "alexnet-tool augment-dump: writing '", png, "' failed");
    }
    ALEXNET_CHECK(std::rename(tmp.c_str(), png.c_str()) == 0, "alexnet-tool augment-dump: cannot rename '", tmp,
                  "' to '", png, "'");
    std::cout << "wrote " << png << ": " << sheet.width << "x" << sheet.height << " contact sheet\n";
  }
  return 0;
}

const ToolCommand kAugmentDump{"augment-dump",
                               "the exact samples the data service would send (tensors, labels, ids, crop/flip/lighting)",
                               cmd_augment_dump};

}  // namespace
}  // namespace alexnet
