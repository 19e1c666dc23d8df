// grouped_linear (per-group x_g W_g^T + b_g over contiguous row groups) and scale_rows: forward
// against naive loops, backward against central finite differences in double (gradcheck.hpp
// bounds: |analytic - numeric| <= 1e-7 + 1e-6 |numeric|), including empty groups.
#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "gradcheck.hpp"
#include "upcycle/ops/grouped_linear.hpp"
#include "upcycle/ops/linalg.hpp"
#include "upcycle/ops/scale_rows.hpp"
#include "upcycle/ops/shape.hpp"

using namespace upcycle;
using upcycle::testing::gradcheck;
using upcycle::testing::max_abs_diff;
using upcycle::testing::random_tensor;

namespace {

std::int64_t total(const std::vector<std::int64_t>& sizes) {
  return std::accumulate(sizes.begin(), sizes.end(), std::int64_t{0});
}

// y[rows of g] = x[rows of g] w[g]^T + b[g], by loops in double.
std::vector<double> naive(const Tensor& x, const Tensor& w, const Tensor& b, const std::vector<std::int64_t>& sizes) {
  const std::int64_t out = w.dim(1), in = w.dim(2);
  std::vector<double> y;
  std::int64_t row = 0;
  for (std::size_t g = 0; g < sizes.size(); ++g)
    for (std::int64_t r = 0; r < sizes[g]; ++r, ++row)
      for (std::int64_t o = 0; o < out; ++o) {
        double s = b.defined() ? b.data<double>()[static_cast<std::int64_t>(g) * out + o] : 0.0;
        for (std::int64_t i = 0; i < in; ++i)
          s += x.data<double>()[row * in + i] * w.data<double>()[(static_cast<std::int64_t>(g) * out + o) * in + i];
        y.push_back(s);
      }
  return y;
}

class GroupedLinearSizes : public ::testing::TestWithParam<std::vector<std::int64_t>> {};

TEST_P(GroupedLinearSizes, ForwardMatchesLoops) {
  const auto sizes = GetParam();
  const std::int64_t G = static_cast<std::int64_t>(sizes.size()), in = 5, out = 3, N = total(sizes);
  const Tensor x = random_tensor({N, in}, 1), w = random_tensor({G, out, in}, 2), b = random_tensor({G, out}, 3);
  for (bool with_bias : {true, false}) {
    const Var y = grouped_linear(Var(x), Var(w), with_bias ? Var(b) : Var(), sizes);
    ASSERT_EQ(y.shape(), (Shape{N, out}));
    const auto ref = naive(x, w, with_bias ? b : Tensor(), sizes);
    const auto got = y.value().to_vector<double>();
    ASSERT_EQ(got.size(), ref.size());
    for (std::size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(got[i], ref[i], 1e-13) << "element " << i;
  }
}

TEST_P(GroupedLinearSizes, GradientWithAndWithoutBias) {
  const auto sizes = GetParam();
  const std::int64_t G = static_cast<std::int64_t>(sizes.size()), in = 4, out = 3, N = total(sizes);
  const Tensor x = random_tensor({N, in}, 4), w = random_tensor({G, out, in}, 5), b = random_tensor({G, out}, 6);
  EXPECT_TRUE(gradcheck([&](const std::vector<Var>& v) { return grouped_linear(v[0], v[1], v[2], sizes); }, {x, w, b}));
  EXPECT_TRUE(gradcheck([&](const std::vector<Var>& v) { return grouped_linear(v[0], v[1], Var(), sizes); }, {x, w}));
}

TEST_P(GroupedLinearSizes, EmptyGroupsGetZeroWeightGradient) {
  const auto sizes = GetParam();
  const std::int64_t G = static_cast<std::int64_t>(sizes.size()), in = 4, out = 3, N = total(sizes);
  Var x(random_tensor({N, in}, 7), true), w(random_tensor({G, out, in}, 8), true), b(random_tensor({G, out}, 9), true);
  const Var y = grouped_linear(x, w, b, sizes);
  y.backward(random_tensor(y.shape(), 10));
  ASSERT_TRUE(x.grad().defined() && w.grad().defined() && b.grad().defined());
  const auto gw = w.grad().to_vector<double>();
  const auto gb = b.grad().to_vector<double>();
  for (std::int64_t g = 0; g < G; ++g) {
    if (sizes[static_cast<std::size_t>(g)] != 0) continue;
    for (std::int64_t i = 0; i < out * in; ++i) EXPECT_EQ(gw[static_cast<std::size_t>(g * out * in + i)], 0.0);
    for (std::int64_t i = 0; i < out; ++i) EXPECT_EQ(gb[static_cast<std::size_t>(g * out + i)], 0.0);
  }
}

INSTANTIATE_TEST_SUITE_P(Sizes, GroupedLinearSizes,
                         ::testing::Values(std::vector<std::int64_t>{2, 3, 1},     // all non-empty
                                           std::vector<std::int64_t>{0, 3, 0, 2},  // empty first/middle
                                           std::vector<std::int64_t>{3, 0, 0},     // empty at the end
                                           std::vector<std::int64_t>{0, 0, 0},     // no rows at all
                                           std::vector<std::int64_t>{5}));         // one group

TEST(GroupedLinear, OneGroupEqualsLinear) {
  const Tensor x = random_tensor({6, 4}, 1), w = random_tensor({1, 3, 4}, 2), b = random_tensor({1, 3}, 3);
  const Var y = grouped_linear(Var(x), Var(w), Var(b), {6});
  const Var ref = linear(Var(x), Var(w.reshape({3, 4})), Var(b.reshape({3})));
  EXPECT_LE(max_abs_diff(y.value(), ref.value()), 1e-14);
}

TEST(GroupedLinear, FloatPath) {
  // f32 against f64 on the same values (k = 32 terms of size ~1): well within 1e-5.
  const std::vector<std::int64_t> sizes{7, 0, 9};
  const Tensor x = random_tensor({16, 32}, 1), w = random_tensor({3, 8, 32}, 2), b = random_tensor({3, 8}, 3);
  const Var y64 = grouped_linear(Var(x), Var(w), Var(b), sizes);
  const Var y32 = grouped_linear(Var(x.to(DType::f32)), Var(w.to(DType::f32)), Var(b.to(DType::f32)), sizes);
  EXPECT_LT(max_abs_diff(y64.value(), y32.value()), 1e-5);
}

TEST(GroupedLinear, RejectsBadArguments) {
  const Var x(random_tensor({5, 4}, 1)), w(random_tensor({2, 3, 4}, 2)), b(random_tensor({2, 3}, 3));
  EXPECT_THROW(grouped_linear(x, w, b, {2, 2}), Error);      // sizes do not add up to N
  EXPECT_THROW(grouped_linear(x, w, b, {5}), Error);         // wrong number of groups
  EXPECT_THROW(grouped_linear(x, w, b, {6, -1}), Error);     // negative size
  EXPECT_THROW(grouped_linear(x, Var(random_tensor({2, 3, 5}, 4)), b, {2, 3}), Error);  // in mismatch
  EXPECT_THROW(grouped_linear(x, w, Var(random_tensor({3}, 5)), {2, 3}), Error);        // bias shape
}

TEST(ScaleRows, ForwardAndGradient) {
  const Tensor x = random_tensor({5, 3}, 1), s = random_tensor({5}, 2);
  const Var y = scale_rows(Var(x), Var(s));
  for (int r = 0; r < 5; ++r)
    for (int c = 0; c < 3; ++c)
      EXPECT_DOUBLE_EQ(y.value().data<double>()[r * 3 + c], x.data<double>()[r * 3 + c] * s.data<double>()[r]);
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& v) { return scale_rows(v[0], v[1]); }, {x, s}));
  // No rows at all: a [0, D] result whose gradients are empty but defined.
  Var x0(random_tensor({0, 3}, 3), true), s0(random_tensor({0}, 4), true);
  const Var y0 = scale_rows(x0, s0);
  y0.backward(Tensor::zeros({0, 3}, DType::f64, Device::cpu));
  EXPECT_TRUE(x0.grad().defined());
  EXPECT_TRUE(s0.grad().defined());
  EXPECT_THROW(scale_rows(Var(x), Var(random_tensor({4}, 5))), Error);
}

}  // namespace
