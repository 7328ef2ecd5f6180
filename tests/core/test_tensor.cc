// Tensor: allocation, views, slices, tensors over a storage, host memory, copies, conversion, errors.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "core/device.h"
#include "core/error.h"
#include "core/tensor.h"

namespace alexnet {
namespace {

TEST(Tensor, AlignedZeroedAndShaped) {
  Tensor t = Tensor::zeros({2, 3, 4});
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.nbytes(), 96u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % 64, 0u);
  for (int i = 0; i < 24; ++i) EXPECT_EQ(t.data<float>()[i], 0.0f);
}

TEST(Tensor, ViewsAndSlicesShareStorage) {
  Tensor t = Tensor::from_vector<float>({3, 2}, {0, 1, 2, 3, 4, 5});
  Tensor s = t.slice0(1, 3);
  EXPECT_EQ(s.shape(), (Shape{2, 2}));
  EXPECT_EQ(s.data<float>()[0], 2.0f);
  s.data<float>()[0] = 9;
  EXPECT_EQ(t.data<float>()[2], 9.0f);
  Tensor v = t.view({6});
  EXPECT_TRUE(v.shares_storage(t));
  Tensor c = t.clone();
  EXPECT_FALSE(c.shares_storage(t));
  EXPECT_EQ(c.data<float>()[2], 9.0f);
}

TEST(Tensor, OverAStorageSharesItAndChecksTheBounds) {
  Tensor t = Tensor::from_vector<float>({4}, {1, 2, 3, 4});
  std::shared_ptr<Storage> storage = allocate_host(16, false);
  std::memcpy(storage->data(), t.raw_data(), 16);
  Tensor tail = Tensor::over(storage, 8, {2}, DType::kF32);
  EXPECT_EQ(tail.data<float>()[0], 3.0f);
  EXPECT_EQ(tail.data<float>()[1], 4.0f);
  EXPECT_EQ(tail.raw_data(), static_cast<char*>(storage->data()) + 8);
  EXPECT_TRUE(tail.device().is_cpu());
  EXPECT_TRUE(Tensor::over(storage, 0, {4}, DType::kF32).shares_storage(tail));
  EXPECT_THROW(Tensor::over(storage, 8, {3}, DType::kF32), Error);  // 12 bytes from byte 8 of 16
  EXPECT_THROW(Tensor::over(storage, 20, {0}, DType::kU8), Error);
  EXPECT_THROW(Tensor::over(nullptr, 0, {1}, DType::kU8), Error);
  // The storage lives as long as a tensor over it.
  storage.reset();
  EXPECT_EQ(tail.data<float>()[1], 4.0f);
}

TEST(Tensor, PageLockedHostMemoryIsOrdinaryWithoutABackend) {
  // With a CUDA device the backend gives page-locked memory; either way it is CPU memory of the size asked.
  const bool cuda = cuda_device_count() > 0;  // registers the CUDA backend where there is a device
  std::shared_ptr<Storage> s = allocate_host(1000, true);
  ASSERT_NE(s->data(), nullptr);
  EXPECT_EQ(s->bytes(), 1000u);
  EXPECT_TRUE(s->device().is_cpu());
  EXPECT_EQ(s->page_locked(), cuda);
  EXPECT_EQ(Tensor::over(s, 0, {10}, DType::kU8).page_locked(), cuda);
  EXPECT_FALSE(allocate_host(1000, false)->page_locked());
  EXPECT_FALSE(Tensor::empty({10}).page_locked());
  std::memset(s->data(), 7, 1000);
  EXPECT_EQ(static_cast<unsigned char*>(s->data())[999], 7);
}

TEST(Tensor, WrongAccessIsAnInternalError) {
  Tensor t = Tensor::zeros({2});
  EXPECT_THROW(t.data<double>(), InternalError);
  EXPECT_THROW(t.view({3}), InternalError);
  EXPECT_THROW(t.slice0(1, 3), InternalError);
}

TEST(Tensor, ConvertsAndConcatenates) {
  Tensor a = Tensor::from_vector<float>({1, 2}, {1.5f, -2});
  Tensor b = Tensor::from_vector<float>({2, 2}, {3, 4, 5, 6});
  Tensor c = concat0({a, b});
  EXPECT_EQ(c.shape(), (Shape{3, 2}));
  EXPECT_EQ(c.data<float>()[5], 6.0f);
  Tensor d = c.to(DType::kF64);
  EXPECT_EQ(d.data<double>()[0], 1.5);
  EXPECT_EQ(d.to(DType::kF32).data<float>()[1], -2.0f);
}

// A short last chunk padded to the full one: its rows, then its last row again; a slice pads from its own rows.
TEST(Tensor, PadRowsRepeatsTheLastRow) {
  const Tensor t = Tensor::from_vector<int32_t>({4, 2, 1}, {1, 2, 3, 4, 5, 6, 7, 8});
  const Tensor p = pad_rows(t.slice0(1, 3), 5);
  EXPECT_EQ(p.shape(), (Shape{5, 2, 1}));
  EXPECT_EQ(std::vector<int32_t>(p.data<int32_t>(), p.data<int32_t>() + p.numel()),
            (std::vector<int32_t>{3, 4, 5, 6, 5, 6, 5, 6, 5, 6}));
  const Tensor same = pad_rows(t, 4);
  EXPECT_FALSE(same.shares_storage(t));
  EXPECT_EQ(std::memcmp(same.raw_data(), t.raw_data(), t.nbytes()), 0);
  EXPECT_THROW(pad_rows(t, 3), InternalError);
}

TEST(Tensor, NoCudaBackendIsAClearError) {
  try {
    Tensor::empty({4}, DType::kF32, Device::cuda(0));
    // Reaching here means a CUDA device exists and allocation worked.
    SUCCEED();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cuda:0"), std::string::npos);
  }
}

}  // namespace
}  // namespace alexnet
