// Dropout: the mask is a pure function of (seed, offset) through the Philox stream, the stream
// advances by numel per call, kept values are scaled by 1/(1-p), and backward reuses the mask.
#include <gtest/gtest.h>

#include <cmath>

#include "gradcheck.hpp"
#include "upcycle/ops/random.hpp"

using namespace upcycle;
using upcycle::testing::gradcheck;
using upcycle::testing::random_tensor;

namespace {

std::vector<double> values(const Var& v) { return v.value().to(DType::f64).to_vector<double>(); }

// Whether element i survives, computed straight from the Philox definition.
bool kept(std::uint64_t seed, std::uint64_t offset, std::int64_t i, double p) {
  return Philox4x32::uniform(seed, offset + static_cast<std::uint64_t>(i)) >= static_cast<float>(p);
}

}  // namespace

TEST(Dropout, MaskFollowsTheStreamDefinition) {
  const double p = 0.25;
  Tensor x = random_tensor({8, 16}, 91, 0.5, 1.5);  // nonzero, so dropped elements are recognisable
  RngStream rng(1234, 77);
  const auto y = values(dropout(Var(x), p, rng, true));
  EXPECT_EQ(rng.offset(), 77u + 128u);
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    const double want = kept(1234, 77, i, p) ? x.data<double>()[i] / (1.0 - p) : 0.0;
    EXPECT_NEAR(y[static_cast<std::size_t>(i)], want, 1e-15) << "element " << i;
  }
}

TEST(Dropout, SameSeedAndOffsetGiveTheSameMask) {
  Tensor x = random_tensor({4, 50}, 92, 0.5, 1.5);
  RngStream a(5, 1000), b(5, 1000);
  const auto ya = values(dropout(Var(x), 0.5, a, true));
  EXPECT_EQ(ya, values(dropout(Var(x), 0.5, b, true)));
  // The next call on the same stream draws fresh numbers: a different mask, equal to the one a
  // stream started at the advanced offset gives.
  const auto next = values(dropout(Var(x), 0.5, a, true));
  EXPECT_NE(next, ya);
  RngStream c(5, 1200);
  EXPECT_EQ(next, values(dropout(Var(x), 0.5, c, true)));
  // Another seed gives another mask.
  RngStream d(6, 1000);
  EXPECT_NE(values(dropout(Var(x), 0.5, d, true)), ya);
}

TEST(Dropout, KeepFractionAndScaling) {
  // n = 200000 Bernoulli(1 - p) draws: the kept fraction has standard deviation
  // sqrt(p (1 - p) / n) ~ 1.02e-3 for p = 0.3; a 6-sigma bound (6.2e-3) fails by chance with
  // probability ~2e-9 while a wrong p (even 0.29 vs 0.3) is caught.
  const std::int64_t n = 200000;
  for (double p : {0.1, 0.3, 0.5, 0.9}) {
    SCOPED_TRACE(p);
    Tensor x = Tensor::full({n}, 1.0, DType::f32, Device::cpu);
    RngStream rng(2024, 0);
    const auto y = dropout(Var(x), p, rng, true).value().to_vector<float>();
    const float scale = static_cast<float>(1.0 / (1.0 - p));
    std::int64_t keep = 0;
    for (float v : y) {
      if (v != 0.0f) {
        ++keep;
        ASSERT_EQ(v, scale);  // 1 * (1/(1-p)) rounded once to float
      }
    }
    const double frac = static_cast<double>(keep) / static_cast<double>(n);
    EXPECT_NEAR(frac, 1.0 - p, 6.0 * std::sqrt(p * (1.0 - p) / static_cast<double>(n)));
  }
}

TEST(Dropout, IdentityWhenNotTrainingOrPZero) {
  Tensor x = random_tensor({3, 4}, 93);
  RngStream rng(9, 10);
  Var in(x, true);
  Var eval = dropout(in, 0.5, rng, false);
  EXPECT_EQ(values(eval), x.to_vector<double>());
  EXPECT_EQ(rng.offset(), 10u) << "an identity dropout must not consume the stream";
  EXPECT_EQ(values(dropout(in, 0.0, rng, true)), x.to_vector<double>());
  EXPECT_EQ(rng.offset(), 10u);
  // The identity passes gradients straight through.
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Var>& v) {
        RngStream s(1, 0);
        return dropout(v[0], 0.5, s, false);
      },
      {x}));
}

TEST(Dropout, InvalidProbabilityThrows) {
  Var x(random_tensor({4}, 94));
  RngStream rng(1);
  EXPECT_THROW(dropout(x, 1.0, rng, true), Error);
  EXPECT_THROW(dropout(x, -0.1, rng, true), Error);
  EXPECT_THROW(dropout(x, 1.5, rng, false), Error);
}

TEST(Dropout, GradientUsesTheSameMask) {
  Tensor x = random_tensor({5, 6}, 95);
  // Every evaluation starts from the same (seed, offset), so the op is a fixed linear map.
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Var>& v) {
        RngStream s(31, 500);
        return dropout(v[0], 0.4, s, true);
      },
      {x}));
  // Explicitly: gradient = seed * mask.
  Var leaf(x, true);
  RngStream s(31, 500);
  Var y = dropout(leaf, 0.4, s, true);
  y.backward(Tensor::full(x.shape(), 1.0, DType::f64, Device::cpu));
  const auto g = leaf.grad().to_vector<double>();
  for (std::int64_t i = 0; i < x.numel(); ++i)
    EXPECT_NEAR(g[static_cast<std::size_t>(i)], kept(31, 500, i, 0.4) ? 1.0 / 0.6 : 0.0, 1e-15);
}
