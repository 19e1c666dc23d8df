// Router losses over several ranks (include/upcycle/moe/router_losses.hpp): global-scope DPSL,
// global load balancing, routing statistics and the aux-free loads must equal the single-rank
// result on the concatenated rows -- the loss value on every rank, and each rank's gradient rows
// equal to the matching rows of the single-rank gradient. The ranks hold different numbers of rows
// (one rank none at all with 4 ranks). Every rank generates the same global batch from a seed and
// computes the single-rank reference itself (comm = nullptr), then the distributed version on its
// own slice. CTest runs this with 1, 2 and 4 ranks.
//
// Bounds: the DPSL gather reproduces the global rows in the same order, so the distributed
// computation is the reference's operation for operation (only the gradient of other ranks' rows
// is skipped); it is checked to 1e-15 relative (it is bitwise equal in practice). Load balancing
// sums the per-expert probabilities in a different order (per rank, then over ranks), so its
// value and gradient agree to a few ulps: 1e-13 relative.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "gradcheck.hpp"
#include "upcycle/dist/world.hpp"
#include "upcycle/moe/router_losses.hpp"
#include "upcycle/ops/softmax.hpp"

namespace upcycle {
namespace {

using testing::max_abs_diff;
using testing::randn_tensor;

constexpr std::int64_t E = 6, K = 2;

class RouterLossesMpi : public ::testing::Test {
 protected:
  std::shared_ptr<Communicator> world = make_world_communicator();
  const int W = world->size();
  const int r = world->rank();

  // Rows per rank: uneven, and rank 2 holds none (with 4 ranks).
  std::int64_t rows_of(int rank) const { return rank == 2 ? 0 : 3 + 4 * rank; }
  std::int64_t offset() const {
    std::int64_t o = 0;
    for (int q = 0; q < r; ++q) o += rows_of(q);
    return o;
  }
  std::int64_t total() const {
    std::int64_t o = 0;
    for (int q = 0; q < W; ++q) o += rows_of(q);
    return o;
  }
  std::int64_t mine() const { return rows_of(r); }

  // The global batch, identical on every rank.
  Tensor logits() const { return randn_tensor({total(), E}, 42, 1.5); }
  Tensor probs() const {
    NoGradGuard ng;
    return softmax(Var(logits())).value();
  }
  Tensor topk_indices(const Tensor& p) const {
    moe::AuxFreeBias none(E, 0.0, DType::f64, Device::cpu);
    return none.select(p, K);
  }
  Tensor groups() const {
    std::vector<std::int64_t> g;
    for (std::int64_t t = 0; t < total(); ++t) g.push_back(t % 5 == 4 ? -1 : (t * 7 + 3) % 3);
    return Tensor::from_vector(g, {total()}, Device::cpu);
  }
  // This rank's slice of a global tensor (a copy).
  Tensor slice(const Tensor& t) const { return t.rows(offset(), offset() + mine()).clone(); }
};

double rel(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-300); }

double max_abs(const Tensor& t) {
  return t.numel() ? max_abs_diff(t, Tensor::zeros_like(t)) : 0.0;
}

struct DpslCase {
  const char* name;
  moe::DirichletPrior prior;
  bool grouped;
  double clip;
};

TEST_F(RouterLossesMpi, GlobalDpslEqualsSingleRankOnTheConcatenatedRows) {
  const Tensor p_all = probs();
  const Tensor g_all = groups();
  const std::vector<DpslCase> cases = {
      {"symmetric alpha=1", moe::DirichletPrior::symmetric(E, 1.0), false, 100.0},
      {"symmetric alpha=0.5, clipped", moe::DirichletPrior::symmetric(E, 0.5), false, 3.0},
      {"asymmetric", moe::DirichletPrior::asymmetric({1.5, 1.0, 0.75, 1.25, 1.0, 0.5}), false, 100.0},
      {"group-conditioned, ignored rows", moe::DirichletPrior::group_conditioned(3, E, 0.75, 0.5), true, 100.0},
  };
  for (const DpslCase& c : cases) {
    moe::DpslOptions ref_opt;
    ref_opt.weight = 0.05;
    ref_opt.pdf_clip = c.clip;
    ref_opt.scope = moe::DpslScope::global;  // comm = nullptr: one rank holding every row
    Var p_ref(p_all.clone(), true);
    Var l_ref = moe::dpsl_loss(p_ref, c.prior, ref_opt, c.grouped ? g_all : Tensor());
    l_ref.backward();

    moe::DpslOptions opt = ref_opt;
    opt.comm = world.get();
    Var p(slice(p_all), true);
    Var l = moe::dpsl_loss(p, c.prior, opt, c.grouped ? slice(g_all) : Tensor());
    l.backward();
    const double got = l.value().item<double>(), want = l_ref.value().item<double>();
    EXPECT_LE(rel(got, want), 1e-15) << c.name << ": " << got << " vs " << want;
    ASSERT_EQ(p.grad().shape(), Shape({mine(), E}));
    EXPECT_LE(max_abs_diff(p.grad(), slice(p_ref.grad())), 1e-15 * max_abs(p_ref.grad())) << c.name;
    if (r == 0)
      std::printf("[%d ranks] DPSL %-32s loss %.17g (single rank %.17g), |grad rows - ref| %.3g\n", W, c.name,
                  got, want, max_abs_diff(p.grad(), slice(p_ref.grad())));
  }
}

TEST_F(RouterLossesMpi, GlobalDpslThroughTheSoftmax) {
  const Tensor z_all = logits();
  const auto prior = moe::DirichletPrior::symmetric(E, 1.0);
  moe::DpslOptions opt;
  opt.weight = 0.05;
  Var z_ref(z_all.clone(), true);
  moe::dpsl_loss(softmax(z_ref), prior, opt).backward();  // comm = nullptr
  opt.comm = world.get();
  Var z(slice(z_all), true);
  moe::dpsl_loss(softmax(z), prior, opt).backward();
  EXPECT_LE(max_abs_diff(z.grad(), slice(z_ref.grad())), 1e-15 * max_abs(z_ref.grad()));
}

TEST_F(RouterLossesMpi, RankScopeUsesOnlyTheOwnRows) {
  const Tensor p_all = probs();
  const auto prior = moe::DirichletPrior::symmetric(E, 1.0);
  moe::DpslOptions opt;
  opt.weight = 0.05;
  opt.scope = moe::DpslScope::rank;
  opt.comm = world.get();  // not used in rank scope (no collective)
  const Tensor p_mine = slice(p_all);
  const double got = moe::dpsl_loss(Var(p_mine), prior, opt).value().item<double>();
  opt.comm = nullptr;
  const double want = moe::dpsl_loss(Var(p_mine), prior, opt).value().item<double>();
  EXPECT_EQ(got, want);
}

TEST_F(RouterLossesMpi, GlobalLoadBalancingEqualsSingleRank) {
  const Tensor p_all = probs();
  const Tensor idx_all = topk_indices(p_all);
  Var p_ref(p_all.clone(), true);
  Var l_ref = moe::load_balancing_loss(p_ref, idx_all, 0.01);
  l_ref.backward();
  Var p(slice(p_all), true);
  Var l = moe::load_balancing_loss(p, slice(idx_all), 0.01, world.get());
  l.backward();
  const double got = l.value().item<double>(), want = l_ref.value().item<double>();
  EXPECT_LE(rel(got, want), 1e-13) << got << " vs " << want;
  EXPECT_LE(max_abs_diff(p.grad(), slice(p_ref.grad())), 1e-13 * max_abs(p_ref.grad()));
  if (r == 0) std::printf("[%d ranks] load balancing %.17g (single rank %.17g)\n", W, got, want);
}

TEST_F(RouterLossesMpi, GlobalStatisticsAndLoadsEqualSingleRank) {
  const Tensor p_all = probs();
  const Tensor idx_all = topk_indices(p_all);
  std::vector<std::int64_t> drop;
  for (std::int64_t i = 0; i < total() * K; ++i) drop.push_back(i % 7 == 3);
  const Tensor drop_all = Tensor::from_vector(drop, {total(), K}, Device::cpu);
  const moe::RoutingStats ref = moe::routing_stats(p_all, idx_all, drop_all);
  const moe::RoutingStats got = moe::routing_stats(slice(p_all), slice(idx_all), slice(drop_all), world.get());
  EXPECT_EQ(got.num_tokens, ref.num_tokens);
  EXPECT_EQ(got.num_slots, ref.num_slots);
  EXPECT_EQ(got.counts, ref.counts);
  EXPECT_NEAR(got.load_cov, ref.load_cov, 1e-14);
  EXPECT_NEAR(got.load_max_over_mean, ref.load_max_over_mean, 1e-14);
  EXPECT_NEAR(got.mean_entropy, ref.mean_entropy, 1e-14);
  for (std::int64_t e = 0; e < E; ++e) EXPECT_NEAR(got.expert_mean_prob[e], ref.expert_mean_prob[e], 1e-14);

  // Aux-free: the loads summed over ranks, hence the same bias update everywhere.
  const Tensor load = moe::expert_load(slice(idx_all), E, world.get());
  EXPECT_EQ(load.to_vector<double>(), moe::expert_load(idx_all, E).to_vector<double>());
  moe::AuxFreeBias bias(E, 0.001, DType::f32, Device::cpu);
  bias.update(load);
  Tensor b = bias.bias().clone(), b_max = b.clone();
  world->all_reduce(b_max, CommReduce::max);
  EXPECT_EQ(b.to_vector<float>(), b_max.to_vector<float>());
}

}  // namespace
}  // namespace upcycle
