// Expert parallelism does not change the MoE layer: the same global batch, split unevenly over the
// P ranks of an expert-parallel group (P = 1, 2, 4, as many as the world has; the first P ranks
// form the group), gives the same outputs and the same gradients as one process holding all
// experts. Compared, after gathering: the output rows and the input gradient (by global token),
// every expert tensor and its gradient (all_gather by global expert id), and the replicated
// parameters' gradients (router, shared expert: summed over the group's ranks, since every rank
// back-propagates its own tokens only).
//
// Cases: balanced routing; routing that sends no token to some experts (a -10 selection bias on
// experts 2 and 5); routing that leaves whole ranks without work (bias on experts 4..7, so with
// P = 2 rank 1 and with P = 4 ranks 2 and 3 receive no rows). The split gives rank 1 of the P = 4
// group no tokens at all. Every case in f64 and f32.
//
// Bounds (relative to the largest magnitude of the reference tensor): the routing and every
// expert row see the same values in the same order whatever P (rows of an expert arrive in
// global token order), so outputs, the input gradient and expert gradients differ only where
// BLAS blocks differently for different row counts, and the replicated gradients by the order
// of the sum over ranks: f64 <= 1e-12, f32 <= 2e-6.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "gradcheck.hpp"
#include "upcycle/dist/world.hpp"
#include "upcycle/moe/moe_layer.hpp"
#include "upcycle/ops/elementwise.hpp"
#include "upcycle/ops/reduce.hpp"

namespace upcycle {
namespace {

using moe::MoeConfig;
using moe::MoeLayer;

constexpr std::int64_t kTokens = 20, kD = 8, kE = 8;

struct Case {
  const char* name;
  std::vector<int> banned;  // experts given a -10 selection bias (never selected)
  nn::MlpActivation activation;
  bool shared, renormalize;
};

const std::vector<Case>& cases() {
  static const std::vector<Case> c{
      {"balanced", {}, nn::MlpActivation::gelu_tanh, true, true},
      {"empty_experts", {2, 5}, nn::MlpActivation::swiglu, false, false},
      {"idle_ranks", {4, 5, 6, 7}, nn::MlpActivation::gelu_tanh, true, true},
  };
  return c;
}

// Token rows of each rank of a group of size P (uneven; rank 1 of 4 gets none).
std::vector<std::int64_t> split_for(int P) {
  if (P == 1) return {kTokens};
  if (P == 2) return {11, 9};
  if (P == 4) return {6, 0, 9, 5};
  ADD_FAILURE() << "no split for P = " << P;
  return {};
}

MoeConfig config_for(const Case& c) {
  MoeConfig m;
  m.d_model = kD;
  m.d_ff = 6;
  m.num_experts = kE;
  m.top_k = 2;
  m.renormalize = c.renormalize;
  m.shared_expert = c.shared;
  m.shared_d_ff = 5;
  m.activation = c.activation;
  m.router_std = 1.0;  // spread the logits: no near-ties that rounding could flip
  m.init_std = 0.3;
  m.out_init_std = 0.3;
  return m;
}

// Everything a run produces, gathered to global tensors on every rank of the group.
struct Result {
  Tensor y, gx;                          // [kTokens, kD]
  std::map<std::string, Tensor> params;  // gathered by global expert id / replicated
  std::map<std::string, Tensor> grads;   // gathered / summed over the group
  std::vector<std::int64_t> counts;      // [E] routed slots, summed over the group
};

Tensor place_rows(Communicator& g, const Tensor& local, std::int64_t offset) {
  Tensor full = Tensor::zeros({kTokens, kD}, local.dtype(), Device::cpu);
  if (local.dim(0) > 0) {
    Tensor dst = full.rows(offset, offset + local.dim(0));
    dst.copy_from(local);
  }
  g.all_reduce(full);  // the other ranks add zeros: exact
  return full;
}

Result run(const std::shared_ptr<Communicator>& group, const Case& c, DType dtype) {
  const int P = group->size(), r = group->rank();
  const auto split = split_for(P);
  std::int64_t offset = 0;
  for (int q = 0; q < r; ++q) offset += split[static_cast<std::size_t>(q)];
  const std::int64_t T = split[static_cast<std::size_t>(r)];

  RngStream rng(2024);
  MoeLayer layer(config_for(c), group, rng);
  layer.to(dtype);
  if (!c.banned.empty()) {
    std::vector<double> bias(kE, 0.0);
    for (int e : c.banned) bias[static_cast<std::size_t>(e)] = -10.0;
    layer.set_selection_bias(Tensor::from_vector(bias, {kE}, Device::cpu));
  }
  const Tensor x_all = testing::randn_tensor({kTokens, kD}, 77, 1.0, dtype);
  const Tensor proj_all = testing::randn_tensor({kTokens, kD}, 78, 1.0, dtype);
  Var x(x_all.rows(offset, offset + T).clone(), true);
  const Var proj(proj_all.rows(offset, offset + T).clone());
  const Var y = layer.forward(x);
  sum_all(mul(y, proj)).backward();  // loss = <y, R> over this rank's tokens

  Result out;
  out.y = place_rows(*group, y.value(), offset);
  out.gx = place_rows(*group, x.grad(), offset);
  for (const auto& [name, p] : layer.named_parameters()) {
    EXPECT_TRUE(p.grad().defined()) << name << " has no gradient on EP rank " << r;
    if (MoeLayer::is_expert_parameter(name)) {
      Shape full = p.shape();
      full[0] = kE;
      Tensor pv = Tensor::empty(full, dtype, Device::cpu), gv = Tensor::empty(full, dtype, Device::cpu);
      group->all_gather(p.value(), pv);
      group->all_gather(p.grad(), gv);
      out.params[name] = pv;
      out.grads[name] = gv;
    } else {
      out.params[name] = p.value().clone();
      Tensor g = p.grad().clone();
      group->all_reduce(g);
      out.grads[name] = g;
    }
  }
  Tensor counts = layer.last_routing().expert_counts.clone();
  group->all_reduce(counts);
  out.counts = counts.to_vector<std::int64_t>();
  return out;
}

double rel_error(const Tensor& got, const Tensor& ref) {
  EXPECT_EQ(got.shape(), ref.shape());
  double ref_max = 0;
  for (double v : ref.to(DType::f64).to_vector<double>()) ref_max = std::max(ref_max, std::abs(v));
  return testing::max_abs_diff(got, ref) / std::max(ref_max, 1e-30);
}

TEST(MoeLayerExpertParallel, SameOutputsAndGradientsForEveryGroupSize) {
  auto world = make_world_communicator();
  for (const Case& c : cases()) {
    for (DType dtype : {DType::f64, DType::f32}) {
      const double bound = dtype == DType::f64 ? 1e-12 : 2e-6;
      // The reference: one process with every expert (no communication at all).
      const Result ref = run(std::make_shared<SelfCommunicator>(), c, dtype);
      for (int e : c.banned) EXPECT_EQ(ref.counts[static_cast<std::size_t>(e)], 0) << c.name << ": expert " << e;
      for (int P : {1, 2, 4}) {
        if (P > world->size()) continue;
        const bool member = world->rank() < P;
        auto group = world->split(member ? 0 : 1, world->rank());
        if (!member) continue;
        const Result got = run(group, c, dtype);
        SCOPED_TRACE(std::string(c.name) + " " + dtype_name(dtype) + " P=" + std::to_string(P));
        EXPECT_EQ(got.counts, ref.counts);
        double worst = 0;
        auto check = [&](const std::string& what, const Tensor& a, const Tensor& b) {
          const double e = rel_error(a, b);
          worst = std::max(worst, e);
          EXPECT_LE(e, bound) << what;
        };
        check("output", got.y, ref.y);
        check("input gradient", got.gx, ref.gx);
        for (const auto& [name, g] : ref.grads) {
          ASSERT_TRUE(got.grads.count(name)) << name;
          // Initialisation does not depend on P: the gathered weights are the reference's, exactly.
          EXPECT_EQ(testing::max_abs_diff(got.params.at(name), ref.params.at(name)), 0.0) << name;
          check("gradient of " + name, got.grads.at(name), g);
        }
        for (int e : c.banned)  // an expert without tokens: zero gradient wherever it lives
          for (const char* n : {"experts/w1", "experts/w2"}) {
            const Tensor ge = got.grads.at(n).rows(e, e + 1);
            EXPECT_EQ(testing::max_abs_diff(ge, Tensor::zeros(ge.shape(), dtype, Device::cpu)), 0.0) << n << " of expert " << e;
          }
        if (world->rank() == 0)
          std::printf("  %-14s %s P=%d: worst relative difference %.3e (bound %.0e)\n", c.name, dtype_name(dtype), P,
                      worst, bound);
      }
    }
  }
}

}  // namespace
}  // namespace upcycle
