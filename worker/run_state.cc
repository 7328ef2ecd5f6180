#include "worker/run_state.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "checkpoint/h5file.h"
#include "core/error.h"
#include "core/log.h"

namespace alexnet {
namespace fs = std::filesystem;
namespace {

constexpr const char* kLatest = "latest";

Tensor i64(int64_t v) {
  Tensor t = Tensor::zeros({1}, DType::kI64);
  *t.data<int64_t>() = v;
  return t;
}
Tensor f64(double v) {
  Tensor t = Tensor::zeros({1}, DType::kF64);
  *t.data<double>() = v;
  return t;
}

// The step of "step-00001200.h5", or -1.
int64_t step_of(const std::string& name) {
  if (name.size() < 9 || name.rfind("step-", 0) != 0 || name.substr(name.size() - 3) != ".h5") return -1;
  const std::string digits = name.substr(5, name.size() - 8);
  if (digits.empty() || !std::all_of(digits.begin(), digits.end(), ::isdigit)) return -1;
  return std::stoll(digits);
}

}  // namespace

void put_train_state(const TrainState& s, CheckpointData& d) {
  d.extra_tensors["/train/step"] = i64(s.step);
  d.extra_tensors["/train/epoch"] = i64(s.epoch);
  d.extra_tensors["/train/epoch_step"] = i64(s.epoch_step);
  d.extra_tensors["/train/seed"] = i64(static_cast<int64_t>(s.seed));
  d.extra_tensors["/train/global_batch"] = i64(s.global_batch);
  d.extra_tensors["/train/workers"] = i64(s.workers);
  d.extra_tensors["/train/schedule/drops"] = i64(s.schedule.drops);
  d.extra_tensors["/train/schedule/best_error"] = f64(s.schedule.best_error);
  d.extra_tensors["/train/schedule/bad_evaluations"] = i64(s.schedule.bad_evaluations);
  d.extra_tensors["/train/interval/loss"] = f64(s.interval.loss);
  d.extra_tensors["/train/interval/correct"] = f64(s.interval.correct);
  d.extra_tensors["/train/interval/images"] = f64(s.interval.images);
  d.extra_tensors["/train/interval/steps"] = i64(s.interval.steps);
  d.extra_strings["/train/metrics"] = s.history;
}

TrainState read_train_state(const std::string& path) {
  H5File f(path, H5File::Mode::kRead);
  ALEXNET_CHECK(f.exists("/train") && f.is_group("/train"), "checkpoint '", path,
                "' has no /train group (a weights-only file cannot be resumed; use it with alexnet-tool)");
  auto geti = [&](const std::string& name) {
    ALEXNET_CHECK(f.exists(name), "checkpoint '", path, "' has no ", name);
    return *f.read_tensor_as(name, DType::kI64).data<int64_t>();
  };
  auto getd = [&](const std::string& name) {
    ALEXNET_CHECK(f.exists(name), "checkpoint '", path, "' has no ", name);
    return *f.read_tensor_as(name, DType::kF64).data<double>();
  };
  TrainState s;
  s.step = geti("/train/step");
  s.epoch = geti("/train/epoch");
  s.epoch_step = geti("/train/epoch_step");
  s.seed = static_cast<uint64_t>(geti("/train/seed"));
  s.global_batch = geti("/train/global_batch");
  s.workers = geti("/train/workers");
  s.schedule.drops = static_cast<int>(geti("/train/schedule/drops"));
  s.schedule.best_error = getd("/train/schedule/best_error");
  s.schedule.bad_evaluations = static_cast<int>(geti("/train/schedule/bad_evaluations"));
  s.interval.loss = getd("/train/interval/loss");
  s.interval.correct = getd("/train/interval/correct");
  s.interval.images = getd("/train/interval/images");
  s.interval.steps = geti("/train/interval/steps");
  ALEXNET_CHECK(f.exists("/train/metrics"), "checkpoint '", path, "' has no /train/metrics");
  s.history = f.read_string("/train/metrics");
  ALEXNET_CHECK(s.step >= 0 && s.epoch >= 0 && s.epoch_step >= 0, "checkpoint '", path,
                "': negative step counters in /train");
  return s;
}

std::string model_difference(const Config& checkpoint, const Config& current) {
  const auto a = flatten_config(checkpoint), b = flatten_config(current);
  for (const auto& [key, value] : a) {
    if (key.rfind("model.", 0) != 0) continue;
    auto it = b.find(key);
    if (it != b.end() && it->second != value)
      return str_cat(key, ": the checkpoint's model has ", value, ", this config ", it->second);
  }
  return "";
}

CheckpointFolder::CheckpointFolder(std::string dir, int keep) : dir_(std::move(dir)), keep_(keep) {}

std::string CheckpointFolder::path_for_step(int64_t step) const {
  char name[64];
  std::snprintf(name, sizeof name, "step-%08lld.h5", static_cast<long long>(step));
  return (fs::path(dir_) / name).string();
}

std::string CheckpointFolder::save(const CheckpointData& data, int64_t step) const {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  ALEXNET_CHECK(!ec, "cannot create checkpoint folder '", dir_, "': ", ec.message());
  const std::string path = path_for_step(step);
  write_checkpoint(path, data);
  write_text_atomically((fs::path(dir_) / kLatest).string(), fs::path(path).filename().string() + "\n");
  std::vector<std::pair<int64_t, fs::path>> files;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const int64_t s = step_of(entry.path().filename().string());
    if (s >= 0) files.emplace_back(s, entry.path());
  }
  std::sort(files.begin(), files.end());
  // Keeps the newest `keep` files by step; the one just written is always among them.
  for (size_t i = 0; i + static_cast<size_t>(keep_) < files.size(); ++i)
    if (files[i].second != fs::path(path)) fs::remove(files[i].second, ec);
  return path;
}

std::vector<std::string> CheckpointFolder::candidates() const {
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) return out;
  std::ifstream marker((fs::path(dir_) / kLatest).string());
  std::string latest;
  if (marker.good()) std::getline(marker, latest);
  if (!latest.empty() && step_of(latest) >= 0 && fs::exists(fs::path(dir_) / latest, ec))
    out.push_back((fs::path(dir_) / latest).string());
  std::vector<std::pair<int64_t, std::string>> files;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const int64_t s = step_of(entry.path().filename().string());
    if (s >= 0) files.emplace_back(s, entry.path().string());
  }
  std::sort(files.rbegin(), files.rend());
  for (const auto& [s, p] : files)
    if (std::find(out.begin(), out.end(), p) == out.end()) out.push_back(p);
  return out;
}

ResumePoint open_resume_point(const std::string& path) {
  std::error_code ec;
  ALEXNET_CHECK(fs::is_regular_file(path, ec), "checkpoint '", path, "' does not exist or is not a file");
  verify_checkpoint(path);
  ResumePoint r;
  r.path = path;
  r.data = read_checkpoint(path);
  r.state = read_train_state(path);
  r.config = load_config_text(r.data.config_yaml, path + " /config");
  return r;
}

std::optional<ResumePoint> find_resume_point(const std::string& resume, const CheckpointFolder& folder) {
  if (resume != "auto") return open_resume_point(resume);
  const std::vector<std::string> files = folder.candidates();
  if (files.empty()) {
    log_info("--resume auto: no checkpoint in ", folder.dir(), "; starting from the beginning");
    return std::nullopt;
  }
  for (size_t i = 0; i < files.size(); ++i) {
    try {
      return open_resume_point(files[i]);
    } catch (const Error& e) {
      if (i + 1 < files.size())
        log_warn("checkpoint ", files[i], " is damaged and is skipped: ", e.what(), "; falling back to ", files[i + 1]);
      else
        log_warn("checkpoint ", files[i], " is damaged and is skipped: ", e.what());
    }
  }
  ALEXNET_FAIL("--resume auto: every checkpoint in ", folder.dir(), " is damaged (", files.size(),
               " tried; see the warnings above); move them away to start from the beginning");
}

}  // namespace alexnet
