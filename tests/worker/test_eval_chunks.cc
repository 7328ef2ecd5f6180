// The worker's evaluation batches inferred a training batch at a time (worker/eval_chunks.h): the logits
// of every row, in order, whether a short last chunk is padded to a full one or not.
#include <gtest/gtest.h>

#include <cstdint>

#include "model/alexnet.h"
#include "tests/common/expect.h"
#include "tests/common/gradcheck.h"
#include "worker/eval_chunks.h"

namespace alexnet {
namespace {

// Seven rows in chunks of 3 (a last chunk of 1), 7 (one full chunk) and 8 (one short chunk): the logits
// equal those of the whole batch in one pass (within the rounding of another batch size), and padded, the
// model's last pass saw a full chunk.
TEST(EvalChunks, EveryRowsLogitsInOrderPaddedOrNot) {
  ModelConfig cfg;
  cfg.num_classes = 10;
  cfg.input_size = 99;
  AlexNet net(cfg);
  net.init_scaled(3);
  const int64_t rows = 7;
  EvalData d;
  d.images = testing::random_tensor({rows, 3, 99, 99}, 11, -100, 100).to(DType::kF32);
  const Tensor whole = net.infer(d.images);
  for (const int64_t chunk : {3, 7, 8})
    for (const bool pad : {false, true}) {
      const Tensor logits = infer_in_chunks(net, d, chunk, pad);
      ASSERT_EQ(logits.shape(), whole.shape()) << "chunk " << chunk << (pad ? " padded" : "");
      EXPECT_LE(testing::rel_l2_diff(logits, whole), 1e-5) << "chunk " << chunk << (pad ? " padded" : "");
      const int64_t last = rows % chunk == 0 ? chunk : (pad ? chunk : rows % chunk);
      EXPECT_EQ(net.activation(0, "x").dim(0), last) << "chunk " << chunk << (pad ? " padded" : "");
    }
}

}  // namespace
}  // namespace alexnet
