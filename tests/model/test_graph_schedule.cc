// GraphSchedule (model/graph_schedule.h): which training passes AlexNet captures as a CUDA graph, which it
// replays and which run stream by stream. Host logic only: runs on every build.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "model/graph_schedule.h"

namespace alexnet {
namespace {

using Action = GraphSchedule::Action;

PassKey key(int64_t n, uint64_t ws = 1, uint64_t resources = 1) {
  PassKey k;
  k.n = n;
  k.dropout = true;
  k.ws_generation = ws;
  k.resource_generation = resources;
  return k;
}

// The actions for a sequence of passes, each captured successfully when asked.
std::vector<Action> run(GraphSchedule& s, const std::vector<PassKey>& passes) {
  std::vector<Action> out;
  for (const PassKey& k : passes) {
    out.push_back(s.next(k));
    if (out.back() == Action::kCapture) s.captured(k);
  }
  return out;
}

TEST(GraphSchedule, OffRunsEveryPassStreamByStream) {
  GraphSchedule s;
  EXPECT_EQ(run(s, {key(8), key(8), key(8)}), std::vector<Action>(3, Action::kStreams));
}

// The first pass of a kind allocates (its counters change during it): the next is run stream by stream
// too, the one after it, with the same counters, is captured, and later ones replay.
TEST(GraphSchedule, CapturesTheFirstPassLikeTheOneBeforeAndReplaysIt) {
  GraphSchedule s;
  s.set_enabled(true);
  EXPECT_EQ(run(s, {key(8, 1), key(8, 5), key(8, 5), key(8, 5), key(8, 5)}),
            (std::vector<Action>{Action::kStreams, Action::kStreams, Action::kCapture, Action::kReplay,
                                 Action::kReplay}));
}

// Any change of the key (batch size, input kind, dropout, the in-place batch, the seed, a reallocated
// buffer or a grown workspace) is a pass stream by stream before a new capture; going back does not
// replay a graph of the old key, whose buffers may be gone.
TEST(GraphSchedule, AChangedKeyIsRunOnceStreamByStreamThenCapturedAgain) {
  std::vector<PassKey> changed(7, key(8, 5, 5));
  changed[0].n = 5;
  changed[1].crops = true;
  changed[2].dropout = false;
  int buffer = 0;
  changed[3].input = &buffer;
  changed[4].seed = 2;
  changed[5].ws_generation = 6;
  changed[6].resource_generation = 6;
  for (const PassKey& other : changed) {
    GraphSchedule s;
    s.set_enabled(true);
    const PassKey base = key(8, 5, 5);
    ASSERT_EQ(run(s, {base, base, base}), (std::vector<Action>{Action::kStreams, Action::kCapture, Action::kReplay}));
    EXPECT_EQ(run(s, {other, other, other, base, base}),
              (std::vector<Action>{Action::kStreams, Action::kCapture, Action::kReplay, Action::kStreams,
                                   Action::kCapture}));
  }
}

TEST(GraphSchedule, ARefusalIsForGood) {
  GraphSchedule s;
  s.set_enabled(true);
  ASSERT_EQ(run(s, {key(8), key(8)}), (std::vector<Action>{Action::kStreams, Action::kCapture}));
  s.refuse("cudaStreamEndCapture: cudaErrorStreamCaptureInvalidated");
  EXPECT_EQ(s.refused(), "cudaStreamEndCapture: cudaErrorStreamCaptureInvalidated");
  EXPECT_EQ(run(s, {key(8), key(8), key(8)}), std::vector<Action>(3, Action::kStreams));
  GraphSchedule t;
  t.set_enabled(true);
  t.refuse("");
  EXPECT_EQ(t.refused(), "the capture failed");  // never an empty reason: empty means "not refused"
}

TEST(GraphSchedule, TurningItOffDropsTheGraph) {
  GraphSchedule s;
  s.set_enabled(true);
  ASSERT_EQ(run(s, {key(8), key(8), key(8)}), (std::vector<Action>{Action::kStreams, Action::kCapture, Action::kReplay}));
  s.set_enabled(false);
  EXPECT_EQ(s.next(key(8)), Action::kStreams);
  s.set_enabled(true);
  EXPECT_EQ(run(s, {key(8), key(8)}), (std::vector<Action>{Action::kStreams, Action::kCapture}));
}

}  // namespace
}  // namespace alexnet
