// The MoE layer on one process: dispatch bookkeeping, capacity (dropped counts against an
// independent count), the layer against a naive per-token implementation written with loops,
// the dense identity of upcycled copies, expert initialisation independent of the EP size,
// parameter names / sharding convention, and a finite-difference check of the whole layer in f64.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <vector>

#include "gradcheck.hpp"
#include "upcycle/moe/dispatch.hpp"
#include "upcycle/moe/moe_layer.hpp"
#include "upcycle/nn/init.hpp"
#include "upcycle/nn/parameter_io.hpp"
#include "upcycle/ops/elementwise.hpp"
#include "upcycle/ops/reduce.hpp"

using namespace upcycle;
using namespace upcycle::moe;
using upcycle::testing::gradcheck;
using upcycle::testing::max_abs_diff;
using upcycle::testing::random_tensor;
using upcycle::testing::randn_tensor;

namespace {

MoeConfig small_config(std::int64_t E = 4, std::int64_t k = 2) {
  MoeConfig c;
  c.d_model = 6;
  c.d_ff = 5;
  c.num_experts = E;
  c.top_k = k;
  return c;
}

// Every parameter set to N(0, std) values from `seed` (biases included, so that they matter).
void randomise(nn::Module& m, std::uint64_t seed, double std = 0.5) {
  for (const auto& [name, p] : m.named_parameters()) {
    nn::assign_parameter(m, name, randn_tensor(p.shape(), seed++, std, p.dtype()));
  }
}

std::vector<double> as_f64(const Tensor& t) { return t.to(DType::f64).to_vector<double>(); }

double gelu_tanh(double v) { return 0.5 * v * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v))); }
double silu(double v) { return v / (1.0 + std::exp(-v)); }

// The layer by loops in double, from its parameters: per token softmax router, top-k (ties: lower
// id), optional renormalisation, capacity in token order per expert, sum of gated expert outputs
// plus the shared expert. Returns y [T, D] and the number of dropped slots.
struct Naive {
  std::vector<double> y;
  std::int64_t dropped = 0;
  std::vector<std::int64_t> routed;  // [E]
};

std::vector<double> mlp_naive(const std::vector<double>& x, const std::vector<double>& w1, const std::vector<double>& b1,
                              const std::vector<double>& w2, const std::vector<double>& b2, std::int64_t D,
                              std::int64_t F, nn::MlpActivation act) {
  const std::int64_t F1 = act == nn::MlpActivation::swiglu ? 2 * F : F;
  std::vector<double> h(static_cast<std::size_t>(F1));
  for (std::int64_t f = 0; f < F1; ++f) {
    double s = b1.empty() ? 0.0 : b1[static_cast<std::size_t>(f)];
    for (std::int64_t d = 0; d < D; ++d) s += w1[static_cast<std::size_t>(f * D + d)] * x[static_cast<std::size_t>(d)];
    h[static_cast<std::size_t>(f)] = s;
  }
  std::vector<double> a(static_cast<std::size_t>(F));
  for (std::int64_t f = 0; f < F; ++f) {
    const double v = h[static_cast<std::size_t>(f)];
    switch (act) {
      case nn::MlpActivation::gelu_tanh: a[static_cast<std::size_t>(f)] = gelu_tanh(v); break;
      case nn::MlpActivation::relu: a[static_cast<std::size_t>(f)] = std::max(v, 0.0); break;
      case nn::MlpActivation::swiglu: a[static_cast<std::size_t>(f)] = silu(v) * h[static_cast<std::size_t>(F + f)]; break;
      default: ADD_FAILURE() << "activation not covered by the naive reference";
    }
  }
  std::vector<double> y(static_cast<std::size_t>(D));
  for (std::int64_t d = 0; d < D; ++d) {
    double s = b2.empty() ? 0.0 : b2[static_cast<std::size_t>(d)];
    for (std::int64_t f = 0; f < F; ++f) s += w2[static_cast<std::size_t>(d * F + f)] * a[static_cast<std::size_t>(f)];
    y[static_cast<std::size_t>(d)] = s;
  }
  return y;
}

std::vector<double> slice(const std::vector<double>& v, std::int64_t i, std::int64_t n) {
  return {v.begin() + i * n, v.begin() + (i + 1) * n};
}

Naive naive_moe(const MoeLayer& layer, const Tensor& x2d) {
  const MoeConfig& c = layer.config();
  const std::int64_t E = c.num_experts, k = c.top_k, D = c.d_model, F = c.d_ff, T = x2d.dim(0);
  const std::int64_t F1 = c.activation == nn::MlpActivation::swiglu ? 2 * F : F;
  const auto x = as_f64(x2d);
  const auto wr = as_f64(layer.parameter("router/weight").value());
  const auto w1 = as_f64(layer.parameter("experts/w1").value());
  const auto w2 = as_f64(layer.parameter("experts/w2").value());
  std::vector<double> b1, b2;
  if (c.bias) {
    b1 = as_f64(layer.parameter("experts/b1").value());
    b2 = as_f64(layer.parameter("experts/b2").value());
  }
  const std::int64_t cap = c.capacity_factor > 0 ? static_cast<std::int64_t>(std::ceil(c.capacity_factor * T * k / E)) : 0;
  Naive out;
  out.y.assign(static_cast<std::size_t>(T * D), 0.0);
  out.routed.assign(static_cast<std::size_t>(E), 0);
  std::vector<std::int64_t> taken(static_cast<std::size_t>(E), 0);
  for (std::int64_t t = 0; t < T; ++t) {
    const auto xt = slice(x, t, D);
    std::vector<double> p(static_cast<std::size_t>(E));
    double mx = -1e300, z = 0;
    for (std::int64_t e = 0; e < E; ++e) {
      double s = 0;
      for (std::int64_t d = 0; d < D; ++d) s += wr[static_cast<std::size_t>(e * D + d)] * xt[static_cast<std::size_t>(d)];
      p[static_cast<std::size_t>(e)] = s;
      mx = std::max(mx, s);
    }
    for (auto& v : p) z += (v = std::exp(v - mx));
    for (auto& v : p) v /= z;
    std::vector<std::int64_t> order(static_cast<std::size_t>(E));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) {
      return p[static_cast<std::size_t>(a)] > p[static_cast<std::size_t>(b)];
    });
    double gsum = 0;
    for (std::int64_t j = 0; j < k; ++j) gsum += p[static_cast<std::size_t>(order[static_cast<std::size_t>(j)])];
    for (std::int64_t j = 0; j < k; ++j) {
      const std::int64_t e = order[static_cast<std::size_t>(j)];
      ++out.routed[static_cast<std::size_t>(e)];
      if (cap > 0 && taken[static_cast<std::size_t>(e)]++ >= cap) {
        ++out.dropped;
        continue;
      }
      const double g = p[static_cast<std::size_t>(e)] / (c.renormalize ? gsum : 1.0);
      const auto ye = mlp_naive(xt, slice(w1, e, F1 * D), c.bias ? slice(b1, e, F1) : std::vector<double>{},
                                slice(w2, e, D * F), c.bias ? slice(b2, e, D) : std::vector<double>{}, D, F,
                                c.activation);
      for (std::int64_t d = 0; d < D; ++d) out.y[static_cast<std::size_t>(t * D + d)] += g * ye[static_cast<std::size_t>(d)];
    }
    if (layer.shared) {
      const auto ys = mlp_naive(xt, as_f64(layer.parameter("shared/fc1/weight").value()),
                                c.bias ? as_f64(layer.parameter("shared/fc1/bias").value()) : std::vector<double>{},
                                as_f64(layer.parameter("shared/fc2/weight").value()),
                                c.bias ? as_f64(layer.parameter("shared/fc2/bias").value()) : std::vector<double>{}, D,
                                layer.shared->config().d_ff, c.activation);
      for (std::int64_t d = 0; d < D; ++d) out.y[static_cast<std::size_t>(t * D + d)] += ys[static_cast<std::size_t>(d)];
    }
  }
  return out;
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

double max_diff(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

// A communicator that only reports a rank and a size: enough to build the shard of EP rank r (the
// constructor communicates nothing), never used for a collective.
class RankOnlyCommunicator final : public Communicator {
 public:
  RankOnlyCommunicator(int rank, int size) : rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void barrier() override {}

 protected:
  [[noreturn]] static void fail() { UPCYCLE_THROW("RankOnlyCommunicator cannot communicate"); }
  bool moves(Device) const override { return true; }
  void do_all_reduce(Tensor&, CommReduce) override { fail(); }
  void do_all_gather(const Tensor&, Tensor&) override { fail(); }
  void do_reduce_scatter(const Tensor&, Tensor&, CommReduce) override { fail(); }
  void do_all_to_all_v(const Tensor&, const std::vector<std::int64_t>&, Tensor&, const std::vector<std::int64_t>&) override {
    fail();
  }
  std::vector<std::int64_t> do_exchange_counts(const std::vector<std::int64_t>&) override { fail(); }
  void do_broadcast(Tensor&, int) override { fail(); }
  std::shared_ptr<Communicator> do_split(int, int) override { fail(); }

 private:
  int rank_, size_;
};

// ------------------------------------------------------------------------------------------------
TEST(Dispatch, PlanSortsSlotsByExpertInTokenOrder) {
  // T = 4 tokens, k = 2, E = 3.
  const Tensor idx = Tensor::from_vector<std::int64_t>({2, 0, 0, 1, 2, 1, 0, 2}, {4, 2}, Device::cpu);
  const DispatchPlan p = plan_dispatch(idx, 3, 0);
  EXPECT_EQ(p.slots.to_vector<std::int64_t>(), (std::vector<std::int64_t>{1, 2, 6, 3, 5, 0, 4, 7}));
  EXPECT_EQ(p.slot_tokens.to_vector<std::int64_t>(), (std::vector<std::int64_t>{0, 1, 3, 1, 2, 0, 2, 3}));
  EXPECT_EQ(p.routed_counts, (std::vector<std::int64_t>{3, 2, 3}));
  EXPECT_EQ(p.kept_counts, p.routed_counts);
  EXPECT_EQ(p.dropped, 0);
  // Capacity 2: expert 0 drops its 3rd slot (token 3), expert 2 its 3rd (token 3).
  const DispatchPlan c = plan_dispatch(idx, 3, 2);
  EXPECT_EQ(c.slots.to_vector<std::int64_t>(), (std::vector<std::int64_t>{1, 2, 3, 5, 0, 4}));
  EXPECT_EQ(c.kept_counts, (std::vector<std::int64_t>{2, 2, 2}));
  EXPECT_EQ(c.dropped, 2);
  EXPECT_EQ(c.slot_dropped.to_vector<std::int64_t>(), (std::vector<std::int64_t>{0, 0, 0, 0, 0, 0, 1, 1}));
  // An expert id outside [0, E) is an error, not a silent drop.
  EXPECT_THROW(plan_dispatch(Tensor::from_vector<std::int64_t>({0, 3}, {1, 2}, Device::cpu), 3, 0), Error);
}

TEST(Dispatch, CapacityFormula) {
  EXPECT_EQ(expert_capacity(0.0, 100, 2, 8), 0);
  EXPECT_EQ(expert_capacity(1.0, 16, 2, 4), 8);     // ceil(1 * 32 / 4)
  EXPECT_EQ(expert_capacity(1.25, 10, 2, 4), 7);    // ceil(6.25)
  EXPECT_EQ(expert_capacity(0.5, 3, 1, 4), 1);      // ceil(0.375)
  EXPECT_THROW(expert_capacity(-1.0, 4, 1, 4), Error);
}

TEST(Dispatch, ExchangePlanRegroupsByExpert) {
  // P = 2 ranks, L = 2 experts each; this is rank 1 (experts 2, 3). Rank 0 sends (2 to expert 2,
  // 1 to expert 3), rank 1 itself (0, 3).
  const std::vector<std::int64_t> kept{1, 0, 4, 2};  // this rank's kept slots per global expert
  const ExchangePlan x = plan_exchange(kept, 2, 1, {2, 1, 0, 3});
  EXPECT_EQ(x.send_counts, (std::vector<std::int64_t>{1, 6}));
  EXPECT_EQ(x.recv_counts, (std::vector<std::int64_t>{3, 3}));
  EXPECT_EQ(x.expert_rows, (std::vector<std::int64_t>{2, 4}));
  // Received: [r0e2 r0e2 r0e3 r1e3 r1e3 r1e3]; expert order: e2 (0, 1), e3 (2, 3, 4, 5).
  EXPECT_EQ(x.to_expert_order, (std::vector<std::int64_t>{0, 1, 2, 3, 4, 5}));
  const ExchangePlan y = plan_exchange(kept, 2, 1, {1, 1, 2, 3});
  // Received: [r0e2 r0e3 r1e2 r1e2 r1e3 r1e3 r1e3]; expert 2: rows 0, 2, 3; expert 3: 1, 4, 5, 6.
  EXPECT_EQ(y.to_expert_order, (std::vector<std::int64_t>{0, 2, 3, 1, 4, 5, 6}));
  for (std::size_t j = 0; j < y.to_expert_order.size(); ++j)
    EXPECT_EQ(y.to_source_order[static_cast<std::size_t>(y.to_expert_order[j])], static_cast<std::int64_t>(j));
}

// ------------------------------------------------------------------------------------------------
TEST(MoeLayer, ParameterNamesShapesAndShardingConvention) {
  MoeConfig c = small_config(4, 2);
  c.shared_expert = true;
  c.activation = nn::MlpActivation::swiglu;
  RngStream rng(3);
  MoeLayer layer(c, nullptr, rng);
  std::vector<std::string> names;
  for (const auto& [n, p] : layer.named_parameters()) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"router/weight", "experts/w1", "experts/b1", "experts/w2", "experts/b2",
                                             "shared/fc1/weight", "shared/fc1/bias", "shared/fc2/weight",
                                             "shared/fc2/bias"}));
  EXPECT_EQ(layer.parameter("router/weight").shape(), (Shape{4, 6}));
  EXPECT_EQ(layer.parameter("experts/w1").shape(), (Shape{4, 10, 6}));  // swiglu: 2F rows
  EXPECT_EQ(layer.parameter("experts/b1").shape(), (Shape{4, 10}));
  EXPECT_EQ(layer.parameter("experts/w2").shape(), (Shape{4, 6, 5}));
  EXPECT_EQ(layer.parameter("experts/b2").shape(), (Shape{4, 6}));
  EXPECT_EQ(layer.parameter("router/weight").dtype(), DType::f32);
  for (const auto& n : names) EXPECT_EQ(MoeLayer::is_expert_parameter(n), n.rfind("experts/", 0) == 0) << n;
  EXPECT_TRUE(MoeLayer::is_expert_parameter("blocks/03/moe/experts/w1"));
  EXPECT_FALSE(MoeLayer::is_expert_parameter("blocks/03/moe/experts_gate/w1"));
  EXPECT_FALSE(MoeLayer::is_expert_parameter("myexperts/w1"));
  EXPECT_EQ(layer.first_expert(), 0);
  EXPECT_EQ(layer.num_local_experts(), 4);

  c.bias = false;
  c.shared_expert = false;
  MoeLayer nobias(c, nullptr, rng);
  EXPECT_EQ(nobias.named_parameters().size(), 3u);
  EXPECT_THROW(MoeLayer(c, std::make_shared<RankOnlyCommunicator>(0, 3), rng), Error);  // 3 does not divide 4
  MoeConfig bad = c;
  bad.top_k = 5;
  EXPECT_THROW(MoeLayer(bad, nullptr, rng), Error);
}

TEST(MoeLayer, InitialisationDoesNotDependOnTheExpertParallelSize) {
  MoeConfig c = small_config(8, 2);
  c.shared_expert = true;
  RngStream rng1(42);
  MoeLayer full(c, nullptr, rng1);
  // With P = 1 the experts are exactly normal_parameter() draws right after the router's.
  {
    RngStream r(42);
    nn::normal_parameter({8, 6}, c.router_std, r);
    const Var w1 = nn::normal_parameter({8, 5, 6}, c.init_std, r);
    const Var w2 = nn::normal_parameter({8, 6, 5}, c.out_init_std, r);
    EXPECT_EQ(w1.value().to_vector<float>(), full.parameter("experts/w1").value().to_vector<float>());
    EXPECT_EQ(w2.value().to_vector<float>(), full.parameter("experts/w2").value().to_vector<float>());
  }
  for (int P : {2, 4, 8}) {
    std::map<std::string, std::vector<float>> gathered;
    for (int r = 0; r < P; ++r) {
      RngStream rng(42);
      MoeLayer shard(c, std::make_shared<RankOnlyCommunicator>(r, P), rng);
      EXPECT_EQ(shard.first_expert(), r * 8 / P);
      EXPECT_EQ(shard.num_local_experts(), 8 / P);
      EXPECT_EQ(rng.offset(), rng1.offset()) << "the stream must end at the same offset whatever P";
      for (const auto& [name, p] : shard.named_parameters()) {
        const auto v = p.value().to_vector<float>();
        if (MoeLayer::is_expert_parameter(name)) {
          EXPECT_EQ(p.dim(0), 8 / P) << name;
          gathered[name].insert(gathered[name].end(), v.begin(), v.end());
        } else {
          EXPECT_EQ(v, full.parameter(name).value().to_vector<float>()) << name << " (replicated) with P = " << P;
        }
      }
    }
    for (const auto& [name, v] : gathered)
      EXPECT_EQ(v, full.parameter(name).value().to_vector<float>()) << name << " gathered over P = " << P;
  }
}

TEST(MoeLayer, RouterSelectionBiasChangesSelectionNotGates) {
  RouterConfig rc;
  rc.d_model = 6;
  rc.num_experts = 4;
  rc.top_k = 2;
  rc.renormalize = false;
  RngStream rng(1);
  Router router(rc, rng);
  nn::assign_parameter(router, "weight", randn_tensor({4, 6}, 2, 1.0, DType::f32));
  const Var x(randn_tensor({7, 6}, 3, 1.0, DType::f32));
  const Routing plain = router.forward(x);
  const Tensor bias = Tensor::from_vector<float>({0.f, 0.f, 0.f, 10.f}, {4}, Device::cpu);
  const Routing biased = router.forward(x, bias);
  const auto pi = plain.indices.to_vector<std::int64_t>(), bi = biased.indices.to_vector<std::int64_t>();
  const auto probs = biased.probs.value().to_vector<float>();
  const auto gates = biased.gates.value().to_vector<float>();
  for (int t = 0; t < 7; ++t) {
    EXPECT_EQ(bi[static_cast<std::size_t>(t * 2)], 3) << "a +10 bias puts expert 3 first";
    for (int j = 0; j < 2; ++j)  // gates are the probabilities of the selected experts, unbiased
      EXPECT_EQ(gates[static_cast<std::size_t>(t * 2 + j)], probs[static_cast<std::size_t>(t * 4 + bi[static_cast<std::size_t>(t * 2 + j)])]);
    EXPECT_GE(probs[static_cast<std::size_t>(t * 4 + pi[static_cast<std::size_t>(t * 2)])],
              probs[static_cast<std::size_t>(t * 4 + pi[static_cast<std::size_t>(t * 2 + 1)])]);
  }
  rc.renormalize = true;
  RngStream rng2(1);
  Router renorm(rc, rng2);
  const Routing r = renorm.forward(x);
  const auto g = r.gates.value().to_vector<float>();
  for (int t = 0; t < 7; ++t) EXPECT_NEAR(g[static_cast<std::size_t>(2 * t)] + g[static_cast<std::size_t>(2 * t + 1)], 1.0f, 1e-6f);
}

// ------------------------------------------------------------------------------------------------
// The layer against the naive loops (f64), for the configurations that matter.
struct Variant {
  const char* name;
  bool renormalize, shared, bias;
  nn::MlpActivation activation;
  double capacity_factor;
};

class MoeAgainstNaive : public ::testing::TestWithParam<Variant> {};

TEST_P(MoeAgainstNaive, OutputAndDroppedCount) {
  const Variant v = GetParam();
  MoeConfig c = small_config(4, 2);
  c.renormalize = v.renormalize;
  c.shared_expert = v.shared;
  c.bias = v.bias;
  c.activation = v.activation;
  c.capacity_factor = v.capacity_factor;
  RngStream rng(11);
  MoeLayer layer(c, nullptr, rng);
  layer.to(DType::f64);
  randomise(layer, 100);
  const std::int64_t T = 24;
  const Tensor x = randn_tensor({3, 8, 6}, 7);  // [B, S, D]: any leading shape
  const Var y = layer.forward(Var(x));
  ASSERT_EQ(y.shape(), x.shape());
  const Naive ref = naive_moe(layer, x.reshape({T, 6}));
  const MoeRouting& r = layer.last_routing();
  // Sums of a handful of O(1) double terms in a different order: 1e-12 relative is ample.
  EXPECT_LE(max_diff(as_f64(y.value()), ref.y), 1e-12 * std::max(1.0, max_abs(ref.y)));
  EXPECT_EQ(r.dropped, ref.dropped);
  EXPECT_EQ(r.expert_counts.to_vector<std::int64_t>(), ref.routed);
  EXPECT_EQ(r.tokens, T);
  EXPECT_EQ(r.indices.shape(), (Shape{T, 2}));
  EXPECT_EQ(r.probs.shape(), (Shape{T, 4}));
  if (v.capacity_factor == 0.0) {
    EXPECT_EQ(r.dropped, 0);
    EXPECT_EQ(r.capacity, 0);
    EXPECT_EQ(r.kept_counts.to_vector<std::int64_t>(), r.expert_counts.to_vector<std::int64_t>());
  }
}

INSTANTIATE_TEST_SUITE_P(
    Variants, MoeAgainstNaive,
    ::testing::Values(Variant{"renorm", true, false, true, nn::MlpActivation::gelu_tanh, 0.0},
                      Variant{"plain_shared", false, true, true, nn::MlpActivation::gelu_tanh, 0.0},
                      Variant{"swiglu_nobias", true, true, false, nn::MlpActivation::swiglu, 0.0},
                      Variant{"relu_capacity", true, false, true, nn::MlpActivation::relu, 0.5},
                      Variant{"capacity_shared", false, true, true, nn::MlpActivation::gelu_tanh, 0.75}),
    [](const ::testing::TestParamInfo<Variant>& info) { return std::string(info.param.name); });

TEST(MoeLayer, CapacityDropsAreCountedIndependently) {
  // Skewed routing (a selection bias toward experts 0 and 1) with capacity factor 1: the dropped
  // count equals sum_e max(0, c_e - C) computed here from the returned routing alone, and the
  // per-slot flags agree with it, token order first.
  MoeConfig c = small_config(4, 2);
  c.capacity_factor = 1.0;
  RngStream rng(5);
  MoeLayer layer(c, nullptr, rng);
  layer.set_selection_bias(Tensor::from_vector<float>({0.3f, 0.2f, 0.f, 0.f}, {4}, Device::cpu));
  const std::int64_t T = 40, k = 2, E = 4;
  layer.forward(Var(randn_tensor({T, 6}, 9, 1.0, DType::f32)));
  const MoeRouting& r = layer.last_routing();
  const std::int64_t cap = (T * k + E - 1) / E;  // ceil(1.0 * T k / E) = 20
  EXPECT_EQ(r.capacity, cap);
  const auto idx = r.indices.to_vector<std::int64_t>();
  std::vector<std::int64_t> count(E, 0), expect_flags(static_cast<std::size_t>(T * k), 0);
  for (std::size_t s = 0; s < idx.size(); ++s)
    if (++count[static_cast<std::size_t>(idx[s])] > cap) expect_flags[s] = 1;
  std::int64_t dropped = 0;
  for (std::int64_t e = 0; e < E; ++e) dropped += std::max<std::int64_t>(0, count[static_cast<std::size_t>(e)] - cap);
  EXPECT_GT(dropped, 0) << "the bias should overload experts 0 and 1";
  EXPECT_EQ(r.dropped, dropped);
  EXPECT_EQ(r.dropped_slots.to_vector<std::int64_t>(), expect_flags);
  EXPECT_EQ(r.expert_counts.to_vector<std::int64_t>(), count);
  for (std::int64_t e = 0; e < E; ++e)
    EXPECT_EQ(r.kept_counts.to_vector<std::int64_t>()[static_cast<std::size_t>(e)], std::min(count[static_cast<std::size_t>(e)], cap));
  // Dropless: the same routing drops nothing.
  MoeConfig d = c;
  d.capacity_factor = 0.0;
  RngStream rng2(5);
  MoeLayer dropless(d, nullptr, rng2);
  dropless.set_selection_bias(Tensor::from_vector<float>({0.3f, 0.2f, 0.f, 0.f}, {4}, Device::cpu));
  dropless.forward(Var(randn_tensor({T, 6}, 9, 1.0, DType::f32)));
  EXPECT_EQ(dropless.last_routing().dropped, 0);
  EXPECT_EQ(dropless.last_routing().indices.to_vector<std::int64_t>(), idx);
}

// ------------------------------------------------------------------------------------------------
// Sparse upcycling: E copies of one dense MLP with renormalised top-k gates is the dense MLP,
// y = sum_j g_j MLP(x) = MLP(x) since sum_j g_j = 1.
class DenseIdentity : public ::testing::TestWithParam<nn::MlpActivation> {};

TEST_P(DenseIdentity, CopiesOfOneMlpEqualTheMlp) {
  for (DType dtype : {DType::f32, DType::f64}) {
    MoeConfig c = small_config(8, 2);
    c.d_model = 16;
    c.d_ff = 32;
    c.activation = GetParam();
    c.router_std = 1.0;
    nn::MlpConfig mc;
    mc.d_model = c.d_model;
    mc.d_ff = c.d_ff;
    mc.activation = c.activation;
    RngStream rng(8);
    nn::Mlp dense(mc, rng);
    randomise(dense, 50);
    MoeLayer layer(c, nullptr, rng);
    // Stack the dense tensors E times.
    const std::pair<const char*, const char*> map[] = {
        {"experts/w1", "fc1/weight"}, {"experts/b1", "fc1/bias"}, {"experts/w2", "fc2/weight"}, {"experts/b2", "fc2/bias"}};
    for (const auto& [to, from] : map) {
      const Tensor src = dense.parameter(from).value();
      Tensor stacked = Tensor::empty(layer.parameter(to).shape(), DType::f32, Device::cpu);
      for (std::int64_t e = 0; e < 8; ++e) {
        Tensor dst = stacked.rows(e, e + 1);
        dst.copy_from(src.reshape(dst.shape()));
      }
      nn::assign_parameter(layer, to, stacked);
    }
    layer.to(dtype);
    dense.to(dtype);
    const Tensor x = randn_tensor({4, 9, 16}, 21, 1.0, dtype);
    const Var y = layer.forward(Var(x));
    const Var ref = dense.forward(Var(x));
    // The same expert function on every row; only the gate sum g_1 + g_2 = 1 (rounded) and the
    // order of the final two-term sum differ: a few ulps of the output magnitude.
    const double bound = (dtype == DType::f32 ? 1e-6 : 1e-14) * std::max(1.0, max_abs(as_f64(ref.value())));
    const double err = max_abs_diff(y.value(), ref.value());
    std::printf("  dense identity (%s, %s): max|diff| %.3e (bound %.1e)\n", dtype_name(dtype),
                GetParam() == nn::MlpActivation::swiglu ? "swiglu" : "gelu", err, bound);
    EXPECT_LE(err, bound);
  }
}

INSTANTIATE_TEST_SUITE_P(Activations, DenseIdentity,
                         ::testing::Values(nn::MlpActivation::gelu_tanh, nn::MlpActivation::swiglu));

// ------------------------------------------------------------------------------------------------
// Finite differences through the whole layer (f64): router weight, every expert tensor, the
// shared expert and the input. Router weights with std 2 spread the logits so that no top-k
// choice lies within eps = 1e-6 of flipping (the margin is asserted first).
class MoeGradcheck : public ::testing::TestWithParam<Variant> {};

TEST_P(MoeGradcheck, WholeLayer) {
  const Variant v = GetParam();
  MoeConfig c = small_config(4, 2);
  c.d_model = 4;
  c.d_ff = 3;
  c.renormalize = v.renormalize;
  c.shared_expert = v.shared;
  c.bias = v.bias;
  c.activation = v.activation;
  c.capacity_factor = v.capacity_factor;
  RngStream rng(17);
  MoeLayer layer(c, nullptr, rng);
  layer.to(DType::f64);
  randomise(layer, 300, 0.7);
  nn::assign_parameter(layer, "router/weight", randn_tensor({4, 4}, 31, 2.0));
  const std::int64_t T = 6;
  const Tensor x = randn_tensor({T, 4}, 32);
  layer.forward(Var(x));
  {  // margin between the k-th and (k+1)-th probability of every token
    const auto p = as_f64(layer.last_routing().probs.value());
    double margin = 1e9;
    for (std::int64_t t = 0; t < T; ++t) {
      std::vector<double> row(p.begin() + t * 4, p.begin() + t * 4 + 4);
      std::sort(row.rbegin(), row.rend());
      margin = std::min(margin, row[1] - row[2]);
    }
    ASSERT_GT(margin, 1e-3) << "routing too close to a tie for finite differences";
  }
  if (v.capacity_factor > 0) {
    ASSERT_GT(layer.last_routing().dropped, 0) << "the capacity case should drop";
  }
  const auto named = layer.named_parameters();
  std::vector<Tensor> inputs{x};
  for (const auto& [n, p] : named) inputs.push_back(p.value().clone());
  auto f = [&](const std::vector<Var>& in) {
    for (std::size_t i = 0; i < named.size(); ++i) layer.parameter(named[i].first) = in[i + 1];
    return layer.forward(in[0]);
  };
  EXPECT_TRUE(gradcheck(f, inputs));
}

INSTANTIATE_TEST_SUITE_P(
    Variants, MoeGradcheck,
    ::testing::Values(Variant{"renorm", true, false, true, nn::MlpActivation::gelu_tanh, 0.0},
                      Variant{"plain_shared", false, true, true, nn::MlpActivation::gelu_tanh, 0.0},
                      Variant{"swiglu_renorm_shared", true, true, true, nn::MlpActivation::swiglu, 0.0},
                      Variant{"capacity", true, false, true, nn::MlpActivation::gelu_tanh, 0.5}),
    [](const ::testing::TestParamInfo<Variant>& info) { return std::string(info.param.name); });

TEST(MoeLayer, NoTokensAtAll) {
  MoeConfig c = small_config(4, 2);
  c.shared_expert = true;
  RngStream rng(2);
  MoeLayer layer(c, nullptr, rng);
  layer.set_selection_bias(Tensor::from_vector<float>({0.f, 1.f, 0.f, 0.f}, {4}, Device::cpu));
  Var x(Tensor::zeros({0, 6}, DType::f32, Device::cpu), true);
  const Var y = layer.forward(x);
  EXPECT_EQ(y.shape(), (Shape{0, 6}));
  sum_all(y).backward();
  EXPECT_TRUE(x.grad().defined());
  for (const auto& [n, p] : layer.named_parameters()) {
    ASSERT_TRUE(p.grad().defined()) << n;
    EXPECT_EQ(max_abs(as_f64(p.grad())), 0.0) << n;
  }
}

}  // namespace
