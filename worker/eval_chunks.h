// A batch from the data service as the model's passes take it: crop batches for towers that normalise on
// their GPUs, and the evaluation batch's logits computed a training batch at a time.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "data_service/client.h"
#include "model/alexnet.h"

namespace alexnet {

// Rows [begin, end) of a batch as received (uint8 crops and their augmentation), for towers that normalise
// on their GPUs.
CropBatch crop_batch(const Tensor& crops, const std::vector<SampleAugment>& augment, int64_t begin, int64_t end);

// The logits [rows, K] on the host of every row of an evaluation batch (the float images when the client
// normalised them, else the crops), inferred `chunk` rows at a time. pad_last: a short last chunk is padded
// to `chunk` rows with copies of its last row, whose logits are dropped, so the model sees one batch shape
// throughout (on CUDA towers: no reallocation of device memory and no new cuDNN search, in this pass or in
// the training step after it).
Tensor infer_in_chunks(AlexNet& model, const EvalData& d, int64_t chunk, bool pad_last);

}  // namespace alexnet
