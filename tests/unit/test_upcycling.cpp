// The identities that pin each upcycling method (docs/methods.md section 1, docs/upcycling.md), on the
// tiny ViT of tests/support with one MoE block (block 1 of 2, E = 4):
//   sparse + renormalised top-k            == the dense FFN
//   granular (scaled) + grouped router, k = G == the dense FFN   (and unscaled == (FFN - b2) / G + b2)
//   cluster with tau = 1                    == the dense FFN   (up to float rounding of W1)
//   drop with r = 0                         == sparse, exactly
//   drop r: exactly floor(r F) hidden units re-drawn per expert, the rest copied
//   drop_svd: every expert keeps the dense spectrum
// Every comparison is of the FFN branch itself (MoE layer vs dense Mlp on the same tokens), where a
// wrong expert cannot hide behind the residual stream, and of the whole model's logits.
#include <gtest/gtest.h>

#include <cmath>

#include "tiny_configs.hpp"
#include "upcycle/autograd/var.hpp"
#include "upcycle/backend/backend.hpp"
#include "upcycle/init/linalg.hpp"
#include "upcycle/moe/moe_layer.hpp"
#include "upcycle/nn/vit.hpp"
#include "upcycle/train/upcycle_stage.hpp"

using namespace upcycle;

namespace {

// A dense init_std of 0.2 makes the FFN branch large enough that its errors show in the logits.
std::vector<ConfigOverride> with(std::vector<ConfigOverride> extra) {
  std::vector<ConfigOverride> o = {{"model.init_std", "0.2"}, {"upcycle.calib_tokens", "2000"},
                                   {"upcycle.kmeans_init_sample", "512"}};
  o.insert(o.end(), extra.begin(), extra.end());
  return o;
}

struct Upcycled {
  Config cfg;
  std::unique_ptr<Task> dense, moe;
  UpcycleResult result;
};

Upcycled run_upcycling(const std::vector<ConfigOverride>& overrides) {
  Upcycled u{parse_config(upcycle::testing::tiny_vit_moe_ini(1), "test_upcycling", overrides), nullptr, nullptr, {}};
  auto world = std::make_shared<SelfCommunicator>();
  u.dense = make_task(u.cfg, *world);
  TaskOptions o;
  o.moe = true;
  u.moe = make_task(u.cfg, *world, o);
  u.result = upcycle_model(u.cfg, *u.dense, *u.moe, *world);
  return u;
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (float v : t.to_vector<float>()) m = std::max(m, static_cast<double>(std::abs(v)));
  return m;
}
double max_abs_diff(const Tensor& a, const Tensor& b) {
  const auto x = a.to_vector<float>(), y = b.to_vector<float>();
  EXPECT_EQ(x.size(), y.size());
  double m = 0;
  for (std::size_t i = 0; i < x.size(); ++i) m = std::max(m, std::abs(static_cast<double>(x[i]) - y[i]));
  return m;
}

// Random FFN inputs at the scale of a LayerNorm output.
Tensor tokens(std::int64_t n, std::int64_t d, std::uint64_t seed) {
  Tensor t = Tensor::empty({n, d}, DType::f32, Device::cpu);
  backend_of(t).normal(t, seed, 0, 0.0, 1.0);
  return t;
}

// max |MoE(u) - FFN(u)| / max |FFN(u)| for block 1 on random tokens.
double ffn_branch_error(const Upcycled& u) {
  NoGradGuard g;
  const Tensor x = tokens(64, 16, 99);
  const Tensor want = u.dense->blocks()[1].mlp->forward(Var(x)).value();
  const Tensor got = moe::moe_layer_of(u.moe->blocks()[1])->forward(Var(x)).value();
  return max_abs_diff(got, want) / max_abs(want);
}

// max |logits_moe - logits_dense| / max |logits_dense| on one batch of images.
double logits_error(const Upcycled& u) {
  NoGradGuard g;
  const Batch b = u.dense->next_batch();
  auto& dense = dynamic_cast<nn::ViT&>(u.dense->model());
  auto& moe = dynamic_cast<nn::ViT&>(u.moe->model());
  dense.eval();
  moe.eval();
  const Tensor want = dense.forward(b.inputs).value();
  return max_abs_diff(moe.forward(b.inputs).value(), want) / max_abs(want);
}

// Float32 bound for a sum of k gate-weighted copies whose gates sum to 1 (a few ulps of the
// output, times the reduction length of the two GEMMs): 1e-5 relative leaves margin of ~10x over
// what the identity methods measure (~1e-7..1e-6), and a single wrong hidden unit is ~1e-2.
constexpr double kIdentityBound = 1e-5;

std::vector<float> expert_row(const Tensor& t, std::int64_t e) {
  const std::int64_t per = t.numel() / t.dim(0);
  const auto v = t.to_vector<float>();
  return std::vector<float>(v.begin() + e * per, v.begin() + (e + 1) * per);
}

}  // namespace

TEST(Upcycling, SparseWithRenormalisedTopKIsTheDenseModel) {
  const Upcycled u = run_upcycling(with({{"upcycle.method", "sparse"}}));
  EXPECT_LT(ffn_branch_error(u), kIdentityBound);
  EXPECT_LT(logits_error(u), kIdentityBound);
  // Every expert is the dense FFN, bit for bit; the router is random N(0, 0.02^2), not zero.
  const Tensor& w1 = u.result.full_experts.at("/model/blocks/01/moe/experts/w1");
  EXPECT_EQ(expert_row(w1, 3), u.dense->blocks()[1].mlp->fc1.weight.value().to_vector<float>());
  EXPECT_GT(max_abs(moe::moe_layer_of(u.moe->blocks()[1])->router.weight.value()), 0.0);
}

TEST(Upcycling, SparseWithoutRenormalisationIsNotTheDenseModel) {
  // The control: the same copies with softmax gates that do not sum to 1 break the identity, so
  // the checks above can fail.
  const Upcycled u = run_upcycling(with({{"upcycle.method", "sparse"}, {"moe.renormalize", "false"}}));
  EXPECT_GT(ffn_branch_error(u), 1e-2);
}

TEST(Upcycling, GranularWithScalingAndTopGIsTheDenseModel) {
  for (const char* act : {"gelu", "swiglu"}) {
    const Upcycled u = run_upcycling(with({{"upcycle.method", "granular"}, {"upcycle.granularity", "2"},
                                     {"upcycle.granular_scale", "true"}, {"moe.top_k", "2"},
                                     {"model.ffn_activation", act}}));
    EXPECT_EQ(moe::moe_layer_of(u.moe->blocks()[1])->config().d_ff, 16) << "each expert is half of the dense FFN";
    EXPECT_LT(ffn_branch_error(u), kIdentityBound) << act;
    EXPECT_LT(logits_error(u), kIdentityBound) << act;
    // Router rows come in identical pairs (one pair per group of G = 2 shards).
    const auto r = moe::moe_layer_of(u.moe->blocks()[1])->router.weight.value().to_vector<float>();
    for (int j = 0; j < 16; ++j) {
      EXPECT_EQ(r[j], r[16 + j]);
      EXPECT_NE(r[j], r[32 + j]);
    }
  }
}

TEST(Upcycling, GranularWithoutScalingGivesTheShardMean) {
  // Unscaled shards weighted by gates 1/G: (W2 act(W1 u + b1)) / G + b2.
  const Upcycled u = run_upcycling(with({{"upcycle.method", "granular"}, {"moe.top_k", "2"}}));
  NoGradGuard g;
  const Tensor x = tokens(64, 16, 5);
  const nn::Mlp& mlp = *u.dense->blocks()[1].mlp;
  const Tensor full = mlp.forward(Var(x)).value();
  const auto b2 = mlp.fc2.bias.value().to_vector<float>();
  Tensor want = full.clone();
  float* pw = want.data<float>();
  for (std::int64_t i = 0; i < want.numel(); ++i) pw[i] = (pw[i] - b2[static_cast<std::size_t>(i % 16)]) / 2 + b2[static_cast<std::size_t>(i % 16)];
  const Tensor got = moe::moe_layer_of(u.moe->blocks()[1])->forward(Var(x)).value();
  EXPECT_LT(max_abs_diff(got, want) / max_abs(want), kIdentityBound);
}

TEST(Upcycling, ClusterWithTauOneIsTheDenseModel) {
  for (const char* act : {"gelu", "swiglu"}) {
    const Upcycled u = run_upcycling(with({{"upcycle.method", "cluster"}, {"upcycle.tau", "1"},
                                     {"upcycle.min_rank_frac", "0"}, {"model.ffn_activation", act}}));
    // W1^(i) = (W1 S) S^-1 in float64, rounded to float32: the same bound as the exact copies.
    EXPECT_LT(ffn_branch_error(u), kIdentityBound) << act;
    EXPECT_LT(logits_error(u), kIdentityBound) << act;
    const auto& rep = u.result.reports.at(0);
    for (auto r : rep.svd_ranks) EXPECT_EQ(r, 16) << "tau = 1 keeps the full rank";
  }
}

TEST(Upcycling, ClusterRouterIsTheUnitCentroidsAndTheReportIsComplete) {
  const Upcycled u = run_upcycling(with({{"upcycle.method", "cluster"}, {"upcycle.router_scale", "2"}}));
  const auto& rep = u.result.reports.at(0);
  ASSERT_EQ(rep.cluster_sizes.size(), 4u);
  std::int64_t total = 0;
  for (auto s : rep.cluster_sizes) {
    EXPECT_GT(s, 0);
    total += s;
  }
  EXPECT_EQ(total, u.result.calibration.global_tokens);
  EXPECT_GE(u.result.calibration.global_tokens, 2000);
  EXPECT_FALSE(rep.kmeans.empty());
  // Rank floor: ceil(0.5 * 16) = 8; with tau = 0.9 some expert is truncated below 16.
  std::int64_t smallest = 16;
  for (auto r : rep.svd_ranks) {
    EXPECT_GE(r, 8);
    smallest = std::min(smallest, r);
  }
  EXPECT_LT(smallest, 16);
  const auto router = moe::moe_layer_of(u.moe->blocks()[1])->router.weight.value().to_vector<float>();
  for (int e = 0; e < 4; ++e) {
    double n2 = 0;
    for (int j = 0; j < 16; ++j) n2 += static_cast<double>(router[e * 16 + j]) * router[e * 16 + j];
    EXPECT_NEAR(std::sqrt(n2), 2.0, 1e-5) << "router row " << e << " = 2 x a unit centroid";
  }
  // Experts differ from each other and from the dense W1 (truncated on different clusters).
  const Tensor& w1 = u.result.full_experts.at("/model/blocks/01/moe/experts/w1");
  EXPECT_NE(expert_row(w1, 0), expert_row(w1, 1));
  // W2 and the biases are the dense ones.
  EXPECT_EQ(expert_row(u.result.full_experts.at("/model/blocks/01/moe/experts/w2"), 2),
            u.dense->blocks()[1].mlp->fc2.weight.value().to_vector<float>());
}

TEST(Upcycling, DropWithRatioZeroIsSparseExactly) {
  const Upcycled drop = run_upcycling(with({{"upcycle.method", "drop"}, {"upcycle.drop_ratio", "0"}}));
  const Upcycled sparse = run_upcycling(with({{"upcycle.method", "sparse"}}));
  for (const auto& [name, p] : sparse.moe->model().named_parameters())
    EXPECT_EQ(p.value().to_vector<float>(), drop.moe->model().parameter(name).value().to_vector<float>()) << name;
}

TEST(Upcycling, DropRedrawsExactlyFloorRFUnitsPerExpert) {
  const Upcycled u = run_upcycling(with({{"upcycle.method", "drop"}, {"upcycle.drop_ratio", "0.3"}}));
  const nn::Mlp& mlp = *u.dense->blocks()[1].mlp;
  const auto w1 = mlp.fc1.weight.value().to_vector<float>();  // [32, 16]
  const auto w2 = mlp.fc2.weight.value().to_vector<float>();  // [16, 32]
  const Tensor& e1 = u.result.full_experts.at("/model/blocks/01/moe/experts/w1");
  const Tensor& e2 = u.result.full_experts.at("/model/blocks/01/moe/experts/w2");
  std::vector<std::vector<int>> chosen;
  for (int e = 0; e < 4; ++e) {
    const auto a = expert_row(e1, e), b = expert_row(e2, e);
    std::vector<int> units;
    for (int j = 0; j < 32; ++j) {
      bool row_differs = false, col_differs = false;
      for (int c = 0; c < 16; ++c) row_differs = row_differs || a[j * 16 + c] != w1[j * 16 + c];
      for (int r = 0; r < 16; ++r) col_differs = col_differs || b[r * 32 + j] != w2[r * 32 + j];
      EXPECT_EQ(row_differs, col_differs) << "expert " << e << " unit " << j << ": W1 row and W2 column re-drawn together";
      if (row_differs) units.push_back(j);
    }
    EXPECT_EQ(units.size(), 9u) << "expert " << e << ": floor(0.3 * 32) units";
    chosen.push_back(units);
  }
  EXPECT_NE(chosen[0], chosen[1]) << "experts draw their units independently";
}

TEST(Upcycling, DropSvdKeepsTheDenseSpectrumInEveryExpert) {
  const Upcycled u = run_upcycling(with({{"upcycle.method", "drop_svd"}}));
  const nn::Mlp& mlp = *u.dense->blocks()[1].mlp;
  auto spectrum = [](const std::vector<float>& v, std::int64_t m, std::int64_t n) {
    init::Matrix a(m, n);
    for (std::int64_t i = 0; i < m * n; ++i) a.data[static_cast<std::size_t>(i)] = v[static_cast<std::size_t>(i)];
    return init::svd(a).sigma;
  };
  const auto dense = spectrum(mlp.fc1.weight.value().to_vector<float>(), 32, 16);
  const Tensor& e1 = u.result.full_experts.at("/model/blocks/01/moe/experts/w1");
  for (int e = 0; e < 4; ++e) {
    const auto row = expert_row(e1, e);
    const auto s = spectrum(row, 32, 16);
    for (std::size_t l = 0; l < s.size(); ++l) EXPECT_NEAR(s[l], dense[l], 1e-5 * dense[0]) << "expert " << e << " sigma " << l;
    EXPECT_NE(row, mlp.fc1.weight.value().to_vector<float>()) << "the bottom singular vectors were replaced";
  }
}

TEST(Upcycling, FewerCalibrationTokensThanExpertsIsAUsageError) {
  try {
    run_upcycling(with({{"upcycle.method", "cluster"}, {"upcycle.calib_tokens", "1"}, {"upcycle.calib_token_frac", "0.01"},
                  {"train.batch_size", "1"}, {"moe.num_experts", "4"}}));
    // One image of 17 tokens per batch at 1%: the pass stops at the first batch that keeps a token
    // (calib_tokens = 1), with fewer tokens than the 4 clusters.
    FAIL() << "expected a UsageError";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("upcycle.calib_tokens"), std::string::npos) << e.what();
  }
}

TEST(Upcycling, EveryConfiguredMethodIsRegistered) {
  for (const char* m : {"sparse", "drop", "drop_svd", "granular", "cluster"}) EXPECT_STREQ(init::upcycle_method(m).name, m);
  EXPECT_THROW(init::upcycle_method("nope"), Error);
}
