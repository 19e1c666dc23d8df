// Tensor, shape and RNG basics.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "gradcheck.hpp"
#include "upcycle/backend/backend.hpp"
#include "upcycle/core/device_runtime.hpp"
#include "upcycle/core/rng.hpp"
#include "upcycle/core/tensor.hpp"

using namespace upcycle;

TEST(Shape, NumelAxesAndSuffix) {
  Shape s{2, 3, 4};
  EXPECT_EQ(s.numel(), 24);
  EXPECT_EQ(s.dim(-1), 4);
  EXPECT_EQ(s.prod(1, 3), 12);
  EXPECT_TRUE(is_suffix_of(Shape{3, 4}, s));
  EXPECT_FALSE(is_suffix_of(Shape{2, 3}, s));
  EXPECT_THROW(s.dim(3), Error);
  EXPECT_EQ(s.str(), "[2, 3, 4]");
}

TEST(Tensor, ReshapeIsAViewAndInfersOneDim) {
  Tensor t = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3}, Device::cpu);
  Tensor r = t.reshape({3, -1});
  EXPECT_EQ(r.shape(), (Shape{3, 2}));
  r.data<float>()[0] = 42.f;
  EXPECT_EQ(t.data<float>()[0], 42.f);  // shares storage
  EXPECT_THROW(t.reshape({4, 2}), Error);
  EXPECT_THROW(t.reshape({-1, -1}), Error);
}

TEST(Tensor, RowsViewOffsetsIntoStorage) {
  Tensor t = Tensor::from_vector<float>({0, 1, 2, 3, 4, 5}, {3, 2}, Device::cpu);
  Tensor mid = t.rows(1, 3);
  EXPECT_EQ(mid.shape(), (Shape{2, 2}));
  EXPECT_EQ(mid.to_vector<float>(), (std::vector<float>{2, 3, 4, 5}));
  EXPECT_THROW(t.rows(2, 4), Error);
}

TEST(Tensor, CloneCopiesAndCastConverts) {
  Tensor t = Tensor::from_vector<double>({1.5, -2.5}, {2}, Device::cpu);
  Tensor c = t.clone();
  c.data<double>()[0] = 0;
  EXPECT_EQ(t.data<double>()[0], 1.5);
  Tensor i = t.to(DType::i64);
  EXPECT_EQ(i.to_vector<std::int64_t>(), (std::vector<std::int64_t>{1, -2}));
  EXPECT_EQ(t.to(DType::f32).to_vector<float>(), (std::vector<float>{1.5f, -2.5f}));
  EXPECT_EQ(t.rows(1, 2).item<double>(), -2.5);
  EXPECT_THROW(t.item<double>(), Error);  // two elements
  EXPECT_THROW(t.data<float>(), Error);   // wrong dtype
}

// A stand-in for a GPU's runtime that keeps its "device" memory on the host, so that device
// tensors exist on a machine without a GPU. Typed host access must still refuse them.
class HostBackedDeviceRuntime final : public DeviceRuntime {
 public:
  Device device() const override { return Device::cuda; }
  void* allocate(std::size_t bytes) override { return cpu().allocate(bytes); }
  void deallocate(void* ptr) override { cpu().deallocate(ptr); }
  void copy_bytes(void* dst, Device, const void* src, Device, std::size_t bytes) override {
    cpu().copy_bytes(dst, Device::cpu, src, Device::cpu, bytes);
  }
  void fill(Tensor&, double) override { UPCYCLE_THROW("not used"); }
  void cast(const Tensor&, Tensor&) override { UPCYCLE_THROW("not used"); }

 private:
  static Backend& cpu() { return backend_for(Device::cpu); }
};

TEST(Tensor, TypedHostAccessRefusesADeviceTensor) {
  HostBackedDeviceRuntime fake;
  register_device_runtime(Device::cuda, &fake);
  std::string message;
  {
    const Tensor host = Tensor::from_vector<float>({1, 2, 3}, {3}, Device::cpu);
    const Tensor dev = host.to(Device::cuda);
    EXPECT_EQ(dev.device(), Device::cuda);
    try {
      dev.data<float>();
    } catch (const Error& e) {
      message = e.message();
    }
    // The explicit way: a host copy.
    EXPECT_EQ(dev.to(Device::cpu).to_vector<float>(), (std::vector<float>{1, 2, 3}));
    EXPECT_EQ(host.data<float>()[2], 3.0f);
  }
  register_device_runtime(Device::cuda, nullptr);
  EXPECT_NE(message.find("copy it to the host first"), std::string::npos) << message;
  EXPECT_NE(message.find("cuda"), std::string::npos) << message;
}

TEST(Tensor, FullAndZeros) {
  Tensor z = Tensor::zeros({3}, DType::i32, Device::cpu);
  EXPECT_EQ(z.to_vector<std::int32_t>(), (std::vector<std::int32_t>{0, 0, 0}));
  Tensor f = Tensor::full({2}, 2.5, DType::f32, Device::cpu);
  EXPECT_EQ(f.to_vector<float>(), (std::vector<float>{2.5f, 2.5f}));
  EXPECT_THROW(Tensor::empty({2, -1}, DType::f32, Device::cpu), Error);
}

// Philox-4x32-10 known-answer vectors from the Random123 distribution (kat_vectors):
// counter {0,0,0,0}, key {0,0} -> 6627e8d5 e169c58d bc57ac4c 9b00dbd8, and
// counter all ones, key all ones -> 408f276d 41c83b0e a20bc7c6 6d5451fd.
TEST(Rng, PhiloxKnownAnswer) {
  std::uint32_t out[4];
  Philox4x32::generate(0, 0, out);
  EXPECT_EQ(out[0], 0x6627e8d5u);
  EXPECT_EQ(out[1], 0xe169c58du);
  EXPECT_EQ(out[2], 0xbc57ac4cu);
  EXPECT_EQ(out[3], 0x9b00dbd8u);
}

TEST(Rng, SameSeedAndOffsetGiveSameNumbersWhateverTheSplit) {
  // Drawing 1000 numbers at once equals drawing them in two pieces at the right offsets:
  // the property that makes results independent of how work is split over ranks.
  Tensor whole = Tensor::empty({1000}, DType::f32, Device::cpu);
  backend_for(Device::cpu).uniform(whole, 7, 100, 0.0, 1.0);
  Tensor a = Tensor::empty({300}, DType::f32, Device::cpu), b = Tensor::empty({700}, DType::f32, Device::cpu);
  backend_for(Device::cpu).uniform(a, 7, 100, 0.0, 1.0);
  backend_for(Device::cpu).uniform(b, 7, 400, 0.0, 1.0);
  auto w = whole.to_vector<float>();
  auto va = a.to_vector<float>(), vb = b.to_vector<float>();
  for (int i = 0; i < 300; ++i) ASSERT_EQ(w[static_cast<std::size_t>(i)], va[static_cast<std::size_t>(i)]);
  for (int i = 0; i < 700; ++i) ASSERT_EQ(w[static_cast<std::size_t>(300 + i)], vb[static_cast<std::size_t>(i)]);
}

TEST(Rng, UniformAndNormalMoments) {
  // n = 200000: the standard error of the mean is 1/sqrt(12 n) ~ 6.5e-4 (uniform) and
  // 1/sqrt(n) ~ 2.2e-3 (normal); bounds are 5 standard errors.
  const std::int64_t n = 200000;
  Tensor u = Tensor::empty({n}, DType::f64, Device::cpu), z = Tensor::empty({n}, DType::f64, Device::cpu);
  backend_for(Device::cpu).uniform(u, 3, 0, 0.0, 1.0);
  backend_for(Device::cpu).normal(z, 3, 0, 0.0, 1.0);
  double su = 0, sz = 0, sz2 = 0;
  for (double v : u.to_vector<double>()) {
    ASSERT_GE(v, 0.0);
    ASSERT_LT(v, 1.0);
    su += v;
  }
  for (double v : z.to_vector<double>()) {
    sz += v;
    sz2 += v * v;
  }
  EXPECT_NEAR(su / n, 0.5, 5 * 6.5e-4);
  EXPECT_NEAR(sz / n, 0.0, 5 * 2.2e-3);
  EXPECT_NEAR(sz2 / n, 1.0, 5 * std::sqrt(2.0 / n));
}

TEST(Rng, StreamAdvances) {
  RngStream s(9);
  EXPECT_EQ(s.advance(10), 0u);
  EXPECT_EQ(s.advance(5), 10u);
  EXPECT_EQ(s.offset(), 15u);
}

TEST(Gemm, FoldedBatchEqualsPerMatrixProducts) {
  // [3, 4, 5] x [5, 2] through the folded path against a naive triple loop.
  Tensor a = upcycle::testing::random_tensor({3, 4, 5}, 1), b = upcycle::testing::random_tensor({5, 2}, 2);
  Tensor c = Tensor::empty({3, 4, 2}, DType::f64, Device::cpu);
  GemmDesc d;
  d.batch = 3; d.m = 4; d.n = 2; d.k = 5;
  d.stride_a = 20; d.stride_b = 0; d.stride_c = 8;
  backend_for(Device::cpu).gemm(d, a, b, c);
  const double* pa = a.data<double>();
  const double* pb = b.data<double>();
  for (int bi = 0; bi < 3; ++bi)
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 2; ++j) {
        double s = 0;
        for (int k = 0; k < 5; ++k) s += pa[bi * 20 + i * 5 + k] * pb[k * 2 + j];
        EXPECT_NEAR(c.data<double>()[bi * 8 + i * 2 + j], s, 1e-14);
      }
}

TEST(Gemm, EmptyInnerDimensionGivesZeros) {
  Tensor a = Tensor::empty({2, 0}, DType::f32, Device::cpu), b = Tensor::empty({0, 3}, DType::f32, Device::cpu);
  Tensor c = Tensor::full({2, 3}, 7.0, DType::f32, Device::cpu);
  GemmDesc d;
  d.m = 2; d.n = 3; d.k = 0;
  backend_for(Device::cpu).gemm(d, a, b, c);
  for (float v : c.to_vector<float>()) EXPECT_EQ(v, 0.f);
}
