// Router regularisers of the MoE layer (include/upcycle/moe/router_losses.hpp): load balancing,
// z-loss, auxiliary-loss-free bias, DPSL and routing statistics. Values against closed forms and
// hand computations, gradients by finite differences in double (tests/support/gradcheck.hpp).
//
// DPSL and finite differences: the empirical CDF j/B is held constant in the gradient, i.e. the
// analytic gradient is the derivative of the loss for a FIXED sort order. Central differences
// agree with it only where a +-eps perturbation of one input does not reorder any column, so every
// DPSL gradcheck below uses rows whose values in each column are at least kMinGap apart (checked
// before the gradcheck), far more than eps = 1e-6 times the largest softmax Jacobian entry. The
// pdf clip must not engage either (FD differentiates the unclipped CDF), so those checks use
// priors whose pdf stays below the clip on the rows used.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "gradcheck.hpp"
#include "upcycle/moe/router_losses.hpp"
#include "upcycle/ops/softmax.hpp"

namespace upcycle {
namespace {

using testing::gradcheck;
using testing::GradcheckOptions;
using testing::randn_tensor;

constexpr double kMinGap = 1e-4;

Tensor idx_tensor(const std::vector<std::int64_t>& v, std::int64_t rows, std::int64_t k) {
  return Tensor::from_vector(v, {rows, k}, Device::cpu);
}

Tensor softmax_rows(const Tensor& z) {
  NoGradGuard ng;
  return softmax(Var(z)).value();
}

// Smallest gap between two values of the same column of p [B, E].
double min_column_gap(const Tensor& p) {
  const std::int64_t B = p.dim(0), E = p.dim(1);
  const Tensor p64 = p.to(DType::f64);
  double gap = INFINITY;
  for (std::int64_t k = 0; k < E; ++k) {
    std::vector<double> col;
    for (std::int64_t t = 0; t < B; ++t) col.push_back(p64.data<double>()[t * E + k]);
    std::sort(col.begin(), col.end());
    for (std::size_t i = 1; i < col.size(); ++i) gap = std::min(gap, col[i] - col[i - 1]);
  }
  return gap;
}

// Logits [B, E] whose softmax columns are well separated: drawn from a seed, then checked.
Tensor separated_logits(std::int64_t B, std::int64_t E, std::uint64_t seed, double std = 1.0) {
  for (std::uint64_t s = seed; s < seed + 100; ++s) {
    Tensor z = randn_tensor({B, E}, s, std);
    if (min_column_gap(softmax_rows(z)) >= kMinGap) return z;
  }
  ADD_FAILURE() << "no well-separated logits found";
  return randn_tensor({B, E}, seed, std);
}

double scalar(const Var& v) { return v.value().to(DType::f64).item<double>(); }

// ------------------------------------------------------------------------------------------------
// Load balancing

TEST(LoadBalancing, BalancedRoutingGivesExactlyTheWeight) {
  const std::int64_t T = 8, E = 4, k = 2;
  // Every expert gets exactly T k / E = 4 slots; the probabilities are arbitrary.
  const Tensor idx = idx_tensor({0, 1, 2, 3, 1, 0, 3, 2, 0, 2, 1, 3, 2, 3, 0, 1}, T, k);
  const Tensor p = softmax_rows(randn_tensor({T, E}, 3, 2.0));
  for (double a : {0.01, 1.0, 0.37}) {
    const Var loss = moe::load_balancing_loss(Var(p), idx, a);
    ASSERT_EQ(loss.shape(), Shape{1});
    EXPECT_DOUBLE_EQ(scalar(loss), a) << "weight " << a;
  }
  // f32 too (sum_e P_e = 1 up to f32 rounding).
  EXPECT_NEAR(scalar(moe::load_balancing_loss(Var(p.to(DType::f32)), idx, 0.01)), 0.01, 1e-8);
}

TEST(LoadBalancing, SkewedRoutingMatchesTheFormula) {
  const std::int64_t T = 3, E = 3, k = 1;
  const std::vector<double> pv = {0.7, 0.2, 0.1, 0.6, 0.3, 0.1, 0.2, 0.2, 0.6};
  const Tensor p = Tensor::from_vector(pv, {T, E}, Device::cpu);
  const Tensor idx = idx_tensor({0, 0, 2}, T, k);
  // f = (2/3, 0, 1/3), P = (1.5/3, 0.7/3, 0.8/3): L = a E sum f P.
  const double want = 0.5 * 3 * (2.0 / 3 * 1.5 / 3 + 1.0 / 3 * 0.8 / 3);
  EXPECT_NEAR(scalar(moe::load_balancing_loss(Var(p), idx, 0.5)), want, 1e-15);
}

TEST(LoadBalancing, GradientThroughTheSoftmax) {
  const std::int64_t T = 6, E = 5, k = 2;
  const Tensor idx = idx_tensor({0, 1, 0, 2, 0, 4, 3, 0, 1, 0, 2, 1}, T, k);
  const Tensor z = randn_tensor({T, E}, 11);
  EXPECT_TRUE(gradcheck([&](const std::vector<Var>& in) {
    return moe::load_balancing_loss(softmax(in[0]), idx, 0.3);
  }, {z}));
  // And directly on p (the loss is linear in p: dL/dp_te = a E f_e / T).
  const Tensor p = softmax_rows(z);
  Var pv(p.clone(), true);
  moe::load_balancing_loss(pv, idx, 0.3).backward();
  const std::vector<double> counts = {5, 3, 2, 1, 1};  // slots per expert
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t e = 0; e < E; ++e)
      EXPECT_NEAR(pv.grad().data<double>()[t * E + e], 0.3 * E * (counts[e] / (T * k)) / T, 1e-15);
}

TEST(LoadBalancing, EmptyBatchIsZero) {
  Var p(Tensor::zeros({0, 4}, DType::f64, Device::cpu), true);
  Var loss = moe::load_balancing_loss(p, Tensor::zeros({0, 2}, DType::i64, Device::cpu), 0.01);
  EXPECT_EQ(scalar(loss), 0.0);
  loss.backward();
  EXPECT_EQ(p.grad().shape(), Shape({0, 4}));
}

TEST(LoadBalancing, RejectsBadIndices) {
  const Tensor p = softmax_rows(randn_tensor({2, 3}, 1));
  EXPECT_THROW(moe::load_balancing_loss(Var(p), idx_tensor({0, 3}, 2, 1)), Error);
  EXPECT_THROW(moe::load_balancing_loss(Var(p), idx_tensor({0, 1, 2}, 3, 1)), Error);
}

// ------------------------------------------------------------------------------------------------
// z-loss

TEST(ZLoss, ClosedForm) {
  // Row 0: four zeros, lse = log 4. Row 1: log(1..4), lse = log 10. Row 2: 1000 + zeros (stable).
  const std::vector<double> z = {0, 0, 0, 0, 0, std::log(2.0), std::log(3.0), std::log(4.0), 1000, 1000, 1000, 1000};
  const double b = 0.001;
  const double l4 = std::log(4.0), l10 = std::log(10.0), big = 1000 + std::log(4.0);
  const double want = b * (l4 * l4 + l10 * l10 + big * big) / 3.0;
  const Var loss = moe::router_z_loss(Var(Tensor::from_vector(z, {3, 4}, Device::cpu)), b);
  ASSERT_EQ(loss.shape(), Shape{1});
  EXPECT_NEAR(scalar(loss), want, 1e-13 * want);
  const Var loss32 = moe::router_z_loss(Var(Tensor::from_vector(z, {3, 4}, Device::cpu).to(DType::f32)), b);
  EXPECT_NEAR(scalar(loss32), want, 1e-6 * want);
}

TEST(ZLoss, Gradient) {
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return moe::router_z_loss(in[0], 0.2); },
                        {randn_tensor({7, 5}, 21, 2.0)}));
}

TEST(ZLoss, EmptyBatchIsZero) {
  Var z(Tensor::zeros({0, 3}, DType::f64, Device::cpu), true);
  Var loss = moe::router_z_loss(z);
  EXPECT_EQ(scalar(loss), 0.0);
  loss.backward();
  EXPECT_EQ(z.grad().shape(), Shape({0, 3}));
}

// ------------------------------------------------------------------------------------------------
// Auxiliary-loss-free bias

TEST(AuxFreeBias, SelectionAddsTheBiasAndUpdateFollowsTheSign) {
  moe::AuxFreeBias bias(3, 0.1, DType::f64, Device::cpu);
  bias.update(std::vector<double>{5, 1, 3});  // mean 3: +u, -u... for e = 0 (over-used) -u
  const std::vector<double> b = bias.bias().to_vector<double>();
  EXPECT_DOUBLE_EQ(b[0], -0.1);
  EXPECT_DOUBLE_EQ(b[1], 0.1);
  EXPECT_DOUBLE_EQ(b[2], 0.0);  // at the mean: sign(0) = 0
  const Tensor p = Tensor::from_vector(std::vector<double>{0.45, 0.4, 0.15}, {1, 3}, Device::cpu);
  const std::vector<double> s = bias.selection_scores(p).to_vector<double>();
  EXPECT_DOUBLE_EQ(s[0], 0.35);
  EXPECT_DOUBLE_EQ(s[1], 0.5);
  EXPECT_DOUBLE_EQ(s[2], 0.15);
  // The bias changes the selection (expert 1 now wins), not the probabilities.
  EXPECT_EQ(bias.select(p, 1).to_vector<std::int64_t>(), (std::vector<std::int64_t>{1}));
  EXPECT_DOUBLE_EQ(p.to_vector<double>()[0], 0.45);
}

TEST(AuxFreeBias, LoadsMoveTowardTheUnderUsedExperts) {
  // A skewed toy router: fixed probabilities that strongly favour expert 0 (then 1), top-2 of
  // p + bias, repeated bias updates from the resulting loads.
  const std::int64_t T = 512, E = 8, k = 2;
  Tensor z = randn_tensor({T, E}, 5, 0.3, DType::f32);
  float* pz = z.data<float>();
  for (std::int64_t t = 0; t < T; ++t) {
    pz[t * E + 0] += 2.0f;
    pz[t * E + 1] += 1.0f;
  }
  const Tensor p = softmax_rows(z);
  moe::AuxFreeBias bias(E, 0.002, DType::f32, Device::cpu);
  std::vector<double> cov;
  for (int it = 0; it < 300; ++it) {
    const Tensor idx = bias.select(p, k);
    const moe::RoutingStats st = moe::routing_stats(p, idx);
    cov.push_back(st.load_cov);
    bias.update(moe::expert_load(idx, E));
  }
  // The CoV of the loads decreases: window means (30 iterations each) fall until they reach the
  // noise floor of the sign updates, and the end is far below the start.
  std::vector<double> window;
  for (std::size_t w = 0; w < cov.size() / 30; ++w)
    window.push_back(std::accumulate(cov.begin() + 30 * w, cov.begin() + 30 * (w + 1), 0.0) / 30.0);
  std::printf("load CoV: start %.3f, window means:", cov.front());
  for (double w : window) std::printf(" %.3f", w);
  std::printf("\n");
  EXPECT_GT(cov.front(), 1.5);
  for (std::size_t w = 1; w < 4; ++w) EXPECT_LT(window[w], window[w - 1]) << "window " << w;
  EXPECT_LT(window.back(), 0.1 * cov.front());
  // The under-used experts (2..7) ended with a larger bias than the favoured ones.
  const std::vector<float> b = bias.bias().to_vector<float>();
  for (std::int64_t e = 2; e < E; ++e) {
    EXPECT_GT(b[e], b[0]);
    EXPECT_GT(b[e], b[1]);
  }
}

// ------------------------------------------------------------------------------------------------
// DPSL

moe::DpslOptions local_options(double weight, double clip = 100.0) {
  moe::DpslOptions o;
  o.weight = weight;
  o.pdf_clip = clip;
  o.scope = moe::DpslScope::rank;
  return o;
}

TEST(Dpsl, BetaFunctionsAtKnownPoints) {
  EXPECT_NEAR(moe::beta_cdf(1, 1, 0.3), 0.3, 1e-15);               // uniform
  EXPECT_NEAR(moe::beta_cdf(1, 3, 0.5), 1 - 0.125, 1e-15);         // 1 - (1-x)^3
  EXPECT_NEAR(moe::beta_pdf(1, 3, 0.5), 3 * 0.25, 1e-14);          // 3 (1-x)^2
  EXPECT_NEAR(moe::beta_cdf(0.5, 0.5, 0.25), 2 / M_PI * std::asin(0.5), 1e-15);  // arcsine law
  EXPECT_EQ(moe::beta_pdf(0.5, 1.5, 0.0), INFINITY);
  EXPECT_EQ(moe::beta_pdf(1.0, 3.0, 0.0), 3.0);
  EXPECT_EQ(moe::beta_pdf(2.0, 3.0, 0.0), 0.0);
  EXPECT_EQ(moe::beta_cdf(2.0, 3.0, 0.0), 0.0);
  EXPECT_EQ(moe::beta_cdf(2.0, 3.0, 1.0), 1.0);
}

TEST(Dpsl, ClosedFormForTheUniformPrior) {
  // E = 2, alpha = (1, 1): both marginals are Beta(1, 1), F(x) = x. Rows (j/B, 1 - j/B): column 0
  // sorted is j/B (no error); column 1 sorted is (j-1)/B (error 1/B each), so L = lambda / B^2.
  const std::int64_t B = 10;
  std::vector<double> v;
  for (std::int64_t j = 1; j <= B; ++j) {
    v.push_back(static_cast<double>(j) / B);
    v.push_back(1.0 - static_cast<double>(j) / B);
  }
  const Var loss = moe::dpsl_loss(Var(Tensor::from_vector(v, {B, 2}, Device::cpu)), moe::DirichletPrior::symmetric(2, 1.0),
                                  local_options(0.5));
  EXPECT_NEAR(scalar(loss), 0.5 / (B * B), 1e-15);
}

TEST(Dpsl, GradientSymmetricPriorThroughTheSoftmax) {
  const Tensor z = separated_logits(12, 4, 100);
  const auto prior = moe::DirichletPrior::symmetric(4, 1.0);  // pdf <= 3 < clip
  EXPECT_TRUE(gradcheck([&](const std::vector<Var>& in) {
    return moe::dpsl_loss(softmax(in[0]), prior, local_options(0.7));
  }, {z}));
}

TEST(Dpsl, GradientOnProbabilitiesForSeveralPriors) {
  const Tensor p = softmax_rows(separated_logits(15, 5, 200));
  const double pmin = *std::min_element(p.data<double>(), p.data<double>() + p.numel());
  ASSERT_GT(pmin, 1e-3);  // keeps the alpha < 1 pdf below the clip
  const std::vector<moe::DirichletPrior> priors = {
      moe::DirichletPrior::symmetric(5, 1.0), moe::DirichletPrior::symmetric(5, 0.5),
      moe::DirichletPrior::symmetric(5, 3.0), moe::DirichletPrior::asymmetric({1.5, 1.0, 0.75, 1.25, 0.9})};
  for (const auto& prior : priors) {
    EXPECT_TRUE(gradcheck([&](const std::vector<Var>& in) {
      return moe::dpsl_loss(in[0], prior, local_options(0.9, 1e6));
    }, {p})) << "alpha_0 = " << prior.alpha[0][0];
  }
}

TEST(Dpsl, GradientGroupConditionedWithIgnoredRows) {
  const std::int64_t B = 18, E = 4;
  const Tensor z = separated_logits(B, E, 300);
  const Tensor g = Tensor::from_vector(std::vector<std::int64_t>{0, 1, 2, 0, -1, 1, 2, 2, 0, 1, 1, 0, -1, 2, 0, 1, 2, 0},
                                       {B}, Device::cpu);
  const auto prior = moe::DirichletPrior::group_conditioned(3, E, 0.75, 0.5);
  EXPECT_TRUE(gradcheck([&](const std::vector<Var>& in) {
    return moe::dpsl_loss(softmax(in[0]), prior, local_options(0.6, 1e6), g);
  }, {z}));
  // Ignored rows get exactly zero gradient on p.
  Var p(softmax_rows(z), true);
  moe::dpsl_loss(p, prior, local_options(0.6), g).backward();
  for (std::int64_t t : {4, 12})
    for (std::int64_t e = 0; e < E; ++e) EXPECT_EQ(p.grad().data<double>()[t * E + e], 0.0);
}

TEST(Dpsl, GroupLossIsTheSumOfPerGroupLosses) {
  const std::int64_t B = 20, E = 4;
  const Tensor p = softmax_rows(randn_tensor({B, E}, 7, 1.5));
  std::vector<std::int64_t> gv(B);
  for (std::int64_t t = 0; t < B; ++t) gv[t] = (t * 7) % 3 == 0 ? 1 : 0;
  const auto prior = moe::DirichletPrior::group_conditioned(2, E, 0.75, 0.5);
  const double total = scalar(moe::dpsl_loss(Var(p), prior, local_options(0.1), Tensor::from_vector(gv, {B}, Device::cpu)));
  double sum = 0.0;
  for (std::int64_t m = 0; m < 2; ++m) {
    std::vector<double> rows;
    for (std::int64_t t = 0; t < B; ++t)
      if (gv[t] == m) rows.insert(rows.end(), p.data<double>() + t * E, p.data<double>() + (t + 1) * E);
    const Tensor pm = Tensor::from_vector(rows, {static_cast<std::int64_t>(rows.size()) / E, E}, Device::cpu);
    sum += scalar(moe::dpsl_loss(Var(pm), moe::DirichletPrior::asymmetric(prior.alpha[m]), local_options(0.1)));
  }
  EXPECT_NEAR(total, sum, 1e-15);
}

TEST(Dpsl, PdfClipBoundsTheGradient) {
  // alpha = 0.5: at p = 0 the pdf is infinite. The gradient there is (2 lambda / B)(F - j/B) clip.
  const std::int64_t B = 4;  // E = 3; column 0 = {0, 0.2, 0.6, 0.3}
  const Tensor pt = Tensor::from_vector(std::vector<double>{0.0, 0.5, 0.5, 0.2, 0.3, 0.5, 0.6, 0.2, 0.2, 0.3, 0.3, 0.4},
                                        {B, 3}, Device::cpu);
  Var p(pt, true);
  const double lambda = 0.1, clip = 7.0;
  moe::dpsl_loss(p, moe::DirichletPrior::symmetric(3, 0.5), local_options(lambda, clip)).backward();
  // p[0][0] = 0 is first in column 0 (j = 1), F(0) = 0.
  const double want = 2 * lambda / B * (0.0 - 1.0 / B) * clip;
  EXPECT_NEAR(p.grad().data<double>()[0], want, 1e-15);
  for (std::int64_t i = 0; i < p.grad().numel(); ++i) EXPECT_TRUE(std::isfinite(p.grad().data<double>()[i]));
}

TEST(Dpsl, TiesAndRowOrderDoNotChangeTheLoss) {
  const std::int64_t B = 9, E = 3;
  Tensor p = softmax_rows(randn_tensor({B, E}, 17));
  double* d = p.data<double>();
  std::copy_n(d + 2 * E, E, d + 5 * E);  // rows 2 and 5 tie in every column
  const auto prior = moe::DirichletPrior::asymmetric({1.2, 0.8, 1.0});
  const double l0 = scalar(moe::dpsl_loss(Var(p), prior, local_options(0.3)));
  std::vector<double> rev;
  for (std::int64_t t = B - 1; t >= 0; --t) rev.insert(rev.end(), d + t * E, d + (t + 1) * E);
  const double l1 = scalar(moe::dpsl_loss(Var(Tensor::from_vector(rev, {B, E}, Device::cpu)), prior, local_options(0.3)));
  EXPECT_NEAR(l0, l1, 1e-16);
}

TEST(Dpsl, GroupConditionedOwnership) {
  using P = moe::DirichletPrior;
  auto boosted = [](const P& p, std::int64_t m) {
    std::vector<int> e;
    for (std::size_t i = 0; i < p.alpha[m].size(); ++i)
      if (p.alpha[m][i] == 1.25) e.push_back(static_cast<int>(i));
    return e;
  };
  const P eq = P::group_conditioned(4, 4, 0.75, 0.5);  // G == E: group m boosts expert m
  for (int m = 0; m < 4; ++m) EXPECT_EQ(boosted(eq, m), std::vector<int>({m}));
  const P two = P::group_conditioned(2, 4, 0.75, 0.5);  // G < E: contiguous blocks
  EXPECT_EQ(boosted(two, 0), std::vector<int>({0, 1}));
  EXPECT_EQ(boosted(two, 1), std::vector<int>({2, 3}));
  const P three = P::group_conditioned(3, 4, 0.75, 0.5);  // floor(e 3 / 4): 0 0 1 2
  EXPECT_EQ(boosted(three, 0), std::vector<int>({0, 1}));
  EXPECT_EQ(boosted(three, 1), std::vector<int>({2}));
  EXPECT_EQ(boosted(three, 2), std::vector<int>({3}));
  const P six = P::group_conditioned(6, 4, 0.75, 0.5);  // G > E: floor(m 4 / 6): 0 0 1 2 2 3
  const std::vector<int> owner = {0, 0, 1, 2, 2, 3};
  for (int m = 0; m < 6; ++m) EXPECT_EQ(boosted(six, m), std::vector<int>({owner[m]}));
  EXPECT_THROW(P::symmetric(1), Error);
  EXPECT_THROW(P::asymmetric({1.0, 0.0, 1.0}), Error);
}

TEST(Dpsl, ArgumentChecks) {
  const Tensor p = softmax_rows(randn_tensor({5, 4}, 1));
  const auto grouped = moe::DirichletPrior::group_conditioned(2, 4);
  EXPECT_THROW(moe::dpsl_loss(Var(p), grouped, local_options(0.1)), Error);  // groups missing
  EXPECT_THROW(moe::dpsl_loss(Var(p), grouped, local_options(0.1),
                              Tensor::from_vector(std::vector<std::int64_t>{0, 1, 2, 0, 1}, {5}, Device::cpu)),
               Error);  // id 2 >= G
  EXPECT_THROW(moe::dpsl_loss(Var(p), moe::DirichletPrior::symmetric(3), local_options(0.1)), Error);
}

TEST(Dpsl, Float32MatchesFloat64) {
  const Tensor p = softmax_rows(randn_tensor({64, 8}, 9, 2.0));
  const auto prior = moe::DirichletPrior::symmetric(8, 1.0);
  Var p64(p, true), p32(p.to(DType::f32), true);
  Var l64 = moe::dpsl_loss(p64, prior, local_options(0.01));
  Var l32 = moe::dpsl_loss(p32, prior, local_options(0.01));
  EXPECT_EQ(l32.dtype(), DType::f32);
  EXPECT_NEAR(scalar(l32), scalar(l64), 1e-6 * scalar(l64));
  l64.backward();
  l32.backward();
  EXPECT_EQ(p32.grad().dtype(), DType::f32);
  EXPECT_LT(testing::max_abs_diff(p32.grad(), p64.grad()), 1e-4 * testing::max_abs_diff(p64.grad(), Tensor::zeros_like(p64.grad())));
}

TEST(Dpsl, NoGradientRecordingGivesAPlainValue) {
  const Tensor p = softmax_rows(randn_tensor({6, 3}, 2));
  NoGradGuard ng;
  const Var l = moe::dpsl_loss(Var(p, true), moe::DirichletPrior::symmetric(3), local_options(0.1));
  EXPECT_FALSE(l.requires_grad());
  EXPECT_GT(scalar(l), 0.0);
}

// ------------------------------------------------------------------------------------------------
// Routing statistics

TEST(RoutingStats, HandComputed) {
  const std::int64_t T = 4, E = 3;
  const Tensor p = Tensor::from_vector(
      std::vector<double>{0.5, 0.25, 0.25, 1.0, 0.0, 0.0, 0.2, 0.3, 0.5, 1.0 / 3, 1.0 / 3, 1.0 / 3}, {T, E}, Device::cpu);
  const Tensor idx = idx_tensor({0, 0, 2, 1}, T, 1);
  const moe::RoutingStats s = moe::routing_stats(p, idx);
  EXPECT_EQ(s.num_tokens, 4);
  EXPECT_EQ(s.num_slots, 4);
  EXPECT_EQ(s.counts, (std::vector<double>{2, 1, 1}));
  // mean 4/3, population std sqrt(2)/3.
  EXPECT_NEAR(s.load_cov, std::sqrt(2.0) / 4.0, 1e-15);
  EXPECT_NEAR(s.load_max_over_mean, 1.5, 1e-15);
  const double h = (1.5 * std::log(2.0) + 0.0 - (0.2 * std::log(0.2) + 0.3 * std::log(0.3) + 0.5 * std::log(0.5)) +
                    std::log(3.0)) / 4.0;
  EXPECT_NEAR(s.mean_entropy, h, 1e-15);
  EXPECT_NEAR(s.normalized_entropy, h / std::log(3.0), 1e-15);
  EXPECT_NEAR(s.expert_mean_prob[0], 0.75, 1e-15);
  EXPECT_NEAR(s.expert_mean_prob[1], 1.0 / 3, 1e-15);
  EXPECT_NEAR(s.expert_mean_prob[2], 0.5, 1e-15);

  // Token 1's slot dropped: loads (1, 1, 1), perfectly balanced; entropy unchanged.
  for (const Tensor& dropped : {Tensor::from_vector(std::vector<std::int64_t>{0, 1, 0, 0}, {T, 1}, Device::cpu),
                                Tensor::from_vector(std::vector<float>{0, 1, 0, 0}, {T}, Device::cpu)}) {
    const moe::RoutingStats d = moe::routing_stats(p, idx, dropped);
    EXPECT_EQ(d.counts, (std::vector<double>{1, 1, 1}));
    EXPECT_EQ(d.num_slots, 3);
    EXPECT_EQ(d.load_cov, 0.0);
    EXPECT_NEAR(d.load_max_over_mean, 1.0, 1e-15);
    EXPECT_NEAR(d.expert_mean_prob[0], 0.5, 1e-15);
    EXPECT_NEAR(d.mean_entropy, h, 1e-15);
  }
}

TEST(RoutingStats, TopTwoAndUnusedExpert) {
  const std::int64_t T = 2, E = 4;
  const Tensor p = Tensor::from_vector(std::vector<float>{0.4f, 0.3f, 0.2f, 0.1f, 0.1f, 0.6f, 0.25f, 0.05f}, {T, E}, Device::cpu);
  const Tensor idx = idx_tensor({0, 1, 1, 2}, T, 2);
  const moe::RoutingStats s = moe::routing_stats(p, idx);
  EXPECT_EQ(s.counts, (std::vector<double>{1, 2, 1, 0}));
  // mean 1, variance (0 + 1 + 0 + 1) / 4 = 0.5.
  EXPECT_NEAR(s.load_cov, std::sqrt(0.5), 1e-15);
  EXPECT_NEAR(s.load_max_over_mean, 2.0, 1e-15);
  EXPECT_NEAR(s.expert_mean_prob[1], (0.3 + 0.6) / 2, 1e-7);
  EXPECT_EQ(s.expert_mean_prob[3], 0.0);
}

TEST(ExpertLoad, Counts) {
  EXPECT_EQ(moe::expert_load(idx_tensor({0, 2, 2, 1, 2, 0}, 3, 2), 4).to_vector<double>(),
            (std::vector<double>{2, 1, 3, 0}));
}

}  // namespace
}  // namespace upcycle
