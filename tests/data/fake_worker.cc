// A stand-in for alexnet-worker in data-service tests: fetches training and evaluation batches through
// DataClient and checks them (sample ids against TrainSampler, every validation image once, crops and
// augmentation against a local decode), writes one line per crop for cross-run comparison, and can die or
// stall on purpose. With --loopback-services D, ranks below D run the service in-process over a
// synthetic SampleProducer, so the transport is tested without files.
#include <mpi.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <thread>

#include "core/cli.h"
#include "comm/mpi_process.h"
#include "core/error.h"
#include "core/log.h"
#include "data_service/client.h"
#include "data_service/job_layout.h"
#include "data_service/sampler.h"
#include "data_service/service.h"
#include "tests/data/synthetic_producer.h"

namespace alexnet {
namespace {

uint64_t fnv1a(const uint8_t* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

std::set<int64_t> parse_list(const std::string& s) {
  std::set<int64_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.insert(std::stoll(item));
  return out;
}

struct Checker {
  const SampleProducer* producer = nullptr;  // null: no pixel check
  int side = 256;
  Image image;
  // The service's replacement rule: the next index whose file loads.
  int64_t expected_used(bool val, int64_t i) {
    if (!producer) return i;
    const int64_t n = val ? producer->num_val() : producer->num_train();
    for (int64_t k = 0; k < n; ++k, i = (i + 1) % n)
      if (producer->load(val, i, side, image).ok()) return i;
    ALEXNET_FAIL("no loadable image");
  }
  void check_crop(bool val, int64_t sample, const SampleAugment& a, int crop, const uint8_t* got, const std::string& what) {
    if (!producer) return;
    ALEXNET_CHECK(producer->load(val, sample, side, image).ok(), what, ": sample ", sample, " does not load locally");
    std::vector<uint8_t> want(static_cast<size_t>(3) * crop * crop);
    extract_crop(image.rgb.data(), side, a, crop, want.data());
    ALEXNET_CHECK(std::memcmp(want.data(), got, want.size()) == 0, what, ": crop of sample ", sample,
                  " differs from a local decode and crop");
  }
};

bool same_augment(const SampleAugment& a, const SampleAugment& b) {
  return a.crop_x == b.crop_x && a.crop_y == b.crop_y && a.flip == b.flip && a.lighting == b.lighting;
}

int run_worker(const JobLayout& layout, const Config& config, const ArgParser& args, const SampleProducer* local) {
  DataClient client(layout, config);
  const DataInfo& info = client.info();
  const int w = layout.index();
  const int64_t epochs = args.get_int_or("--epochs", 1);
  const int64_t start_epoch = args.get_int_or("--start-epoch", 0);
  const int64_t start_step = args.get_int_or("--start-step", 0);
  const int64_t max_steps = args.get_int_or("--steps", 0);
  const bool eval = args.has("--eval");
  const int fail_worker = static_cast<int>(args.get_int_or("--fail-worker", -1));
  const int64_t fail_step = args.get_int_or("--fail-step", 1);
  const std::string fail_mode = args.get_or("--fail-mode", "kill");
  Checker checker;
  checker.producer = local;
  checker.side = info.src_side;
  std::ofstream out;
  if (args.has("--out")) {
    out.open(str_cat(args.get("--out"), "/worker", w, ".txt"));
    ALEXNET_CHECK(out.good(), "cannot write to ", args.get("--out"));
  }
  const TrainSampler sampler(info.num_train, config.train.batch_size, layout.num_workers(), config.train.seed);
  ALEXNET_CHECK(sampler.steps_per_epoch() == info.steps_per_epoch, "steps per epoch: service ",
                info.steps_per_epoch, ", TrainSampler ", sampler.steps_per_epoch());
  const size_t plane = static_cast<size_t>(3) * info.crop * info.crop;
  std::vector<float> norm(plane);
  int64_t batches = 0;
  double wait_s = 0;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<int64_t> eval_counts(static_cast<size_t>(info.num_val), 0);
  int64_t eval_passes = 0;
  TrainBatch held;  // the previous training batch, kept while the next ones arrive
  uint64_t held_hash = 0;
  for (int64_t e = start_epoch; e < start_epoch + epochs; ++e) {
    const int64_t steps = max_steps > 0 ? std::min(max_steps, info.steps_per_epoch) : info.steps_per_epoch;
    for (int64_t s = e == start_epoch ? start_step : 0; s < steps; ++s) {
      if (w == fail_worker && s == fail_step && e == start_epoch) {
        log_info("worker ", w, " fails on purpose (", fail_mode, ") at step ", s);
        if (fail_mode == "kill") raise(SIGKILL);
        for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));  // stall: alive but silent
      }
      const auto a = std::chrono::steady_clock::now();
      TrainBatch b = client.next_train_batch(e, s);
      wait_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count();
      // The crops are a view of the message buffer: the batch held from the step before must not have
      // been overwritten by the two messages received since (the buffer pool hands out free blocks only).
      if (held.crops.defined())
        ALEXNET_CHECK(fnv1a(held.crops.data<uint8_t>(), held.crops.nbytes()) == held_hash, "worker ", w,
                      ": the crops of the batch before step ", s, " changed while it was held");
      ++batches;
      const std::vector<int64_t> want = sampler.batch(e, s, w);
      ALEXNET_CHECK(b.samples.size() == want.size(), "batch size ", b.samples.size(), " vs ", want.size());
      const uint8_t* crops = b.crops.data<uint8_t>();
      for (size_t k = 0; k < want.size(); ++k) {
        const std::string what = str_cat("worker ", w, " epoch ", e, " step ", s, " position ", k);
        const int64_t used = checker.expected_used(false, want[k]);
        ALEXNET_CHECK(b.samples[k] == used, what, ": sample ", b.samples[k], ", TrainSampler says ", want[k],
                      used != want[k] ? str_cat(" (replaced by ", used, ")") : std::string());
        if (local) ALEXNET_CHECK(b.labels.data<int64_t>()[k] == local->label(false, used), what, ": wrong label");
        const SampleAugment aug = draw_train_augment(config.train.seed, e, used, info.src_side, info.crop,
                                                     config.data.lighting_std, info.stats);
        ALEXNET_CHECK(same_augment(aug, b.augment[k]), what, ": augmentation differs from draw_train_augment");
        checker.check_crop(false, used, aug, info.crop, crops + k * plane, what);
        if (k == 0) {
          normalize_crop(crops, info.crop, aug, info.stats, config.data.mean == MeanKind::kImage, norm.data());
          ALEXNET_CHECK(std::memcmp(norm.data(), b.images.data<float>(), plane * sizeof(float)) == 0, what,
                        ": normalised image differs from normalize_crop of the crop");
        }
        if (out.is_open())
          out << "T " << e << " " << b.samples[k] << " " << b.labels.data<int64_t>()[k] << " " << aug.crop_x << " "
              << aug.crop_y << " " << aug.flip << " " << aug.lighting[0] << " " << aug.lighting[1] << " "
              << aug.lighting[2] << " " << fnv1a(crops + k * plane, plane) << "\n";
      }
      held_hash = fnv1a(b.crops.data<uint8_t>(), b.crops.nbytes());
      held = std::move(b);
      // As the worker does while its GPUs compute: the next batch may complete here, and is then handed
      // out by the next call from what progress() recorded.
      client.progress();
    }
    if (eval) {
      ++eval_passes;
      for (int64_t k = 0; k < client.num_eval_batches(); ++k) {
        const EvalData d = client.eval_batch(k);
        const EvalBatch want = EvalSampler(info.num_val, info.eval_batch, layout.num_workers()).batch(k, w);
        ALEXNET_CHECK(d.mask == want.mask, "worker ", w, " evaluation batch ", k, ": mask differs from EvalSampler");
        const uint8_t* crops = d.crops.data<uint8_t>();
        for (size_t j = 0; j < d.samples.size(); ++j) {
          const int64_t used = checker.expected_used(true, want.samples[j]);
          ALEXNET_CHECK(d.samples[j] == used, "worker ", w, " evaluation batch ", k, ": sample ", d.samples[j],
                        ", EvalSampler says ", want.samples[j]);
          if (d.mask[j]) ++eval_counts[static_cast<size_t>(d.samples[j])];
          for (int v = 0; v < d.views; ++v) {
            const size_t c = j * d.views + v;
            const SampleAugment aug = eval_augment(static_cast<EvalView>(d.views == 1 ? 0 : v), info.src_side, info.crop);
            ALEXNET_CHECK(same_augment(aug, d.augment[c]), "evaluation view ", v, " has the wrong crop");
            checker.check_crop(true, used, aug, info.crop, crops + c * plane, str_cat("evaluation batch ", k));
            if (out.is_open() && d.mask[j])
              out << "E " << d.samples[j] << " " << v << " " << fnv1a(crops + c * plane, plane) << "\n";
          }
        }
      }
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  client.shutdown();
  if (eval) {
    // Every validation image counted exactly once per pass, across all workers.
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, eval_counts.data(), static_cast<int>(eval_counts.size()), MPI_INT64_T,
                            MPI_SUM, layout.role_comm()),
              "MPI_Allreduce");
    for (size_t i = 0; i < eval_counts.size(); ++i)
      ALEXNET_CHECK(eval_counts[i] == eval_passes, "validation image ", i, " evaluated ", eval_counts[i],
                    " times in ", eval_passes, " passes");
  }
  if (w == 0 || args.has("--bench"))
    std::printf("fake_worker %d: %lld batches of %d in %.3f s (%.1f batches/s, %.1f MiB/s, %.3f s waiting)%s\n", w,
                static_cast<long long>(batches), info.batch, seconds, batches / seconds,
                batches * info.batch * plane / seconds / (1 << 20), wait_s, eval ? ", evaluation checked" : "");
  return 0;
}

int main_body(int argc, char** argv) {
  ArgParser args("fake_worker", "--config C [--set k=v] [options]");
  args.config_options();
  args.option("--loopback-services", "ranks below this run an in-process service over synthetic images");
  args.option("--synthetic", "loopback dataset: TRAIN,VAL,CLASSES (default 256,40,10)");
  args.option("--bad", "loopback: comma-separated training indices whose 'files' are corrupt");
  args.flag("--flat", "loopback: flat synthetic images (measures the transport, not the image work)");
  args.flag("--verify", "check crops against a local decode (the synthetic or the prepared dataset)");
  args.option("--epochs", "epochs to fetch (default 1)");
  args.option("--steps", "steps per epoch to fetch (default: all)");
  args.option("--start-epoch", "first epoch");
  args.option("--start-step", "first step of the first epoch");
  args.flag("--eval", "fetch and check an evaluation pass after every epoch");
  args.option("--out", "folder for worker<k>.txt, one line per crop");
  args.option("--fail-worker", "this worker index fails on purpose");
  args.option("--fail-step", "at this step of the first epoch (default 1)");
  args.option("--fail-mode", "kill (SIGKILL itself) or stall (alive but silent)");
  args.flag("--bench", "every worker prints its rate");
  args.flag("--stall-service", "loopback: the services never answer (the workers' timeout must end the job)");
  if (!args.parse(argc, argv)) return 0;
  const Config config = args.load_config();
  const int64_t loopback = args.get_int_or("--loopback-services", 0);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);

  std::unique_ptr<SampleProducer> local;
  if (loopback > 0) {
    std::vector<int64_t> sizes = {256, 40, 10};
    if (args.has("--synthetic")) {
      std::stringstream ss(args.get("--synthetic"));
      std::string item;
      for (size_t i = 0; i < 3 && std::getline(ss, item, ','); ++i) sizes[i] = std::stoll(item);
    }
    local = std::make_unique<testing::SyntheticProducer>(sizes[0], sizes[1], static_cast<int>(sizes[2]),
                                                         parse_list(args.get_or("--bad", "")), args.has("--flat"));
  }
  const JobRole role = loopback > 0 && rank < loopback ? JobRole::kService : JobRole::kWorker;
  JobLayout layout = JobLayout::create(role);
  if (role == JobRole::kService) {
    if (layout.served_workers().empty()) return 0;
    if (args.has("--stall-service"))
      for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));  // alive but never answering
    DataService service(layout, *local, ServiceOptions::from_config(config));
    const ServiceStats stats = service.run();
    log_info("data service ", layout.index(), " done: ", stats.summary());
    return 0;
  }
  if (loopback == 0 && args.has("--verify")) local = open_prepared_producer(config.data);
  return run_worker(layout, config, args, args.has("--verify") ? local.get() : nullptr);
}

}  // namespace
}  // namespace alexnet

int main(int argc, char** argv) {
  return alexnet::run_mpi_process("fake_worker", argc, argv, alexnet::main_body);
}
