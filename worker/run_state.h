// What a training run saves beyond checkpoint layout v1 so that a resume continues exactly (the /train
// group, docs/checkpoint.md), and the run's checkpoint folder: step-numbered files, a `latest` marker
// written only after its file is complete, the newest K kept, and the choice of the file to resume from.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "core/config.h"
#include "worker/schedule.h"

namespace alexnet {

// Sums over the steps since the last progress record (restored on resume, so the records after a
// resume equal those of an uninterrupted run).
struct IntervalSums {
  double loss = 0;      // sum of the per-step global mean losses
  double correct = 0;   // training top-1 hits
  double images = 0;
  int64_t steps = 0;
};

struct TrainState {
  int64_t step = 0;        // steps done: the next step's global index (dropout key)
  int64_t epoch = 0;       // data cursor: epoch and step within it of the next batch
  int64_t epoch_step = 0;
  uint64_t seed = 0;       // train.seed: the key of every random draw (init, shuffle, augmentation, dropout)
  int64_t global_batch = 0;
  int64_t workers = 0;     // ranks that wrote it (information: the weights do not depend on it)
  ScheduleState schedule;
  IntervalSums interval;
  std::string history;     // metrics so far: JSON lines (training records and evaluations, no timings)
};

// Adds the /train group to a checkpoint's data.
void put_train_state(const TrainState& state, CheckpointData& data);
// Reads the /train group; errors name the file and the missing item.
TrainState read_train_state(const std::string& path);

// The first key under "model." whose value differs between the two configs, as
// "model.norm: checkpoint lrn, config batchnorm"; empty when the models are the same.
std::string model_difference(const Config& checkpoint, const Config& current);

class CheckpointFolder {
 public:
  CheckpointFolder(std::string dir, int keep);
  const std::string& dir() const { return dir_; }
  // <dir>/step-00001200.h5
  std::string path_for_step(int64_t step) const;
  // Writes the checkpoint atomically, then the `latest` marker (atomically, naming the file), then
  // removes all but the newest `keep` step files. Returns the path.
  std::string save(const CheckpointData& data, int64_t step) const;
  // Files to try for `--resume auto`, newest first: the one `latest` names, then every step file by
  // descending step (a file written after the marker is not trusted over it, but is still a fallback).
  std::vector<std::string> candidates() const;

 private:
  std::string dir_;
  int keep_;
};

struct ResumePoint {
  std::string path;
  CheckpointData data;
  TrainState state;
  Config config;  // the checkpoint's /config
};

// Opens `path` for a resume: checksums verified, layout and /train read. Throws naming what is wrong.
ResumePoint open_resume_point(const std::string& path);

// `--resume auto`: the newest intact checkpoint of the folder, falling back (with a warning naming the
// damaged file and why) to older ones; nullopt when the folder holds none. `--resume PATH`: that file or
// an error. Only rank 0 calls this.
std::optional<ResumePoint> find_resume_point(const std::string& resume, const CheckpointFolder& folder);

}  // namespace alexnet
