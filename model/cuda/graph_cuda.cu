// CudaPassGraph: stream capture of a training pass across the towers' streams, instantiation and replay.
#include "model/cuda/graph_cuda.h"

#include <cuda_runtime.h>

#include "core/cuda_check.h"
#include "core/error.h"
#include "model/cuda/layers_cuda.h"

namespace alexnet {
namespace {

cudaEvent_t new_event(int device) {
  ALEXNET_CUDA_CHECK(cudaSetDevice(device));
  cudaEvent_t e = nullptr;
  ALEXNET_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  return e;
}

std::string failure(const char* call, cudaError_t err) {
  return str_cat(call, ": ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ")");
}

}  // namespace

CudaPassGraph::CudaPassGraph(Stream origin, int origin_device, const std::vector<std::pair<Stream, int>>& others,
                             int marks_per_stream) {
  ALEXNET_ASSERT(origin, "a pass graph needs the origin stream of a tower (not the legacy stream)");
  streams_.push_back({origin, origin_device});
  for (const auto& [stream, device] : others) {
    ALEXNET_ASSERT(stream && stream != origin, "a pass graph's other streams must be distinct tower streams");
    StreamEvents e{stream, device};
    e.fork = new_event(origin_device);
    e.join = new_event(device);
    streams_.push_back(e);
  }
  for (StreamEvents& s : streams_)
    for (int i = 0; i < marks_per_stream; ++i) s.marks.push_back(new_event(s.device));
}

CudaPassGraph::~CudaPassGraph() {
  if (capturing_) abandon();
  if (exec_) {
    cudaSetDevice(streams_[0].device);
    cudaStreamSynchronize(streams_[0].stream);
  }
  destroy_graph();
  for (StreamEvents& s : streams_) {
    cudaSetDevice(s.device);
    if (s.fork) cudaEventDestroy(s.fork);
    if (s.join) cudaEventDestroy(s.join);
    for (cudaEvent_t e : s.marks) cudaEventDestroy(e);
  }
}

void CudaPassGraph::destroy_graph() noexcept {
  if (exec_) cudaGraphExecDestroy(exec_);
  if (graph_) cudaGraphDestroy(graph_);
  exec_ = nullptr;
  graph_ = nullptr;
  nodes_ = 0;
}

void CudaPassGraph::begin() {
  ALEXNET_ASSERT(!capturing_, "a pass graph capture began twice");
  // The last launch may still run: its executable graph goes only after the origin (and, through the join
  // of launch(), every tower stream) has finished it.
  if (exec_) ALEXNET_CUDA_CHECK(cuda_wait_stream(streams_[0].stream));
  destroy_graph();
  marks_.clear();
  for (StreamEvents& s : streams_) s.used = 0;
  const StreamEvents& o = streams_[0];
  ALEXNET_CUDA_CHECK(cudaSetDevice(o.device));
  ALEXNET_CUDA_CHECK(cudaStreamBeginCapture(o.stream, cudaStreamCaptureModeThreadLocal));
  capturing_ = true;
  for (size_t i = 1; i < streams_.size(); ++i) {
    const StreamEvents& s = streams_[i];
    ALEXNET_CUDA_CHECK(cudaSetDevice(o.device));
    ALEXNET_CUDA_CHECK(cudaEventRecord(s.fork, o.stream));
    ALEXNET_CUDA_CHECK(cudaSetDevice(s.device));
    ALEXNET_CUDA_CHECK(cudaStreamWaitEvent(s.stream, s.fork, 0));
  }
}

int CudaPassGraph::mark(Stream stream) {
  ALEXNET_ASSERT(capturing_, "a pass graph mark outside a capture");
  for (size_t slot = 0; slot < streams_.size(); ++slot) {
    StreamEvents& s = streams_[slot];
    if (s.stream != stream) continue;
    if (s.used == s.marks.size()) s.marks.push_back(new_event(s.device));
    ALEXNET_CUDA_CHECK(cudaSetDevice(s.device));
    ALEXNET_CUDA_CHECK(cudaEventRecordWithFlags(s.marks[s.used], s.stream, cudaEventRecordExternal));
    marks_.emplace_back(slot, s.used++);
    return static_cast<int>(marks_.size() - 1);
  }
  ALEXNET_FAIL("a pass graph mark on a stream that is not one of the graph's");
}

bool CudaPassGraph::out_of_capture() const noexcept {
  for (const StreamEvents& s : streams_) {
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(s.stream, &status) != cudaSuccess || status != cudaStreamCaptureStatusNone) {
      cudaGetLastError();
      return false;
    }
  }
  return true;
}

bool CudaPassGraph::end(std::string* why) {
  ALEXNET_ASSERT(capturing_, "a pass graph capture ended without beginning");
  const StreamEvents& o = streams_[0];
  cudaError_t err = cudaSuccess;
  const char* call = "";
  for (size_t i = 1; i < streams_.size() && err == cudaSuccess; ++i) {
    const StreamEvents& s = streams_[i];
    call = "joining a tower stream into the capture";
    if ((err = cudaSetDevice(s.device)) != cudaSuccess) break;
    if ((err = cudaEventRecord(s.join, s.stream)) != cudaSuccess) break;
    if ((err = cudaSetDevice(o.device)) != cudaSuccess) break;
    err = cudaStreamWaitEvent(o.stream, s.join, 0);
  }
  if (err != cudaSuccess) {
    *why = failure(call, err);
    ALEXNET_CHECK(abandon(), "a tower stream stayed in CUDA graph capture after ", *why);
    return false;
  }
  cudaSetDevice(o.device);
  cudaGraph_t graph = nullptr;
  err = cudaStreamEndCapture(o.stream, &graph);
  capturing_ = false;
  if (err != cudaSuccess || !graph) {
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    *why = failure("cudaStreamEndCapture", err);
    ALEXNET_CHECK(out_of_capture(), "a tower stream stayed in CUDA graph capture after ", *why);
    return false;
  }
  graph_ = graph;
  size_t nodes = 0;
  if (cudaGraphGetNodes(graph_, nullptr, &nodes) != cudaSuccess) cudaGetLastError();
  err = cudaGraphInstantiate(&exec_, graph_, 0);
  if (err != cudaSuccess) {
    exec_ = nullptr;
    cudaGetLastError();
    destroy_graph();
    *why = failure("cudaGraphInstantiate", err);
    return false;
  }
  nodes_ = nodes;
  // Uploaded now, so the first launch does not pay for it.
  err = cudaGraphUpload(exec_, o.stream);
  if (err != cudaSuccess) {
    cudaGetLastError();
    destroy_graph();
    *why = failure("cudaGraphUpload", err);
    return false;
  }
  return true;
}

bool CudaPassGraph::abandon() noexcept {
  if (!capturing_) return out_of_capture();
  const StreamEvents& o = streams_[0];
  // Errors are expected here (the capture is usually invalidated already); only the end state counts.
  for (size_t i = 1; i < streams_.size(); ++i) {
    cudaSetDevice(streams_[i].device);
    cudaEventRecord(streams_[i].join, streams_[i].stream);
    cudaSetDevice(o.device);
    cudaStreamWaitEvent(o.stream, streams_[i].join, 0);
  }
  cudaSetDevice(o.device);
  cudaGraph_t graph = nullptr;
  cudaStreamEndCapture(o.stream, &graph);
  if (graph) cudaGraphDestroy(graph);
  capturing_ = false;
  cudaGetLastError();
  return out_of_capture();
}

void CudaPassGraph::launch() {
  ALEXNET_ASSERT(exec_ && !capturing_, "a pass graph launched before a capture succeeded");
  const StreamEvents& o = streams_[0];
  // The graph forks from the origin only: what the host queued before on the other towers' streams (their
  // uploads, the last SGD step of their parameters) must come first.
  for (size_t i = 1; i < streams_.size(); ++i) cuda_stream_wait(o.stream, o.device, streams_[i].stream, streams_[i].device);
  ALEXNET_CUDA_CHECK(cudaSetDevice(o.device));
  ALEXNET_CUDA_CHECK(cudaGraphLaunch(exec_, o.stream));
  for (size_t i = 1; i < streams_.size(); ++i) cuda_stream_wait(streams_[i].stream, streams_[i].device, o.stream, o.device);
}

void* CudaPassGraph::event(int index) const {
  ALEXNET_ASSERT(index >= 0 && static_cast<size_t>(index) < marks_.size(), "pass graph mark ", index, " of ",
                 marks_.size());
  const auto& [slot, i] = marks_[index];
  return streams_[slot].marks[i];
}

void CudaPassGraph::wait(int index, Stream stream, int device) const {
  ALEXNET_ASSERT(exec_ && !capturing_, "a wait for a pass graph's mark before a launch");
  ALEXNET_CUDA_CHECK(cudaSetDevice(device));
  ALEXNET_CUDA_CHECK(cudaStreamWaitEvent(stream, static_cast<cudaEvent_t>(event(index)), 0));
}

}  // namespace alexnet
