// Activations: forward against closed forms (and a few published values), backward against
// finite differences.
#include <gtest/gtest.h>

#include <cmath>

#include "gradcheck.hpp"
#include "upcycle/ops/activation.hpp"

using namespace upcycle;
using upcycle::testing::gradcheck;
using upcycle::testing::random_tensor;

namespace {

std::vector<double> values(const Var& v) { return v.value().to(DType::f64).to_vector<double>(); }

double gelu_tanh_ref(double x) {
  const double c = std::sqrt(2.0 / M_PI);
  return 0.5 * x * (1.0 + std::tanh(c * (x + 0.044715 * x * x * x)));
}
double gelu_erf_ref(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }
double silu_ref(double x) { return x / (1.0 + std::exp(-x)); }

// Evenly spaced points in [-4, 4] that avoid 0 (the relu kink) by more than the gradcheck step.
Tensor grid() {
  std::vector<double> v;
  for (int i = 0; i < 40; ++i) v.push_back(-4.0 + 8.0 * (i + 0.5) / 40.0);
  return Tensor::from_vector(v, {4, 10}, Device::cpu);
}

void expect_matches(const Var& y, const Tensor& x, double (*ref)(double)) {
  const auto got = values(y);
  const Tensor x64 = x.to(DType::f64);
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    const double xi = x64.data<double>()[i];
    EXPECT_NEAR(got[static_cast<std::size_t>(i)], ref(xi), 1e-14 * std::max(1.0, std::abs(ref(xi)))) << "x = " << xi;
  }
}

}  // namespace

TEST(Relu, ForwardAwayFromZeroAndGradient) {
  Tensor x = grid();
  expect_matches(relu(Var(x)), x, [](double v) { return v > 0 ? v : 0.0; });
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return relu(in[0]); }, {x}));
  // The gradient is exactly the step function.
  Var leaf(x, true);
  relu(leaf).backward(Tensor::full(x.shape(), 1.0, DType::f64, Device::cpu));
  const auto g = leaf.grad().to_vector<double>();
  for (std::int64_t i = 0; i < x.numel(); ++i)
    EXPECT_EQ(g[static_cast<std::size_t>(i)], x.data<double>()[i] > 0 ? 1.0 : 0.0);
}

TEST(Gelu, TanhApproximation) {
  Tensor x = grid();
  expect_matches(gelu(Var(x), GeluApprox::tanh), x, gelu_tanh_ref);
  expect_matches(gelu(Var(x)), x, gelu_tanh_ref);  // tanh is the default
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return gelu(in[0], GeluApprox::tanh); }, {x}));
}

TEST(Gelu, ErfExact) {
  Tensor x = grid();
  expect_matches(gelu(Var(x), GeluApprox::erf), x, gelu_erf_ref);
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return gelu(in[0], GeluApprox::erf); }, {x}));
}

TEST(Gelu, KnownValues) {
  // gelu_erf(1) = Phi(1) = 0.841344746068543; gelu_erf(-1) = -(1 - Phi(1)).
  Tensor x = Tensor::from_vector(std::vector<double>{1.0, -1.0, 0.0, 3.0}, {4}, Device::cpu);
  const auto e = values(gelu(Var(x), GeluApprox::erf));
  EXPECT_NEAR(e[0], 0.841344746068543, 1e-14);
  EXPECT_NEAR(e[1], -0.158655253931457, 1e-14);
  EXPECT_EQ(e[2], 0.0);
  EXPECT_NEAR(e[3], 3.0 * 0.998650101968370, 1e-14);
  // The tanh form agrees with the exact one to about 1e-3 over this range.
  const auto t = values(gelu(Var(x), GeluApprox::tanh));
  for (std::size_t i = 0; i < t.size(); ++i) EXPECT_NEAR(t[i], e[i], 1e-3);
  EXPECT_NE(t[0], e[0]);  // but they are different functions
}

TEST(Silu, ForwardAndGradient) {
  Tensor x = grid();
  expect_matches(silu(Var(x)), x, silu_ref);
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return silu(in[0]); }, {x}));
  const auto v = values(silu(Var(Tensor::from_vector(std::vector<double>{1.0}, {1}, Device::cpu))));
  EXPECT_NEAR(v[0], 0.731058578630005, 1e-14);  // 1 / (1 + e^-1)
}

TEST(Activations, FloatInputsAgreeWithReference) {
  // f32: a handful of roundings of relative 6e-8 each; 1e-6 relative is a tight float bound.
  Tensor x = random_tensor({128}, 31, -6.0, 6.0, DType::f32);
  const Tensor x64 = x.to(DType::f64);
  const std::vector<std::pair<Var, double (*)(double)>> cases = {
      {gelu(Var(x), GeluApprox::tanh), gelu_tanh_ref},
      {gelu(Var(x), GeluApprox::erf), gelu_erf_ref},
      {silu(Var(x)), silu_ref},
      {relu(Var(x)), [](double v) { return v > 0 ? v : 0.0; }},
  };
  for (const auto& [y, ref] : cases) {
    ASSERT_EQ(y.dtype(), DType::f32);
    const auto got = values(y);
    for (std::int64_t i = 0; i < x.numel(); ++i) {
      const double r = ref(x64.data<double>()[i]);
      EXPECT_NEAR(got[static_cast<std::size_t>(i)], r, 1e-6 * std::max(1.0, std::abs(r)));
    }
  }
}

TEST(Activations, GradientsThroughComposition) {
  Tensor x = random_tensor({3, 5}, 32, -3.0, 3.0);
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return silu(gelu(in[0], GeluApprox::erf)); }, {x}));
}
