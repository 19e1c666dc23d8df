// The expert specialisation measures (include/upcycle/moe/specialisation.hpp) on hand-made inputs
// with known answers, and on an MoE layer whose experts are set to copies / sign flips of each other.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "upcycle/core/error.hpp"
#include "upcycle/moe/moe_layer.hpp"
#include "upcycle/moe/router_losses.hpp"
#include "upcycle/moe/specialisation.hpp"

using namespace upcycle;
using namespace upcycle::moe;

namespace {

Tensor t64(const std::vector<double>& v, const Shape& shape) { return Tensor::from_vector(v, shape, Device::cpu); }
Tensor i64(const std::vector<std::int64_t>& v, const Shape& shape) { return Tensor::from_vector(v, shape, Device::cpu); }

}  // namespace

TEST(Specialisation, WeightCosineOfIdenticalOrthogonalAndOppositeExperts) {
  // E = 2 experts: w1 [2, 2, 2] (F r = 2, D = 2) and w2 [2, 2, 1] (D = 2, F = 1).
  // Identical experts: 1.
  EXPECT_NEAR(expert_weight_cosine(t64({1, 2, 3, 4, 1, 2, 3, 4}, {2, 2, 2}), t64({5, 6, 5, 6}, {2, 2, 1})), 1.0, 1e-15);
  // A positive multiple is as similar as a copy.
  EXPECT_NEAR(expert_weight_cosine(t64({1, 2, 3, 4, 2, 4, 6, 8}, {2, 2, 2}), t64({5, 6, 10, 12}, {2, 2, 1})), 1.0, 1e-15);
  // Opposite: -1.
  EXPECT_NEAR(expert_weight_cosine(t64({1, 2, 3, 4, -1, -2, -3, -4}, {2, 2, 2}), t64({5, 6, -5, -6}, {2, 2, 1})), -1.0,
              1e-15);
  // Expert 0 only in w1, expert 1 only in w2: orthogonal, 0.
  EXPECT_NEAR(expert_weight_cosine(t64({1, 2, 3, 4, 0, 0, 0, 0}, {2, 2, 2}), t64({0, 0, 5, 6}, {2, 2, 1})), 0.0, 1e-15);
  // The concatenation [w1, w2]: w1 equal, w2 opposite: (|w1|^2 - |w2|^2) / (|w1|^2 + |w2|^2) = (30 - 61) / 91.
  EXPECT_NEAR(expert_weight_cosine(t64({1, 2, 3, 4, 1, 2, 3, 4}, {2, 2, 2}), t64({5, 6, -5, -6}, {2, 2, 1})),
              -31.0 / 91.0, 1e-15);
  // E = 3: v0 = v1, v2 orthogonal to both: pairs (1, 0, 0) -> 1/3.
  EXPECT_NEAR(mean_pairwise_cosine(t64({1, 0, 0, 2, 0, 0, 0, 0, 3}, {3, 3})), 1.0 / 3.0, 1e-15);
  // One expert has no pair.
  EXPECT_TRUE(std::isnan(mean_pairwise_cosine(t64({1, 2}, {1, 2}))));
  EXPECT_THROW(expert_weight_cosine(t64({1, 2}, {2, 1, 1}), t64({1, 2, 3}, {3, 1, 1})), Error);
}

TEST(Specialisation, OutputCosineAveragesPairsThenTokens) {
  // E = 2, N = 2, D = 2: token 0 the same output from both experts (1), token 1 opposite (-1).
  const Tensor o = t64({1, 2, 3, 4,  /* expert 0: tokens 0, 1 */
                        2, 4, -3, -4 /* expert 1 */},
                       {2, 2, 2});
  EXPECT_NEAR(expert_output_cosine(o), 0.0, 1e-15);
  EXPECT_NEAR(expert_output_cosine_sum(o), 0.0, 1e-15);
  // E = 3, N = 1: outputs e0 = (1, 0), e1 = (0, 1), e2 = (1, 1)/..: pairs 0, 1/sqrt2, 1/sqrt2.
  const Tensor p = t64({1, 0, 0, 1, 1, 1}, {3, 1, 2});
  EXPECT_NEAR(expert_output_cosine(p), (2.0 / std::sqrt(2.0)) / 3.0, 1e-15);
  // The sum over tokens adds up over chunks: tokens {0} and {1} of `o` separately.
  const Tensor o0 = t64({1, 2, 2, 4}, {2, 1, 2}), o1 = t64({3, 4, -3, -4}, {2, 1, 2});
  EXPECT_NEAR(expert_output_cosine_sum(o0), 1.0, 1e-15);
  EXPECT_NEAR(expert_output_cosine_sum(o1), -1.0, 1e-15);
  // A zero output has no direction: its cosines count as 0.
  EXPECT_NEAR(expert_output_cosine(t64({0, 0, 1, 0}, {2, 1, 2})), 0.0, 1e-15);
}

// Planted clusters: expert e's tokens are c_e +- delta_e, so its within variance is |delta_e|^2;
// the variance of the means c_e is known.
TEST(Specialisation, RelativeCompactnessOfPlantedClusters) {
  // Centres (0, 0), (4, 0), (0, 4); deltas: expert 0 (1, 0), expert 1 (0, 2), expert 2 (1, 1).
  const std::vector<double> y = {1, 0, -1, 0,       // expert 0
                                 4, 2, 4, -2,       // expert 1
                                 1, 5, -1, 3,       // expert 2
                                 100, 100};         // expert 3: one token only, not counted
  const std::vector<std::int64_t> top1 = {0, 0, 1, 1, 2, 2, 3};
  CompactnessStats s(4, 2);
  s.add(t64(y, {7, 2}), i64(top1, {7}));
  const double within = (1.0 + 4.0 + 2.0) / 3.0;
  // |c - m|^2 for c = (0,0), (4,0), (0,4) with m = (4/3, 4/3): 32/9, 80/9, 80/9.
  const double between = (32.0 + 80.0 + 80.0) / 9.0 / 3.0;
  EXPECT_NEAR(s.relative_compactness(), within / between, 1e-14);
  EXPECT_EQ(s.counts(), (std::vector<double>{2, 2, 2, 1}));

  // Top-1 from indices [T, k] (column 0), and the tokens split in two adds (as over chunks or
  // ranks) give the same statistics.
  CompactnessStats parts(4, 2);
  std::vector<std::int64_t> idx;
  for (std::int64_t e : top1) idx.insert(idx.end(), {e, (e + 1) % 4});
  parts.add(t64(std::vector<double>(y.begin(), y.begin() + 6), {3, 2}), i64({idx.begin(), idx.begin() + 6}, {3, 2}));
  parts.add(t64(std::vector<double>(y.begin() + 6, y.end()), {4, 2}), i64({idx.begin() + 6, idx.end()}, {4, 2}));
  EXPECT_NEAR(parts.relative_compactness(), within / between, 1e-14);
  auto self = std::make_shared<SelfCommunicator>();
  parts.all_reduce(*self);
  EXPECT_NEAR(parts.relative_compactness(), within / between, 1e-14);

  // Perfectly tight clusters: 0. Only one expert with >= 2 tokens: undefined (NaN).
  CompactnessStats tight(2, 1);
  tight.add(t64({1, 1, 5, 5}, {4, 1}), i64({0, 0, 1, 1}, {4}));
  EXPECT_NEAR(tight.relative_compactness(), 0.0, 1e-15);
  CompactnessStats lonely(2, 1);
  lonely.add(t64({1, 2, 5}, {3, 1}), i64({0, 0, 1}, {3}));
  EXPECT_TRUE(std::isnan(lonely.relative_compactness()));
  EXPECT_THROW(lonely.add(t64({1}, {1, 1}), i64({2}, {1})), Error);  // expert 2 of 2
}

// The routing measures come from routing_stats: uniform probabilities have entropy log E
// (normalised 1), and balanced loads a CoV of 0; one-hot probabilities have entropy 0.
TEST(Specialisation, RoutingEntropyAndLoadsFromRoutingStats) {
  const std::int64_t T = 4, E = 4;
  const RoutingStats u = routing_stats(t64(std::vector<double>(T * E, 0.25), {T, E}),
                                       i64({0, 1, 2, 3, 1, 2, 3, 0}, {T, 2}));
  EXPECT_NEAR(u.mean_entropy, std::log(4.0), 1e-15);
  EXPECT_NEAR(u.normalized_entropy, 1.0, 1e-15);
  EXPECT_NEAR(u.load_cov, 0.0, 1e-15);
  for (double p : u.expert_mean_prob) EXPECT_NEAR(p, 0.25, 1e-15);
  std::vector<double> onehot(T * E, 0.0);
  for (std::int64_t t = 0; t < T; ++t) onehot[static_cast<std::size_t>(t * E)] = 1.0;
  const RoutingStats h = routing_stats(t64(onehot, {T, E}), i64({0, 1, 0, 1, 0, 1, 0, 1}, {T, 2}));
  EXPECT_NEAR(h.mean_entropy, 0.0, 1e-15);
  // Loads (4, 4, 0, 0): mean 2, population std 2 -> CoV 1.
  EXPECT_NEAR(h.load_cov, 1.0, 1e-15);
  EXPECT_NEAR(h.expert_mean_prob[0], 1.0, 1e-15);
  EXPECT_NEAR(h.expert_mean_prob[1], 0.0, 1e-15);
}

// On a layer: experts 1 = a copy of expert 0 and expert 2 = expert 0 with W2 and b2 negated, so
// every token's outputs are equal for (0, 1) and opposite for (0, 2), (1, 2); the weight cosine
// follows from the norms of W1 and W2.
TEST(Specialisation, LayerWithCopiedAndNegatedExperts) {
  MoeConfig c;
  c.d_model = 6;
  c.d_ff = 5;
  c.num_experts = 3;
  c.top_k = 1;
  RngStream rng(3);
  MoeLayer layer(c, nullptr, rng);
  Tensor& w1 = layer.experts.w1.value();
  Tensor& w2 = layer.experts.w2.value();
  Tensor& b2 = layer.experts.b2.value();
  const std::int64_t n1 = w1.numel() / 3, n2 = w2.numel() / 3;
  float* p1 = w1.data<float>();
  float* p2 = w2.data<float>();
  float* pb = b2.data<float>();
  for (std::int64_t d = 0; d < 6; ++d) pb[d] = 0.01f * static_cast<float>(d + 1);  // nonzero bias
  for (std::int64_t i = 0; i < n1; ++i) p1[n1 + i] = p1[2 * n1 + i] = p1[i];
  for (std::int64_t i = 0; i < n2; ++i) p2[n2 + i] = p2[i], p2[2 * n2 + i] = -p2[i];
  for (std::int64_t d = 0; d < 6; ++d) pb[6 + d] = pb[d], pb[12 + d] = -pb[d];
  double a = 0, b = 0;
  for (std::int64_t i = 0; i < n1; ++i) a += static_cast<double>(p1[i]) * p1[i];
  for (std::int64_t i = 0; i < n2; ++i) b += static_cast<double>(p2[i]) * p2[i];

  const auto [gw1, gw2] = gather_expert_weights(layer);
  EXPECT_EQ(gw1.shape(), w1.shape());
  EXPECT_EQ(gw2.shape(), w2.shape());
  // Pairs: (0, 1) = 1, (0, 2) = (1, 2) = (a - b) / (a + b).
  EXPECT_NEAR(expert_weight_cosine(gw1, gw2), (1.0 + 2.0 * (a - b) / (a + b)) / 3.0, 1e-6);

  std::vector<float> xs(4 * 6);
  for (std::size_t i = 0; i < xs.size(); ++i) xs[i] = std::sin(0.7f * static_cast<float>(i) + 0.3f);
  const Tensor outputs = all_expert_outputs(layer, Tensor::from_vector(xs, {4, 6}, Device::cpu));
  ASSERT_EQ(outputs.shape(), (Shape{3, 4, 6}));
  // Per token: cos = 1, -1, -1 -> mean -1/3.
  EXPECT_NEAR(expert_output_cosine(outputs), -1.0 / 3.0, 1e-6);
}
