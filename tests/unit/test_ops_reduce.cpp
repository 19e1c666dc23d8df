// Reductions: forward against plain loops over every axis, backward against finite differences.
#include <gtest/gtest.h>

#include "gradcheck.hpp"
#include "upcycle/ops/reduce.hpp"

using namespace upcycle;
using upcycle::testing::gradcheck;
using upcycle::testing::random_tensor;

namespace {

// Sum (or mean) of x [d0, d1, d2] over `axis`, as a flat vector in row-major order of the rest.
std::vector<double> reference(const Tensor& x, int axis, bool mean) {
  const Shape& s = x.shape();
  const double* p = x.data<double>();
  std::vector<double> out;
  const int a = axis < 0 ? axis + 3 : axis;
  // Visit the output positions in row-major order of the two kept dims.
  const int k0 = a == 0 ? 1 : 0, k1 = a == 2 ? 1 : 2;
  for (std::int64_t i = 0; i < s[k0]; ++i)
    for (std::int64_t j = 0; j < s[k1]; ++j) {
      double acc = 0.0;
      for (std::int64_t r = 0; r < s[a]; ++r) {
        std::int64_t idx[3];
        idx[a] = r;
        idx[k0] = i;
        idx[k1] = j;
        acc += p[(idx[0] * s[1] + idx[1]) * s[2] + idx[2]];
      }
      out.push_back(mean ? acc / static_cast<double>(s[a]) : acc);
    }
  return out;
}

}  // namespace

class ReduceAxis : public ::testing::TestWithParam<std::tuple<int, bool, bool>> {};

TEST_P(ReduceAxis, ForwardAndGradient) {
  const auto [axis, keepdim, is_mean] = GetParam();
  const Shape in_shape{2, 3, 4};
  Tensor x = random_tensor(in_shape, 21);
  auto op = [axis = axis, keepdim = keepdim, is_mean = is_mean](const Var& v) {
    return is_mean ? mean(v, axis, keepdim) : sum(v, axis, keepdim);
  };
  Var y = op(Var(x));
  const int a = axis < 0 ? axis + 3 : axis;
  Shape expected;
  for (int i = 0; i < 3; ++i) {
    if (i != a) expected.push_back(in_shape[i]);
    else if (keepdim) expected.push_back(1);
  }
  ASSERT_EQ(y.shape(), expected);
  const auto ref = reference(x, axis, is_mean);
  const auto got = y.value().to_vector<double>();
  ASSERT_EQ(got.size(), ref.size());
  for (std::size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(got[i], ref[i], 1e-14) << "output " << i;
  EXPECT_TRUE(gradcheck([&](const std::vector<Var>& in) { return op(in[0]); }, {x}));
}

INSTANTIATE_TEST_SUITE_P(AllAxes, ReduceAxis,
                         ::testing::Combine(::testing::Values(0, 1, 2, -1), ::testing::Bool(), ::testing::Bool()));

TEST(Reduce, SumAllAndMeanAll) {
  Tensor x = random_tensor({3, 5, 2}, 22);
  double total = 0.0;
  for (std::int64_t i = 0; i < x.numel(); ++i) total += x.data<double>()[i];
  Var s = sum_all(Var(x)), m = mean_all(Var(x));
  ASSERT_EQ(s.shape(), (Shape{1}));
  ASSERT_EQ(m.shape(), (Shape{1}));
  EXPECT_NEAR(s.value().item<double>(), total, 1e-14);
  EXPECT_NEAR(m.value().item<double>(), total / 30.0, 1e-15);
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return sum_all(in[0]); }, {x}));
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return mean_all(in[0]); }, {x}));
}

TEST(Reduce, ScalarBackwardSeedsOnes) {
  // backward() from mean_all gives exactly 1/n everywhere (no projection involved).
  Var x(random_tensor({4, 3}, 23), true);
  mean_all(x).backward();
  for (double g : x.grad().to_vector<double>()) EXPECT_DOUBLE_EQ(g, 1.0 / 12.0);
}

TEST(Reduce, FloatSumOfLongAxisKeepsPrecision) {
  // Summing 0.1f 2^20 times in a float accumulator drifts by about 1e-2 relative; the kernel
  // accumulates in double, so the result is the exact sum rounded once to float (<= 6e-8).
  const std::int64_t n = 1 << 20;
  Tensor x = Tensor::full({n}, 0.1, DType::f32, Device::cpu);
  const double expected = static_cast<double>(0.1f) * static_cast<double>(n);
  const double got = sum_all(Var(x)).value().item<float>();
  EXPECT_NEAR(got, expected, expected * 1e-7);
}

TEST(Reduce, BadAxisThrows) {
  Var x(random_tensor({2, 3}, 24));
  EXPECT_THROW(sum(x, 2), Error);
  EXPECT_THROW(mean(x, -3), Error);
}
