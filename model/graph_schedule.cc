#include "model/graph_schedule.h"

#include <utility>

namespace alexnet {

void GraphSchedule::set_enabled(bool on) {
  enabled_ = on;
  if (!on) have_graph_ = have_last_ = false;
}

GraphSchedule::Action GraphSchedule::next(const PassKey& key) {
  if (!enabled_ || !refused_.empty()) return Action::kStreams;
  if (have_graph_ && graph_ == key) return Action::kReplay;
  // The first pass of a kind allocates its buffers, grows the workspaces and has cuDNN search, none of
  // which may happen inside a capture: it runs stream by stream, and so does the next if the first changed
  // the counters in its key.
  if (have_last_ && last_ == key) return Action::kCapture;
  have_last_ = true;
  last_ = key;
  return Action::kStreams;
}

void GraphSchedule::captured(const PassKey& key) {
  have_graph_ = true;
  graph_ = key;
}

void GraphSchedule::refuse(std::string why) {
  refused_ = why.empty() ? "the capture failed" : std::move(why);
  have_graph_ = false;
}

}  // namespace alexnet
