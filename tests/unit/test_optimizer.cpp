// AdamW against a scalar reference of the published update; the schedule's shape.
#include <gtest/gtest.h>

#include <cmath>

#include "gradcheck.hpp"
#include "upcycle/train/optimizer.hpp"

using namespace upcycle;

TEST(AdamW, MatchesTheReferenceUpdateAndSkipsDecayOnVectors) {
  Var w(upcycle::testing::random_tensor({3, 2}, 1), true);
  Var b(upcycle::testing::random_tensor({2}, 2), true);
  AdamWOptions o;
  o.weight_decay = 0.1;
  AdamW opt({{"w", w}, {"b", b}}, o);
  EXPECT_TRUE(opt.slots()[0].decay);
  EXPECT_FALSE(opt.slots()[1].decay);

  // Reference: Loshchilov & Hutter's AdamW as implemented by torch.optim.AdamW, in scalars.
  auto wv = w.value().to_vector<double>(), bv = b.value().to_vector<double>();
  std::vector<double> mw(6, 0), vw(6, 0), mb(2, 0), vb(2, 0);
  const double lr = 0.01;
  for (int t = 1; t <= 3; ++t) {
    Tensor gw = upcycle::testing::random_tensor({3, 2}, 10 + static_cast<std::uint64_t>(t));
    Tensor gb = upcycle::testing::random_tensor({2}, 20 + static_cast<std::uint64_t>(t));
    w.set_grad(gw);
    b.set_grad(gb);
    opt.step(lr);
    auto ref = [&](std::vector<double>& p, std::vector<double>& m, std::vector<double>& v, const Tensor& g, double wd) {
      for (std::size_t i = 0; i < p.size(); ++i) {
        const double gi = g.data<double>()[i];
        p[i] *= 1 - lr * wd;
        m[i] = 0.9 * m[i] + 0.1 * gi;
        v[i] = 0.999 * v[i] + 0.001 * gi * gi;
        const double mh = m[i] / (1 - std::pow(0.9, t)), vh = v[i] / (1 - std::pow(0.999, t));
        p[i] -= lr * mh / (std::sqrt(vh) + 1e-8);
      }
    };
    ref(wv, mw, vw, gw, 0.1);
    ref(bv, mb, vb, gb, 0.0);
  }
  EXPECT_EQ(opt.steps_taken(), 3);
  // Same formula in double, only the order of a few operations differs.
  for (std::size_t i = 0; i < 6; ++i) EXPECT_NEAR(w.value().data<double>()[i], wv[i], 1e-14);
  for (std::size_t i = 0; i < 2; ++i) EXPECT_NEAR(b.value().data<double>()[i], bv[i], 1e-14);
}

TEST(AdamW, ParametersWithoutGradientAreLeftAlone) {
  Var w(upcycle::testing::random_tensor({2, 2}, 1), true);
  const auto before = w.value().to_vector<double>();
  AdamW opt({{"w", w}}, {});
  opt.step(0.1);
  EXPECT_EQ(w.value().to_vector<double>(), before);
}

TEST(Schedule, WarmupThenCosineToMinimum) {
  EXPECT_DOUBLE_EQ(warmup_cosine_lr(0, 100, 10, 1.0, 0.1), 0.1);
  EXPECT_DOUBLE_EQ(warmup_cosine_lr(9, 100, 10, 1.0, 0.1), 1.0);
  EXPECT_DOUBLE_EQ(warmup_cosine_lr(10, 100, 10, 1.0, 0.1), 1.0);
  EXPECT_NEAR(warmup_cosine_lr(55, 100, 10, 1.0, 0.1), 0.55, 1e-12);  // halfway: the midpoint
  EXPECT_DOUBLE_EQ(warmup_cosine_lr(100, 100, 10, 1.0, 0.1), 0.1);
  EXPECT_DOUBLE_EQ(warmup_cosine_lr(500, 100, 10, 1.0, 0.1), 0.1);
}
