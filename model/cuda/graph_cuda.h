// A training pass's device work captured once as a CUDA graph and replayed as one launch: the host then
// queues one graph instead of a few hundred kernels, copies and library calls a step.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

struct CUstream_st;
struct CUevent_st;
struct CUgraph_st;
struct CUgraphExec_st;

namespace alexnet {

// One capture at a time, from one host thread. The streams are the towers' (blocking streams of one or two
// devices), fixed for the object's life; `origin` is where the capture starts and ends and where the graph
// is launched.
class CudaPassGraph {
 public:
  using Stream = CUstream_st*;
  // others: (stream, its device). marks_per_stream: the marks a capture makes on each stream at most, whose
  // events are created here, before any capture (a capture that needs more creates them as it goes).
  CudaPassGraph(Stream origin, int origin_device, const std::vector<std::pair<Stream, int>>& others,
                int marks_per_stream);
  ~CudaPassGraph();  // waits for the launches in flight before destroying the graph and the events
  CudaPassGraph(const CudaPassGraph&) = delete;
  CudaPassGraph& operator=(const CudaPassGraph&) = delete;

  // Drops the graph and begins capturing what this thread queues on the origin and on the other streams:
  // they are forked from the origin at once, so each is part of the capture from its first operation.
  // Thread-local capture mode: a call of this thread that is illegal while capturing (an allocation, a
  // synchronisation, work on the legacy stream) fails and invalidates the capture instead of running. The
  // tower streams are blocking streams, so work on a device's legacy stream from any thread during the
  // capture would fail too (cudaErrorStreamCaptureImplicit); no other thread of ours uses CUDA.
  void begin();
  // While capturing: an event recorded into the graph (an external event node) where the work queued so far
  // on `stream` (one of the streams) ends; in each launch it completes when that work has. Returns its index.
  int mark(Stream stream);
  // Joins the other streams into the origin, ends the capture and instantiates the graph. Returns false and
  // says why (CUDA's error) when the capture was invalidated or the graph cannot be instantiated; no
  // stream is capturing afterwards either way (else an Error: the streams are unusable).
  bool end(std::string* why);
  // Ends a capture cut short by an error (nothing captured runs). Never throws; returns false if a stream
  // could not be taken out of capture (the streams are then unusable).
  bool abandon() noexcept;

  // Queues the graph on the origin stream after the work queued so far there and on the other streams, and
  // makes the other streams' later work wait for it. end() must have succeeded.
  void launch();
  // The event of mark `index` (a cudaEvent_t), for consumers after launch().
  void* event(int index) const;
  // Makes `stream` (of `device`; not one of the graph's) wait, on the device, for mark `index` of the last
  // launch: what the graph produced up to there can be read while the rest of it runs.
  void wait(int index, Stream stream, int device) const;
  // Nodes of the instantiated graph (kernels, copies, library calls' kernels, event records), for the log.
  size_t nodes() const { return nodes_; }

 private:
  struct StreamEvents {
    Stream stream = nullptr;
    int device = 0;
    CUevent_st* fork = nullptr;  // recorded on the origin (so on its device); others only
    CUevent_st* join = nullptr;  // recorded on this stream; others only
    std::vector<CUevent_st*> marks;
    size_t used = 0;  // marks taken by the running capture
  };
  void destroy_graph() noexcept;
  bool out_of_capture() const noexcept;

  std::vector<StreamEvents> streams_;            // [0]: the origin
  std::vector<std::pair<size_t, size_t>> marks_;  // mark i: (slot in streams_, index in its marks)
  CUgraph_st* graph_ = nullptr;
  CUgraphExec_st* exec_ = nullptr;
  size_t nodes_ = 0;
  bool capturing_ = false;
};

}  // namespace alexnet
