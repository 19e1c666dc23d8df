// The test helpers that compare numbers must fail on NaN: a NaN on either side of max_abs_diff or
// relative_error is an infinite error, and gradcheck rejects a NaN gradient. (std::max drops a NaN
// and `err > bound` is false for one, which is how a NaN used to pass.)
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "gradcheck.hpp"
#include "relative_error.hpp"
#include "upcycle/ops/elementwise.hpp"

namespace upcycle {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

Tensor vec(std::vector<double> v) {
  const auto n = static_cast<std::int64_t>(v.size());
  return Tensor::from_vector(v, {n}, Device::cpu);
}

TEST(ComparisonHelpers, MaxAbsDiffIsInfiniteWhenEitherSideHasANaN) {
  EXPECT_DOUBLE_EQ(testing::max_abs_diff(vec({1, 2, 3}), vec({1, 2.5, 3})), 0.5);
  EXPECT_TRUE(std::isinf(testing::max_abs_diff(vec({1, kNaN, 3}), vec({1, 2, 3}))));
  EXPECT_TRUE(std::isinf(testing::max_abs_diff(vec({1, 2, 3}), vec({kNaN, 2, 3}))));
  // A NaN after a larger finite difference is still caught (std::max would keep the 5).
  EXPECT_TRUE(std::isinf(testing::max_abs_diff(vec({6, 2, kNaN}), vec({1, 2, 3}))));
}

TEST(ComparisonHelpers, RelativeErrorIsInfiniteWhenEitherSideHasANaN) {
  EXPECT_NEAR(testing::relative_error(vec({1, 2, 4}), vec({1, 2, 3})).rel, 1.0 / 3.0, 1e-15);
  EXPECT_TRUE(std::isinf(testing::relative_error(vec({1, kNaN, 3}), vec({1, 2, 3})).rel));
  EXPECT_TRUE(std::isinf(testing::relative_error(vec({1, 2, 3}), vec({1, kNaN, 3})).rel));
  EXPECT_FALSE(testing::relative_error(vec({1, 2, 3}), vec({1, kNaN, 3})).rel < 1e-6);
}

// x -> x * sqrt(x - 2) on x < 2: the forward value is NaN and so is the analytic gradient.
TEST(ComparisonHelpers, GradcheckFailsOnANaNGradient) {
  const testing::OpFn fine = [](const std::vector<Var>& in) { return mul(in[0], in[0]); };
  EXPECT_TRUE(testing::gradcheck(fine, {vec({0.5, -1.0, 2.0})}));
  const testing::OpFn nan_grad = [](const std::vector<Var>& in) {
    return mul(in[0], sqrt(add_scalar(in[0], -2.0)));
  };
  EXPECT_FALSE(testing::gradcheck(nan_grad, {vec({0.5, -1.0, 0.25})}));
}

}  // namespace
}  // namespace upcycle
