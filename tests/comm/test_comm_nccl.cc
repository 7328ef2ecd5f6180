// NcclCommunicator and GradBuckets on GPUs (label gpu), as `mpirun -np N test_comm_nccl`: N ranks of one
// node, rank r on GPU r. The reductions need a GPU per rank and skip otherwise (with one rank they run
// on GPU 0: the calls, the stream ordering and the bucketing, though a reduction over one rank changes
// nothing); with two or more ranks the refusal of two ranks on one GPU runs on any GPU count, none
// included. Device buffers are poisoned (NaN) before their values are written; the values are written
// on a stream of the test's own, which the communicator must wait for.
#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "comm/grad_buckets.h"
#include "comm/nccl_communicator.h"
#include "comm/placement.h"
#include "core/cuda_check.h"
#include "core/device.h"
#include "core/error.h"
#include "tests/comm/comm_values.h"
#include "tests/comm/mpi_test_main.h"

namespace alexnet {
namespace {

// Device memory for `n` floats, written from pinned host memory on `stream` (asynchronously).
class DeviceFloats {
 public:
  DeviceFloats(size_t n, cudaStream_t stream) : n_(n), stream_(stream) {
    ALEXNET_CUDA_CHECK(cudaMalloc(&dev_, std::max<size_t>(n, 1) * sizeof(float)));
    ALEXNET_CUDA_CHECK(cudaMallocHost(&host_, std::max<size_t>(n, 1) * sizeof(float)));
  }
  ~DeviceFloats() {
    cudaFree(dev_);
    cudaFreeHost(host_);
  }
  DeviceFloats(const DeviceFloats&) = delete;
  DeviceFloats& operator=(const DeviceFloats&) = delete;
  float* data() { return dev_; }
  size_t size() const { return n_; }
  // Poisons the device buffer (NaN) and waits for that; then queues the copy of values[i] = f(i) on the
  // stream without waiting for it.
  template <typename F>
  void write(F f) {
    ALEXNET_CUDA_CHECK(cudaMemset(dev_, 0xFF, n_ * sizeof(float)));
    ALEXNET_CUDA_CHECK(cudaDeviceSynchronize());
    for (size_t i = 0; i < n_; ++i) host_[i] = f(i);
    ALEXNET_CUDA_CHECK(cudaMemcpyAsync(dev_, host_, n_ * sizeof(float), cudaMemcpyHostToDevice, stream_));
  }
  std::vector<float> read() const {
    std::vector<float> v(n_);
    ALEXNET_CUDA_CHECK(cudaDeviceSynchronize());
    ALEXNET_CUDA_CHECK(cudaMemcpy(v.data(), dev_, n_ * sizeof(float), cudaMemcpyDeviceToHost));
    return v;
  }

 private:
  size_t n_;
  cudaStream_t stream_;
  float* dev_ = nullptr;
  float* host_ = nullptr;
};

class CommNccl : public ::testing::Test {
 protected:
  void SetUp() override {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    gpus_ = cuda_device_count();
  }
  void TearDown() override {
    if (stream_) cudaStreamDestroy(stream_);
  }
  // The communicator of the reduction tests: rank r on GPU r, values written on stream_.
  std::unique_ptr<NcclCommunicator> one_gpu_per_rank() {
    ALEXNET_CUDA_CHECK(cudaSetDevice(rank_));
    ALEXNET_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    return std::make_unique<NcclCommunicator>(MPI_COMM_WORLD, rank_, stream_);
  }
  bool gpu_per_rank() const { return size_ <= gpus_; }
  int rank_ = 0, size_ = 1, gpus_ = 0;
  cudaStream_t stream_ = nullptr;
};

#define SKIP_UNLESS_GPU_PER_RANK()                                                                           \
  if (!gpu_per_rank())                                                                                       \
  GTEST_SKIP() << size_ << " rank(s), " << gpus_ << " GPU(s) (" << device_summary() << "): reductions need one " \
               << "GPU per rank"

TEST_F(CommNccl, TwoRanksOnOneGpuAreRefused) {
  if (size_ < 2) GTEST_SKIP() << "needs two or more ranks";
  // Every rank asks for GPU 0: each must throw (no rank may hang in NCCL's initialisation). The check
  // comes before any CUDA or NCCL call, so it runs without a GPU too.
  try {
    NcclCommunicator comm(MPI_COMM_WORLD, 0);
    ADD_FAILURE() << "rank " << rank_ << ": two ranks on GPU 0 were not refused";
  } catch (const Error& e) {
    const std::string m = e.what();
    // "GPU 0" without a device, "the GPU at PCI 0000:xx:00.0" with one (comm/placement.h).
    EXPECT_NE(m.find("ranks 0 and 1 of the gradient communicator both use "), std::string::npos) << m;
    EXPECT_TRUE(m.find("both use GPU 0 of one host") != std::string::npos ||
                m.find("both use the GPU at PCI " + pci_location_str(cuda_device_pci_id(0))) != std::string::npos)
        << m;
    EXPECT_NE(m.find("NCCL needs one GPU per rank"), std::string::npos) << m;
  }
  // MPI still works afterwards.
  int one = 1, sum = 0;
  MPI_Allreduce(&one, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  EXPECT_EQ(sum, size_);
}

TEST_F(CommNccl, ExactSumAndAverage) {
  SKIP_UNLESS_GPU_PER_RANK();
  auto comm = one_gpu_per_rank();
  EXPECT_NE(comm->describe().find("GPU " + std::to_string(rank_)), std::string::npos) << comm->describe();
  EXPECT_TRUE(comm->device_buffers());
  // Two communicators on one GPU (devices_per_rank 1) rely on NCCL ordering their kernels by issue order.
  const char* order = std::getenv("NCCL_LAUNCH_ORDER_IMPLICIT");
  EXPECT_TRUE(order != nullptr && *order != '\0') << "NCCL_LAUNCH_ORDER_IMPLICIT is not set after the first communicator";
  // ncclAvg may scale each rank's value by 1/size before summing: exact for a power-of-two size, else
  // within a few roundings of the summed magnitudes (not of the result, which can cancel to 0).
  const bool power_of_two = (size_ & (size_ - 1)) == 0;
  for (size_t n : {size_t{1}, size_t{1000}, size_t{1000003}}) {
    DeviceFloats v(n, stream_);
    v.write([&](size_t i) { return exact_value(rank_, i); });
    comm->allreduce(v.data(), n, ReduceOp::kSum);
    std::vector<float> got = v.read();
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(got[i], exact_sum(size_, i)) << "sum, element " << i << " of " << n;
    v.write([&](size_t i) { return exact_value(rank_, i); });
    comm->allreduce(v.data(), n, ReduceOp::kAverage);
    got = v.read();
    for (size_t i = 0; i < n; ++i) {
      const float want = exact_sum(size_, i) / size_;
      if (power_of_two) ASSERT_EQ(got[i], want) << "average, element " << i << " of " << n;
      else ASSERT_NEAR(got[i], want, 4 * FLT_EPSILON * exact_magnitude(size_, i) / size_) << "average, element " << i;
    }
  }
}

TEST_F(CommNccl, AsyncManyInFlightMatchFloat64) {
  SKIP_UNLESS_GPU_PER_RANK();
  auto comm = one_gpu_per_rank();
  std::vector<std::unique_ptr<DeviceFloats>> bufs;
  std::vector<std::unique_ptr<CommRequest>> reqs;
  for (size_t b = 0; b < 6; ++b) {
    bufs.push_back(std::make_unique<DeviceFloats>(1000 * (b + 1) * (b + 1) + b, stream_));
    bufs[b]->write([&](size_t i) { return keyed_value(20 + b, rank_, i); });
    reqs.push_back(comm->allreduce_async(bufs[b]->data(), bufs[b]->size(), ReduceOp::kAverage));
  }
  // Complete in reverse order, polling the first one. A poll that finds a reduction unfinished must
  // leave no CUDA error behind: the next kernel launch check would report it as its own.
  for (size_t b = bufs.size(); b-- > 0;) {
    reqs[0]->test();
    EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "after polling an unfinished reduction";
    reqs[b]->wait();
    EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "after waiting for reduction " << b;
    EXPECT_TRUE(reqs[b]->test());
    const std::vector<float> got = bufs[b]->read();
    EXPECT_EQ(expect_keyed_average(got.data(), got.size(), 20 + b, size_), 0u) << "buffer " << b;
  }
}

TEST_F(CommNccl, BroadcastFromTheLastRank) {
  SKIP_UNLESS_GPU_PER_RANK();
  auto comm = one_gpu_per_rank();
  DeviceFloats v(777, stream_);
  v.write([&](size_t i) { return exact_value(rank_, i); });
  const int root = size_ - 1;
  comm->broadcast(v.data(), v.size(), root);
  const std::vector<float> got = v.read();
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], exact_value(root, i)) << "element " << i;
}

TEST_F(CommNccl, BucketsOverlappedOutOfOrderMatchFloat64) {
  SKIP_UNLESS_GPU_PER_RANK();
  auto comm = one_gpu_per_rank();
  // One device arena holding the tensors back to back, as the worker's gradient arena does.
  const std::vector<size_t>& sizes = grad_sizes();
  const size_t total = std::accumulate(sizes.begin(), sizes.end(), size_t{0});
  DeviceFloats arena(total, stream_);
  std::vector<GradTensor> tensors;
  size_t off = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    tensors.push_back({str_cat("layer", i / 2, i % 2 ? "/bias" : "/weight"), arena.data() + off, sizes[i]});
    off += sizes[i];
  }
  for (size_t bucket_bytes : {size_t{0}, size_t{40000}, size_t{200000}}) {
    GradBuckets gb(*comm, tensors, {.bucket_bytes = bucket_bytes, .overlap = true});
    std::mt19937 rng(1234 + 77 * rank_);  // a different completion order on every rank
    for (int step = 0; step < 3; ++step) {
      const uint64_t seed = 100 + step + 10 * bucket_bytes;
      arena.write([&](size_t i) { return keyed_value(seed, rank_, i); });
      std::vector<size_t> order(tensors.size());
      std::iota(order.begin(), order.end(), size_t{0});
      std::shuffle(order.begin(), order.end(), rng);
      for (size_t i : order) gb.mark_ready(i);
      gb.wait_all();
      const std::vector<float> got = arena.read();
      EXPECT_EQ(expect_keyed_average(got.data(), got.size(), seed, size_), 0u) << "bucket_bytes " << bucket_bytes;
      EXPECT_EQ(gb.last_timing().reductions, static_cast<int>(gb.buckets().size()));
    }
  }
}

TEST_F(CommNccl, ScatteredDeviceTensorsAreRefused) {
  SKIP_UNLESS_GPU_PER_RANK();
  auto comm = one_gpu_per_rank();
  DeviceFloats a(1000, stream_), b(1000, stream_);
  // Two allocations in one bucket: NCCL reduces device buffers in place, so the bucket must be contiguous.
  const std::vector<GradTensor> tensors = {{"fc8/weight", a.data(), 1000}, {"fc8/bias", b.data(), 1000}};
  try {
    GradBuckets gb(*comm, tensors, {.bucket_bytes = 0});
    ADD_FAILURE() << "scattered device tensors were accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is not contiguous in device memory"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace alexnet

int main(int argc, char** argv) {
  alexnet::testing::mpi_test_init(&argc, &argv);
  return alexnet::testing::mpi_test_run(&argc, argv);
}
