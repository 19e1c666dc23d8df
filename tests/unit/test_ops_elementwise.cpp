// Elementwise ops: forward against plain loops in double, backward against finite differences.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "gradcheck.hpp"
#include "upcycle/ops/elementwise.hpp"

using namespace upcycle;
using upcycle::testing::gradcheck;
using upcycle::testing::random_tensor;

namespace {

std::vector<double> values(const Var& v) { return v.value().to(DType::f64).to_vector<double>(); }
std::vector<double> values(const Tensor& t) { return t.to(DType::f64).to_vector<double>(); }

// Values with |x| in [lo, hi] and random signs: keeps kinks (abs, relu) and poles (log,
// reciprocal) more than the finite-difference step away.
Tensor away_from_zero(const Shape& shape, std::uint64_t seed, double lo, double hi, bool positive) {
  Tensor u = random_tensor(shape, seed, -1.0, 1.0);
  double* p = u.data<double>();
  for (std::int64_t i = 0; i < u.numel(); ++i) {
    const double mag = lo + (hi - lo) * std::abs(p[i]);
    p[i] = positive || p[i] >= 0 ? mag : -mag;
  }
  return u;
}

using BinaryRef = std::function<double(double, double)>;
using BinaryVarOp = std::function<Var(const Var&, const Var&)>;

struct BinaryCase {
  const char* name;
  BinaryVarOp op;
  BinaryRef ref;
};

std::vector<BinaryCase> binary_cases() {
  return {
      {"add", [](const Var& a, const Var& b) { return a + b; }, [](double x, double y) { return x + y; }},
      {"sub", [](const Var& a, const Var& b) { return a - b; }, [](double x, double y) { return x - y; }},
      {"mul", [](const Var& a, const Var& b) { return a * b; }, [](double x, double y) { return x * y; }},
      {"div", [](const Var& a, const Var& b) { return a / b; }, [](double x, double y) { return x / y; }},
  };
}

// Checks forward values and gradients of every binary op for operands of shapes sa and sb; the
// result has the larger shape and the smaller operand repeats over its leading dims.
void check_binary(const Shape& sa, const Shape& sb) {
  // Denominators in [0.5, 1.5] keep div well conditioned.
  Tensor a = random_tensor(sa, 1, -1.0, 1.0), b = random_tensor(sb, 2, 0.5, 1.5);
  const bool a_big = a.numel() >= b.numel();
  const Shape out_shape = a_big ? sa : sb;
  const std::int64_t n = out_shape.numel(), na = a.numel(), nb = b.numel();
  for (const BinaryCase& c : binary_cases()) {
    SCOPED_TRACE(std::string(c.name) + " " + sa.str() + " with " + sb.str());
    Var y = c.op(Var(a), Var(b));
    ASSERT_EQ(y.shape(), out_shape);
    const auto got = values(y);
    for (std::int64_t i = 0; i < n; ++i)
      EXPECT_NEAR(got[static_cast<std::size_t>(i)], c.ref(a.data<double>()[i % na], b.data<double>()[i % nb]), 1e-15)
          << "element " << i;
    EXPECT_TRUE(gradcheck([&](const std::vector<Var>& in) { return c.op(in[0], in[1]); }, {a, b}));
  }
}

}  // namespace

TEST(Binary, EqualShapes) { check_binary({3, 4}, {3, 4}); }

TEST(Binary, RightOperandBroadcast) {
  check_binary({2, 3, 4}, {4});
  check_binary({2, 3, 4}, {3, 4});
}

TEST(Binary, LeftOperandBroadcast) {
  check_binary({4}, {2, 3, 4});
  check_binary({3, 4}, {2, 3, 4});
}

TEST(Binary, SameVarOnBothSidesAccumulates) {
  // d(x * x)/dx = 2x reaches x through both inputs of one node.
  Tensor x = random_tensor({5}, 3);
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return in[0] * in[0]; }, {x}));
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return in[0] / in[0] + in[0] - in[0] * in[0]; },
                        {away_from_zero({5}, 4, 0.5, 1.5, true)}));
}

TEST(Binary, IncompatibleShapesThrow) {
  EXPECT_THROW(Var(random_tensor({2, 3}, 1)) + Var(random_tensor({2}, 2)), Error);
  EXPECT_THROW(Var(random_tensor({3, 4}, 1)) * Var(random_tensor({4, 3}, 2)), Error);
  EXPECT_THROW(Var(random_tensor({3}, 1)) + Var(random_tensor({3}, 2, -1.0, 1.0, DType::f32)), Error);
}

TEST(Affine, ForwardAndGradient) {
  Tensor x = random_tensor({3, 5}, 5);
  for (const auto& [alpha, beta] : std::vector<std::pair<double, double>>{{2.5, -0.75}, {1.0, 3.0}, {-1.0, 0.0}}) {
    SCOPED_TRACE(alpha);
    const auto got = values(affine(Var(x), alpha, beta));
    for (std::int64_t i = 0; i < x.numel(); ++i)
      EXPECT_NEAR(got[static_cast<std::size_t>(i)], alpha * x.data<double>()[i] + beta, 1e-15);
    EXPECT_TRUE(gradcheck([&, alpha = alpha, beta = beta](const std::vector<Var>& in) { return affine(in[0], alpha, beta); },
                          {x}));
  }
  const auto s = values(add_scalar(Var(x), 2.0)), m = values(mul_scalar(Var(x), -3.0));
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    EXPECT_NEAR(s[static_cast<std::size_t>(i)], x.data<double>()[i] + 2.0, 1e-15);
    EXPECT_NEAR(m[static_cast<std::size_t>(i)], -3.0 * x.data<double>()[i], 1e-15);
  }
}

TEST(PowScalar, ForwardAndGradient) {
  Tensor x = random_tensor({4, 3}, 6, 0.5, 2.0);  // positive: fractional powers are real
  for (double p : {2.0, 3.0, 0.5, -1.5, 2.5}) {
    SCOPED_TRACE(p);
    const auto got = values(pow_scalar(Var(x), p));
    for (std::int64_t i = 0; i < x.numel(); ++i)
      EXPECT_NEAR(got[static_cast<std::size_t>(i)], std::pow(x.data<double>()[i], p), 1e-14);
    EXPECT_TRUE(gradcheck([p](const std::vector<Var>& in) { return pow_scalar(in[0], p); }, {x}));
  }
}

namespace {

struct UnaryCase {
  UnaryOp op;
  const char* name;
  double (*ref)(double);
  bool positive_only;  // domain restricted to x > 0
};

double sigmoid_ref(double x) { return 1.0 / (1.0 + std::exp(-x)); }

std::vector<UnaryCase> unary_cases() {
  return {
      {UnaryOp::neg, "neg", [](double x) { return -x; }, false},
      {UnaryOp::exp, "exp", [](double x) { return std::exp(x); }, false},
      {UnaryOp::log, "log", [](double x) { return std::log(x); }, true},
      {UnaryOp::sqrt, "sqrt", [](double x) { return std::sqrt(x); }, true},
      {UnaryOp::rsqrt, "rsqrt", [](double x) { return 1.0 / std::sqrt(x); }, true},
      {UnaryOp::square, "square", [](double x) { return x * x; }, false},
      {UnaryOp::abs, "abs", [](double x) { return std::fabs(x); }, false},
      {UnaryOp::tanh, "tanh", [](double x) { return std::tanh(x); }, false},
      {UnaryOp::sigmoid, "sigmoid", sigmoid_ref, false},
      {UnaryOp::reciprocal, "reciprocal", [](double x) { return 1.0 / x; }, false},
      {UnaryOp::relu, "relu", [](double x) { return x > 0 ? x : 0.0; }, false},
      {UnaryOp::gelu_tanh, "gelu_tanh",
       [](double x) { return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x))); }, false},
      {UnaryOp::gelu_erf, "gelu_erf", [](double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }, false},
      {UnaryOp::silu, "silu", [](double x) { return x * sigmoid_ref(x); }, false},
  };
}

}  // namespace

TEST(Unary, EveryOpForwardAndGradient) {
  const auto cases = unary_cases();
  ASSERT_EQ(cases.size(), 14u) << "a UnaryOp is missing from the table";
  for (const UnaryCase& c : cases) {
    SCOPED_TRACE(c.name);
    // |x| in [0.2, 2]: away from 0 for the kinks and poles, wide enough to reach both tails.
    Tensor x = away_from_zero({3, 7}, 7, 0.2, 2.0, c.positive_only);
    const auto got = values(unary(c.op, Var(x)));
    for (std::int64_t i = 0; i < x.numel(); ++i) {
      const double ref = c.ref(x.data<double>()[i]);
      EXPECT_NEAR(got[static_cast<std::size_t>(i)], ref, 1e-14 * std::max(1.0, std::abs(ref))) << "x = " << x.data<double>()[i];
    }
    EXPECT_TRUE(gradcheck([op = c.op](const std::vector<Var>& in) { return unary(op, in[0]); }, {x}));
  }
}

TEST(Unary, FloatPathAgreesWithReference) {
  // f32 kernels: each result is a few float roundings (relative 6e-8 each) from the double
  // reference; 1e-6 relative is a tight float bound that still catches a wrong formula.
  for (const UnaryCase& c : unary_cases()) {
    SCOPED_TRACE(c.name);
    Tensor x = away_from_zero({64}, 8, 0.2, 2.0, c.positive_only).to(DType::f32);
    const auto got = values(unary(c.op, Var(x)));
    const auto xs = values(x);
    for (std::size_t i = 0; i < xs.size(); ++i) {
      const double ref = c.ref(xs[i]);
      EXPECT_NEAR(got[i], ref, 1e-6 * std::max(1.0, std::abs(ref))) << "x = " << xs[i];
    }
  }
}

TEST(Unary, NamedWrappersUseTheirOps) {
  Tensor x = away_from_zero({6}, 9, 0.2, 2.0, true);
  const auto vx = values(x);
  const std::vector<std::pair<Var, double (*)(double)>> checks = {
      {neg(Var(x)), [](double v) { return -v; }},          {exp(Var(x)), [](double v) { return std::exp(v); }},
      {log(Var(x)), [](double v) { return std::log(v); }}, {sqrt(Var(x)), [](double v) { return std::sqrt(v); }},
      {square(Var(x)), [](double v) { return v * v; }},    {tanh(Var(x)), [](double v) { return std::tanh(v); }},
      {sigmoid(Var(x)), sigmoid_ref},
  };
  for (const auto& [y, ref] : checks) {
    const auto got = values(y);
    for (std::size_t i = 0; i < vx.size(); ++i) EXPECT_NEAR(got[i], ref(vx[i]), 1e-14);
  }
}

TEST(Elementwise, ChainedExpressionGradient) {
  // A small graph mixing broadcasting and unary ops, so gradients accumulate across nodes.
  Tensor x = random_tensor({2, 3}, 10), w = random_tensor({3}, 11, 0.5, 1.5);
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Var>& in) { return tanh(in[0] * in[1]) / in[1] + exp(affine(in[0], 0.5, 0.1)); }, {x, w}));
}
