// cross_entropy (ignore_index, label smoothing, mean over counted rows) and mse: forward values
// against plain-loop references, gradients by finite differences, f32 against f64.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "gradcheck.hpp"
#include "upcycle/ops/loss.hpp"

namespace upcycle {
namespace {

using testing::gradcheck;
using testing::max_abs_diff;
using testing::randn_tensor;

constexpr std::int64_t kIgnore = -100;

// torch.nn.functional.cross_entropy(reduction="mean", label_smoothing=eps) written out: the
// target distribution q = (1 - eps) onehot + eps / C, loss_r = -sum_c q_c log_softmax(x_r)_c,
// averaged over the rows whose target is not ignore_index (0 when there are none).
double reference_ce(const Tensor& logits, const std::vector<std::int64_t>& targets, std::int64_t ignore,
                    double eps) {
  const std::vector<double> x = logits.to(DType::f64).to_vector<double>();
  const std::int64_t c = logits.dim(-1), rows = logits.numel() / c;
  double total = 0.0;
  int counted = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    if (targets[r] == ignore) continue;
    ++counted;
    double s = 0.0;
    for (std::int64_t j = 0; j < c; ++j) s += std::exp(x[r * c + j]);
    const double lse = std::log(s);
    for (std::int64_t j = 0; j < c; ++j) {
      const double q = (j == targets[r] ? 1.0 - eps : 0.0) + eps / c;
      total -= q * (x[r * c + j] - lse);
    }
  }
  return counted ? total / counted : 0.0;
}

Tensor targets_tensor(const std::vector<std::int64_t>& t, const Shape& shape) {
  return Tensor::from_vector(t, shape, Device::cpu);
}

// Rows 1 and 4 are ignored.
const std::vector<std::int64_t> kTargets = {2, kIgnore, 0, 4, kIgnore, 1};

TEST(CrossEntropy, ForwardMatchesReference) {
  const Tensor logits = randn_tensor({2, 3, 5}, 1, 2.0);
  const Tensor t = targets_tensor(kTargets, {2, 3});
  for (double eps : {0.0, 0.1, 1.0}) {
    const Var loss = cross_entropy(Var(logits), t, kIgnore, eps);
    ASSERT_EQ(loss.shape(), Shape{1});
    EXPECT_NEAR(loss.value().item<double>(), reference_ce(logits, kTargets, kIgnore, eps), 1e-13) << "eps " << eps;
  }
}

TEST(CrossEntropy, IgnoreIndexInsideTheClassRange) {
  const Tensor logits = randn_tensor({6, 5}, 2, 2.0);
  const std::vector<std::int64_t> tv = {3, 1, 3, 0, 2, 3};  // class 3 is the ignored one
  const Var loss = cross_entropy(Var(logits), targets_tensor(tv, {6}), 3, 0.2);
  EXPECT_NEAR(loss.value().item<double>(), reference_ce(logits, tv, 3, 0.2), 1e-13);
}

TEST(CrossEntropy, GradcheckWithIgnoredRows) {
  const Tensor t = targets_tensor(kTargets, {2, 3});
  EXPECT_TRUE(gradcheck([&](const std::vector<Var>& in) { return cross_entropy(in[0], t, kIgnore, 0.0); },
                        {randn_tensor({2, 3, 5}, 3, 2.0)}));
}

TEST(CrossEntropy, GradcheckWithLabelSmoothing) {
  const Tensor t = targets_tensor(kTargets, {2, 3});
  EXPECT_TRUE(gradcheck([&](const std::vector<Var>& in) { return cross_entropy(in[0], t, kIgnore, 0.1); },
                        {randn_tensor({2, 3, 5}, 4, 2.0)}));
}

TEST(CrossEntropy, IgnoredRowsGetZeroGradient) {
  const Tensor t = targets_tensor(kTargets, {2, 3});
  Var x(randn_tensor({2, 3, 5}, 5), true);
  cross_entropy(x, t, kIgnore, 0.1).backward();
  const std::vector<double> g = x.grad().to_vector<double>();
  for (int r : {1, 4}) {
    for (int j = 0; j < 5; ++j) EXPECT_EQ(g[r * 5 + j], 0.0) << "row " << r;
  }
  // Each counted row's gradient is (softmax - q) / 4 and sums to zero.
  for (int r : {0, 2, 3, 5}) {
    double s = 0.0;
    for (int j = 0; j < 5; ++j) s += g[r * 5 + j];
    EXPECT_NEAR(s, 0.0, 1e-15) << "row " << r;
  }
}

TEST(CrossEntropy, AllRowsIgnoredGivesZeroWithoutNaN) {
  const Tensor t = targets_tensor({kIgnore, kIgnore, kIgnore}, {3});
  for (DType dt : {DType::f64, DType::f32}) {
    Var x(randn_tensor({3, 4}, 6, 1.0, dt), true);
    Var loss = cross_entropy(x, t, kIgnore, 0.1);
    EXPECT_EQ(loss.value().to(DType::f64).item<double>(), 0.0);
    loss.backward();
    const std::vector<double> g = x.grad().to(DType::f64).to_vector<double>();
    for (double e : g) EXPECT_EQ(e, 0.0);
  }
}

TEST(CrossEntropy, OutOfRangeTargetThrowsNamingRowAndValue) {
  const Tensor logits = randn_tensor({4, 5}, 7);
  for (std::int64_t bad : {5, -1, 12345}) {
    const Tensor t = targets_tensor({0, 1, bad, 2}, {4});
    try {
      cross_entropy(Var(logits), t, kIgnore, 0.0);
      ADD_FAILURE() << "target " << bad << " did not throw";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("target " + std::to_string(bad)), std::string::npos) << msg;
      EXPECT_NE(msg.find("row 2"), std::string::npos) << msg;
    }
  }
}

TEST(CrossEntropy, RejectsBadArguments) {
  const Tensor logits = randn_tensor({4, 5}, 8);
  EXPECT_THROW(cross_entropy(Var(logits), targets_tensor({0, 1, 2}, {3}), kIgnore), Error);  // row count
  EXPECT_THROW(cross_entropy(Var(logits), Tensor::zeros({4}, DType::i32, Device::cpu), kIgnore), Error);   // dtype
  EXPECT_THROW(cross_entropy(Var(logits), targets_tensor({0, 1, 2, 3}, {4}), kIgnore, 1.5), Error);
}

// Logits of +-1e4 overflow exp without the max subtraction.
TEST(CrossEntropy, LargeLogitsStayFinite) {
  const std::vector<double> v = {1e4, -1e4, 0.0, 5e3, 1e4 - 1.0, 1e4};
  const std::vector<std::int64_t> tv = {1, 1};
  // row 0: lse = 1e4 (to double precision), loss = 1e4 - 0.9 (-1e4) - (0.1 / 3) 0 = 19000
  // row 1: lse = 1e4 + log(1 + e^-1), loss = lse - 0.9 (1e4 - 1) - (0.1 / 3) (25000 - 1)
  const double lse1 = 1e4 + std::log1p(std::exp(-1.0));
  const double expected = 0.5 * (19000.0 + lse1 - 0.9 * (1e4 - 1.0) - 0.1 / 3.0 * (25000.0 - 1.0));
  for (DType dt : {DType::f64, DType::f32}) {
    Var x(Tensor::from_vector(v, {2, 3}, Device::cpu).to(dt), true);
    Var loss = cross_entropy(x, targets_tensor(tv, {2}), kIgnore, 0.1);
    // f32: the row losses (19000, ~1e3) and their mean (~1e4) are stored as floats, whose ulp
    // there is 1e-3 to 2e-3; 4e-3 allows a couple of ulps.
    EXPECT_NEAR(loss.value().to(DType::f64).item<double>(), expected, dt == DType::f64 ? 1e-9 : 4e-3)
        << dtype_name(dt);
    loss.backward();
    for (double e : x.grad().to(DType::f64).to_vector<double>()) EXPECT_TRUE(std::isfinite(e));
  }
}

// Loss and gradient of the f32 path against f64 on the same (float-representable) logits. The loss
// is O(2) and sums in double, so float output rounding bounds it at ~1e-6; gradient entries are
// differences of O(1) float terms times 1/4, so 1e-7 bounds them.
TEST(CrossEntropy, Float32AgreesWithFloat64) {
  const Tensor x32 = randn_tensor({2, 3, 50}, 9, 2.0, DType::f32);
  const Tensor t = targets_tensor(kTargets, {2, 3});
  Var a(x32.to(DType::f64), true), b(x32, true);
  Var la = cross_entropy(a, t, kIgnore, 0.1), lb = cross_entropy(b, t, kIgnore, 0.1);
  EXPECT_EQ(lb.dtype(), DType::f32);
  EXPECT_LT(max_abs_diff(la.value(), lb.value()), 2e-6);
  la.backward();
  lb.backward();
  EXPECT_LT(max_abs_diff(a.grad(), b.grad()), 1e-7);
}

TEST(Mse, ForwardMatchesReference) {
  const Tensor a = randn_tensor({3, 4}, 10), b = randn_tensor({3, 4}, 11);
  const std::vector<double> av = a.to_vector<double>(), bv = b.to_vector<double>();
  double s = 0.0;
  for (std::size_t i = 0; i < av.size(); ++i) s += (av[i] - bv[i]) * (av[i] - bv[i]);
  const Var loss = mse(Var(a), Var(b));
  ASSERT_EQ(loss.shape(), Shape{1});
  EXPECT_NEAR(loss.value().item<double>(), s / 12.0, 1e-15);
}

TEST(Mse, Gradcheck) {
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return mse(in[0], in[1]); },
                        {randn_tensor({3, 4}, 12), randn_tensor({3, 4}, 13)}));
}

TEST(Mse, RejectsDifferentShapes) {
  EXPECT_THROW(mse(Var(randn_tensor({3, 4}, 14)), Var(randn_tensor({4}, 15))), Error);
}

}  // namespace
}  // namespace upcycle
