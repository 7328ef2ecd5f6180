// Data-service pieces that need no MPI job: the service-to-worker assignment, the wire layouts and
// their checks, and the service's config keys.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <vector>

#include "core/config.h"
#include "core/error.h"
#include "core/tensor.h"
#include "data_service/buffer_pool.h"
#include "data_service/job_layout.h"
#include "data_service/service.h"
#include "data_service/wire.h"

namespace alexnet {
namespace {

std::vector<RankInfo> ranks(const std::vector<std::pair<JobRole, std::string>>& spec) {
  std::vector<RankInfo> out;
  for (const auto& [role, host] : spec) out.push_back({role, host});
  return out;
}
constexpr JobRole S = JobRole::kService, W = JobRole::kWorker;

TEST(AssignWorkers, OneServicePerNodeServesItsNode) {
  // mpirun places ranks by slot: node a holds ranks 0, 2, 3 ... in this made-up order.
  const Assignment a = assign_workers(ranks({{S, "a"}, {S, "b"}, {W, "a"}, {W, "a"}, {W, "b"}, {W, "b"}}));
  EXPECT_TRUE(a.by_node);
  EXPECT_EQ(a.services, (std::vector<int>{0, 1}));
  EXPECT_EQ(a.workers, (std::vector<int>{2, 3, 4, 5}));
  EXPECT_EQ(a.service_of_worker, (std::vector<int>{0, 0, 1, 1}));
  EXPECT_EQ(a.services_on_host, (std::vector<int>{1, 1}));
}

TEST(AssignWorkers, SeveralServicesOnANodeSplitItsWorkers) {
  const Assignment a = assign_workers(ranks({{S, "a"}, {S, "a"}, {W, "a"}, {W, "a"}, {W, "a"}, {W, "a"}, {W, "a"}}));
  EXPECT_TRUE(a.by_node);
  EXPECT_EQ(a.service_of_worker, (std::vector<int>{0, 0, 0, 1, 1}));
  EXPECT_EQ(a.services_on_host, (std::vector<int>{2, 2}));
}

TEST(AssignWorkers, NodeWithoutServiceSpreadsWorkersEvenly) {
  const Assignment a = assign_workers(ranks({{S, "a"}, {S, "a"}, {W, "b"}, {W, "b"}, {W, "c"}, {W, "c"}, {W, "c"}}));
  EXPECT_FALSE(a.by_node);
  EXPECT_EQ(a.service_of_worker, (std::vector<int>{0, 0, 0, 1, 1}));
}

TEST(AssignWorkers, NeedsServicesAndWorkers) {
  try {
    assign_workers(ranks({{W, "a"}, {W, "a"}}));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no alexnet-data-service"), std::string::npos) << e.what();
  }
  EXPECT_THROW(assign_workers(ranks({{S, "a"}})), Error);
}

TEST(Wire, BatchLayoutAndChecks) {
  const int count = 3, crop = 227;
  EXPECT_EQ(wire::batch_message_bytes(count, crop), 40u + 3 * 40u + 3u * 3 * 227 * 227);
  std::vector<uint8_t> msg(wire::batch_message_bytes(count, crop));
  wire::BatchHeader h;
  h.kind = wire::RequestKind::kTrain;
  h.count = count;
  h.crop = crop;
  h.a = 4;
  h.b = 9;
  std::memcpy(msg.data(), &h, sizeof(h));
  EXPECT_EQ(wire::batch_pixels(msg.data(), count, crop, 1) - msg.data(),
            static_cast<ptrdiff_t>(40 + 3 * 40 + 3 * 227 * 227));
  EXPECT_NO_THROW(wire::check_batch_message(msg.data(), msg.size(), wire::RequestKind::kTrain, 4, 9, "service 0"));
  EXPECT_THROW(wire::check_batch_message(msg.data(), msg.size() - 1, wire::RequestKind::kTrain, 4, 9, "s"), Error);
  EXPECT_THROW(wire::check_batch_message(msg.data(), msg.size(), wire::RequestKind::kEval, 4, 9, "s"), Error);
  EXPECT_THROW(wire::check_batch_message(msg.data(), msg.size(), wire::RequestKind::kTrain, 4, 8, "s"), Error);

  SampleAugment a;
  a.crop_x = 17;
  a.crop_y = 29;
  a.flip = true;
  a.lighting = {1.5f, -2.25f, 0.125f};
  wire::SampleRecord r;
  wire::set_record_augment(r, a);
  const SampleAugment b = wire::record_augment(r);
  EXPECT_EQ(b.crop_x, 17);
  EXPECT_EQ(b.crop_y, 29);
  EXPECT_TRUE(b.flip);
  EXPECT_EQ(b.lighting, a.lighting);
}

// The data client's message buffers: a block comes back when its last user goes and is handed out again
// for the same size and kind, blocks in use are never handed out twice, at most kKeepPerSize idle blocks
// of a size stay, and a block outlives the pool's owner.
TEST(BufferPool, ReusesIdleBlocksOfTheSameSizeAndKind) {
  auto pool = std::make_shared<BufferPool>();
  std::shared_ptr<Storage> a = pool->get(1000, false);
  std::shared_ptr<Storage> b = pool->get(1000, false);
  EXPECT_NE(a->data(), b->data());
  EXPECT_EQ(a->bytes(), 1000u);
  void* first = a->data();
  a.reset();
  EXPECT_EQ(pool->idle(), 1u);
  EXPECT_NE(pool->get(999, false)->data(), first);  // another size: a new block (the 999 one goes idle)
  EXPECT_EQ(pool->idle(), 2u);
  std::shared_ptr<Storage> c = pool->get(1000, false);
  EXPECT_EQ(c->data(), first);
  EXPECT_EQ(pool->idle(), 1u);
  std::shared_ptr<Storage> locked = pool->get(1000, true);  // another kind: never the plain block
  EXPECT_NE(locked->data(), first);
  EXPECT_NE(locked->data(), b->data());
  // A tensor viewing a block keeps it from the pool.
  Tensor view = Tensor::over(c, 10, {5}, DType::kU8);
  c.reset();
  EXPECT_NE(pool->get(1000, false)->data(), first);
  view = Tensor();
  const size_t before = pool->idle();
  std::vector<std::shared_ptr<Storage>> many;
  for (int i = 0; i < 7; ++i) many.push_back(pool->get(64, false));
  many.clear();
  EXPECT_EQ(pool->idle(), before + BufferPool::kKeepPerSize);
  std::shared_ptr<Storage> kept = pool->get(64, false);
  std::memset(kept->data(), 3, 64);
  pool.reset();  // the block keeps the pool alive until it goes
  EXPECT_EQ(static_cast<unsigned char*>(kept->data())[63], 3);
  kept.reset();
}

TEST(Wire, HandshakeCarriesTheStatistics) {
  ImageStats s;
  s.side = 4;
  s.mean_image.resize(3 * 4 * 4);
  for (size_t i = 0; i < s.mean_image.size(); ++i) s.mean_image[i] = 0.5f * static_cast<float>(i);
  s.channel_mean = {1, 2, 3};
  s.eigenvalues = {9, 8, 7};
  for (int i = 0; i < 9; ++i) s.eigenvectors[i] = i * 0.1, s.covariance[i] = i;
  wire::InfoHeader h;
  h.num_train = 1281167;
  h.num_val = 50000;
  h.steps_per_epoch = 10009;
  const std::vector<uint8_t> msg = wire::pack_info(h, s);
  EXPECT_EQ(msg.size(), sizeof(wire::InfoHeader) + 48 * sizeof(float));
  ImageStats t;
  const wire::InfoHeader g = wire::unpack_info(msg.data(), msg.size(), t, "service 0");
  EXPECT_EQ(g.num_train, 1281167);
  EXPECT_EQ(g.num_val, 50000);
  EXPECT_EQ(g.steps_per_epoch, 10009);
  EXPECT_EQ(t.side, 4);
  EXPECT_EQ(t.mean_image, s.mean_image);
  EXPECT_EQ(t.channel_mean, s.channel_mean);
  EXPECT_EQ(t.eigenvalues, s.eigenvalues);
  EXPECT_EQ(t.eigenvectors, s.eigenvectors);
  EXPECT_EQ(t.covariance, s.covariance);
  EXPECT_THROW(wire::unpack_info(msg.data(), msg.size() - 4, t, "s"), Error);
  std::vector<uint8_t> old = msg;
  reinterpret_cast<wire::InfoHeader*>(old.data())->version = 99;
  EXPECT_THROW(wire::unpack_info(old.data(), old.size(), t, "s"), Error);
}

TEST(ServiceConfig, KeysReachTheOptionsAndAreValidated) {
  const Config c = default_config({"data.eval_batch=16", "data.ten_crop=true", "data.prefetch=2",
                                   "data.threads=3", "data.timeout_s=30", "train.seed=99"});
  const ServiceOptions o = ServiceOptions::from_config(c);
  EXPECT_EQ(o.eval_batch, 16);
  EXPECT_TRUE(o.ten_crop);
  EXPECT_EQ(o.prefetch, 2);
  EXPECT_EQ(o.threads, 3);
  EXPECT_EQ(o.timeout_s, 30);
  EXPECT_EQ(o.seed, 99u);
  EXPECT_EQ(o.crop, 227);
  for (const char* bad : {"data.eval_batch=-1", "data.timeout_s=-2", "data.prefetch=0"}) {
    try {
      default_config({bad});
      FAIL() << bad << " accepted";
    } catch (const Error& e) {
      const std::string key = std::string(bad).substr(0, std::string(bad).find('='));
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
    }
  }
}

TEST(ServiceConfig, PreparedFolderNeedsARoot) {
  try {
    open_prepared_producer(DataConfig{});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("data.root"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace alexnet
