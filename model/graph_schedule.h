// When AlexNet runs a training pass as a CUDA graph (parallel.cuda_graphs): the decision on its own, apart
// from CUDA, so that every build tests it. A pass has a key, what a captured graph depends on; a graph is
// captured from a pass whose kind ran once before with nothing replaced since, and replayed while the key
// stays the same.
#pragma once

#include <cstdint>
#include <string>

namespace alexnet {

struct PassKey {
  int64_t n = 0;                // batch size
  bool crops = false;           // uint8 crops (else float images)
  bool dropout = false;
  const void* input = nullptr;  // the caller's batch read in place on tower 0's GPU (else null)
  uint64_t seed = 0;            // PassOptions::seed: the dropout key is a kernel argument
  // Counters of the device buffers allocated for the model (scratch, the input mean) and of the CUDA
  // layers' workspaces grown and algorithm searches: a change means a captured graph may name freed memory,
  // and that the pass allocated or searched, which no capture may do.
  uint64_t ws_generation = 0, resource_generation = 0;
  bool operator==(const PassKey&) const = default;  // every field: a new one cannot be left out
};

class GraphSchedule {
 public:
  enum class Action {
    kStreams,  // run the pass stream by stream
    kCapture,  // capture it (then captured() or refuse()), and launch the graph
    kReplay,   // launch the graph captured before
  };
  // Off by default; turning it off drops the graph (a refusal stays).
  void set_enabled(bool on);
  bool enabled() const { return enabled_; }
  // What to do with a pass of `key` (its counters read after its inputs were staged, before its work):
  // kReplay when the graph is of this key; kCapture when the pass before ran stream by stream with this
  // same key, so it allocated and searched nothing; else kStreams, as every pass when off or refused.
  Action next(const PassKey& key);
  // The capture of `key` that next() asked for succeeded.
  void captured(const PassKey& key);
  // Capture is given up for good (CUDA refused it): every later pass runs stream by stream.
  void refuse(std::string why);
  const std::string& refused() const { return refused_; }

 private:
  bool enabled_ = false;
  std::string refused_;
  bool have_graph_ = false, have_last_ = false;
  PassKey graph_, last_;  // the graph's key; the last pass run stream by stream
};

}  // namespace alexnet
