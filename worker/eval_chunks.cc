#include "worker/eval_chunks.h"

#include <algorithm>

#include "core/error.h"

namespace alexnet {

CropBatch crop_batch(const Tensor& crops, const std::vector<SampleAugment>& augment, int64_t begin, int64_t end) {
  CropBatch b;
  b.crops = crops.slice0(begin, end);
  std::vector<int32_t> place;
  std::vector<float> light;
  for (int64_t i = begin; i < end; ++i) {
    const SampleAugment& a = augment[static_cast<size_t>(i)];
    place.insert(place.end(), {a.crop_x, a.crop_y, a.flip ? 1 : 0});
    light.insert(light.end(), a.lighting.begin(), a.lighting.end());
  }
  b.placement = Tensor::from_vector<int32_t>({end - begin, 3}, place);
  b.lighting = Tensor::from_vector<float>({end - begin, 3}, light);
  return b;
}

Tensor infer_in_chunks(AlexNet& model, const EvalData& d, int64_t chunk, bool pad_last) {
  ALEXNET_ASSERT(chunk >= 1, "infer_in_chunks: chunk ", chunk);
  const int64_t rows = d.images.defined() ? d.images.dim(0) : d.crops.dim(0);
  std::vector<Tensor> parts;
  for (int64_t i = 0; i < rows; i += chunk) {
    const int64_t end = std::min(rows, i + chunk);
    const bool pad = pad_last && end - i < chunk;
    Tensor out;
    if (d.images.defined()) {
      const Tensor x = d.images.slice0(i, end);
      out = model.infer(pad ? pad_rows(x, chunk) : x);
    } else {
      CropBatch b = crop_batch(d.crops, d.augment, i, end);
      if (pad) {
        b.crops = pad_rows(b.crops, chunk);
        b.placement = pad_rows(b.placement, chunk);
        b.lighting = pad_rows(b.lighting, chunk);
      }
      out = model.infer(b);
    }
    parts.push_back(pad ? out.slice0(0, end - i) : out);
  }
  return parts.size() == 1 ? parts[0] : concat0(parts);
}

}  // namespace alexnet
