// nn layer: parameter names and shapes (the checkpoint contract), deterministic initialisation,
// module utilities, and finite-difference gradients of a whole transformer block in f64.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "gradcheck.hpp"
#include "upcycle/backend/backend.hpp"
#include "upcycle/nn/module_list.hpp"
#include "upcycle/nn/parameter_io.hpp"
#include "upcycle/nn/transformer_block.hpp"
#include "upcycle/ops/reduce.hpp"

namespace upcycle {
namespace {

using nn::TransformerBlock;
using nn::TransformerBlockConfig;
using nn::Mlp;
using nn::MlpActivation;
using nn::MlpConfig;

TransformerBlockConfig small_config(bool causal = false) {
  TransformerBlockConfig c;
  c.d_model = 16;
  c.n_heads = 4;
  c.d_ff = 64;
  c.causal = causal;
  return c;
}

template <class F>
::testing::AssertionResult throws_with(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts)
      if (msg.find(p) == std::string::npos)
        return ::testing::AssertionFailure() << "message lacks '" << p << "': " << msg;
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "no upcycle::Error thrown";
}

TEST(NnModules, BlockParameterNamesAndShapesInOrder) {
  RngStream rng(1);
  TransformerBlock block(small_config(), rng);
  const std::vector<std::pair<std::string, Shape>> expected = {
      {"ln1/gamma", {16}},           {"ln1/beta", {16}},          {"attn/qkv/weight", {48, 16}},
      {"attn/qkv/bias", {48}},       {"attn/out/weight", {16, 16}}, {"attn/out/bias", {16}},
      {"ln2/gamma", {16}},           {"ln2/beta", {16}},          {"mlp/fc1/weight", {64, 16}},
      {"mlp/fc1/bias", {64}},        {"mlp/fc2/weight", {16, 64}}, {"mlp/fc2/bias", {16}},
  };
  const auto named = block.named_parameters();
  ASSERT_EQ(named.size(), expected.size());
  std::int64_t total = 0;
  for (std::size_t i = 0; i < named.size(); ++i) {
    EXPECT_EQ(named[i].first, expected[i].first);
    EXPECT_EQ(named[i].second.shape(), expected[i].second) << named[i].first;
    EXPECT_TRUE(named[i].second.requires_grad()) << named[i].first;
    total += expected[i].second.numel();
  }
  EXPECT_EQ(block.num_parameters(), total);
  EXPECT_EQ(block.parameters().size(), expected.size());
}

TEST(NnModules, ModuleListNestsNamesLikeCheckpoints) {
  struct Tiny : nn::Module {
    explicit Tiny(RngStream& rng) {
      for (int i = 0; i < 4; ++i) blocks.push_back(std::make_unique<TransformerBlock>(small_config(), rng));
      register_module("blocks", blocks);
    }
    nn::ModuleList<TransformerBlock> blocks;
  };
  RngStream rng(1);
  Tiny model(rng);
  const auto named = model.named_parameters();
  ASSERT_EQ(named.size(), 4u * 12u);
  EXPECT_EQ(named.front().first, "blocks/00/ln1/gamma");
  EXPECT_EQ(named[3 * 12 + 2].first, "blocks/03/attn/qkv/weight");
  EXPECT_TRUE(model.has_parameter("blocks/02/mlp/fc2/bias"));
  EXPECT_FALSE(model.has_parameter("blocks/04/mlp/fc2/bias"));
  // parameter(name) is the registered handle: it aliases the member.
  EXPECT_TRUE(model.parameter("blocks/01/attn/out/weight").value().same_storage(model.blocks[1].attn.out.weight.value()));
  EXPECT_EQ(nn::index_name(3), "03");
  EXPECT_EQ(nn::index_name(123), "123");
}

TEST(NnModules, UnknownParameterListsTheKnownNames) {
  RngStream rng(1);
  nn::Linear lin(3, 2, rng);
  EXPECT_TRUE(throws_with([&] { lin.parameter("weights"); }, {"'weights'", "weight, bias"}));
}

TEST(NnModules, InitIsDeterministicAndFollowsTheOffsetScheme) {
  RngStream a(42), b(42), c(43);
  TransformerBlock ba(small_config(), a), bb(small_config(), b), bc(small_config(), c);
  const auto pa = ba.named_parameters(), pb = bb.named_parameters(), pc = bc.named_parameters();
  bool any_differs = false;
  for (std::size_t i = 0; i < pa.size(); ++i) {
    EXPECT_EQ(pa[i].second.value().to_vector<float>(), pb[i].second.value().to_vector<float>()) << pa[i].first;
    any_differs |= pa[i].second.value().to_vector<float>() != pc[i].second.value().to_vector<float>();
  }
  EXPECT_TRUE(any_differs) << "seed 43 gave the same weights as seed 42";

  // Each normal-initialised weight takes the next 2 * numel words, in construction order;
  // biases and LayerNorm parameters draw nothing.
  const std::int64_t D = 16, F = 64;
  EXPECT_EQ(a.offset(), static_cast<std::uint64_t>(2 * (3 * D * D + D * D + F * D + D * F)));
  Tensor expected_out = Tensor::empty({D, D}, DType::f32, Device::cpu);
  backend_for(Device::cpu).normal(expected_out, 42, 2 * 3 * D * D, 0.0, 0.02);
  EXPECT_EQ(ba.attn.out.weight.value().to_vector<float>(), expected_out.to_vector<float>());

  for (float v : ba.attn.qkv.bias.value().to_vector<float>()) EXPECT_EQ(v, 0.0f);
  for (float v : ba.ln1.gamma.value().to_vector<float>()) EXPECT_EQ(v, 1.0f);
  for (float v : ba.ln1.beta.value().to_vector<float>()) EXPECT_EQ(v, 0.0f);

  // Sample std of the 1024 fc1 weights: its standard error is ~2% of 0.02, so 15% is a safe band.
  const auto w = ba.mlp->fc1.weight.value().to_vector<float>();
  double ss = 0;
  for (float v : w) ss += static_cast<double>(v) * v;
  EXPECT_NEAR(std::sqrt(ss / static_cast<double>(w.size())), 0.02, 0.003);
}

TEST(NnModules, TrainEvalZeroGradAndDtype) {
  RngStream rng(3);
  TransformerBlock block(small_config(), rng);
  EXPECT_TRUE(block.training() && block.mlp->fc1.training());
  block.eval();
  EXPECT_FALSE(block.training() || block.attn.qkv.training() || block.ln2.training());
  block.train();
  EXPECT_TRUE(block.attn.out.training());

  Var x(testing::random_tensor({2, 3, 16}, 5, -1, 1, DType::f32), false);
  Var loss = mean_all(block.forward(x));
  loss.backward();
  EXPECT_TRUE(block.mlp->fc2.bias.grad().defined());
  block.zero_grad();
  for (const Var& p : block.parameters()) {
    if (!p.grad().defined()) continue;
    for (float g : p.grad().to_vector<float>()) ASSERT_EQ(g, 0.0f);
  }

  block.to(DType::f64);
  for (const Var& p : block.parameters()) EXPECT_EQ(p.dtype(), DType::f64);
  EXPECT_EQ(block.forward(Var(x.value().to(DType::f64))).dtype(), DType::f64);
}

TEST(NnModules, AssignParameterChecksShapeAndConverts) {
  RngStream rng(1);
  TransformerBlock block(small_config(), rng);
  const Var before = block.attn.qkv.weight;  // another handle to the same parameter
  nn::assign_parameter(block, "attn/qkv/weight", testing::random_tensor({48, 16}, 9, -1, 1, DType::f64));
  EXPECT_EQ(before.value().to_vector<float>(),
            testing::random_tensor({48, 16}, 9, -1, 1, DType::f64).to(DType::f32).to_vector<float>());
  EXPECT_TRUE(throws_with([&] { nn::assign_parameter(block, "attn/qkv/weight", Tensor::zeros({16, 48}, DType::f32, Device::cpu)); },
                          {"'attn/qkv/weight'", "[48, 16]", "[16, 48]"}));
  EXPECT_TRUE(throws_with([&] { nn::assign_parameter(block, "attn/qkv/weigth", Tensor::zeros({48, 16}, DType::f32, Device::cpu)); },
                          {"'attn/qkv/weigth'", "attn/qkv/weight"}));
}

TEST(NnModules, DropoutNeedsAStreamOnlyWhileTraining) {
  TransformerBlockConfig cfg = small_config();
  cfg.dropout = 0.1;
  RngStream rng(1);
  TransformerBlock block(cfg, rng);
  Var x(testing::random_tensor({1, 3, 16}, 5, -1, 1, DType::f32));
  EXPECT_TRUE(throws_with([&] { block.forward(x); }, {"dropout"}));
  block.eval();
  const Tensor y_eval = block.forward(x).value();  // identity dropout, no stream needed
  block.train();
  RngStream drop(77);
  const Tensor y_train = block.forward(x, &drop).value();
  EXPECT_GT(drop.offset(), 0u);
  EXPECT_GT(testing::max_abs_diff(y_eval, y_train), 0.0);
}

// Gradient of a whole f64 block w.r.t. its input and some parameters, by central differences.
// Parameters are randomised first so that LayerNorm's affine parameters and the biases matter.
void gradcheck_block(bool causal) {
  TransformerBlockConfig cfg;
  cfg.d_model = 8;
  cfg.n_heads = 2;
  cfg.d_ff = 12;
  cfg.causal = causal;
  RngStream rng(11);
  TransformerBlock block(cfg, rng);
  block.to(DType::f64);
  std::uint64_t seed = 100;
  for (const auto& [name, p] : block.named_parameters())
    nn::assign_parameter(block, name, testing::random_tensor(p.shape(), seed++, -0.6, 0.6));
  for (const char* ln : {"ln1/gamma", "ln2/gamma"})
    nn::assign_parameter(block, ln, testing::random_tensor({8}, seed++, 0.7, 1.3));

  const std::vector<std::string> checked = {"attn/qkv/weight", "ln1/gamma", "mlp/fc1/bias",
                                            "attn/out/weight", "ln2/beta"};
  std::vector<Tensor> inputs = {testing::random_tensor({2, 3, 8}, seed++)};
  for (const auto& name : checked) inputs.push_back(block.parameter(name).value().clone());
  const auto f = [&](const std::vector<Var>& v) {
    for (std::size_t i = 0; i < checked.size(); ++i) block.parameter(checked[i]) = v[i + 1];
    return block.forward(v[0]);
  };
  EXPECT_TRUE(testing::gradcheck(f, inputs)) << (causal ? "causal" : "bidirectional");
}

TEST(NnModules, GradcheckBlockBidirectional) { gradcheck_block(false); }
TEST(NnModules, GradcheckBlockCausal) { gradcheck_block(true); }


// SwiGLU: fc1 has 2F rows (gate, then up); the output is fc2(silu(gate) * up).
TEST(NnModules, SwigluMlpForwardAndGradient) {
  MlpConfig cfg;
  cfg.d_model = 4;
  cfg.d_ff = 3;
  cfg.activation = MlpActivation::swiglu;
  RngStream rng(5);
  Mlp mlp(cfg, rng);
  EXPECT_EQ(mlp.fc1.weight.shape(), (Shape{6, 4}));
  mlp.to(DType::f64);
  std::uint64_t seed = 40;
  for (const auto& [name, p] : mlp.named_parameters())
    nn::assign_parameter(mlp, name, testing::random_tensor(p.shape(), seed++, -0.8, 0.8));
  const Tensor x = testing::random_tensor({2, 4}, 99);
  const Tensor y = mlp.forward(Var(x)).value();
  // Reference by hand.
  const double* w1 = mlp.fc1.weight.value().data<double>();
  const double* b1 = mlp.fc1.bias.value().data<double>();
  const double* w2 = mlp.fc2.weight.value().data<double>();
  const double* b2 = mlp.fc2.bias.value().data<double>();
  for (int r = 0; r < 2; ++r) {
    double h[6];
    for (int j = 0; j < 6; ++j) {
      h[j] = b1[j];
      for (int i = 0; i < 4; ++i) h[j] += w1[j * 4 + i] * x.data<double>()[r * 4 + i];
    }
    for (int o = 0; o < 4; ++o) {
      double s = b2[o];
      for (int j = 0; j < 3; ++j) s += w2[o * 3 + j] * (h[j] / (1 + std::exp(-h[j]))) * h[3 + j];
      EXPECT_NEAR(y.data<double>()[r * 4 + o], s, 1e-13);
    }
  }
  const auto f = [&](const std::vector<Var>& v) {
    mlp.parameter("fc1/weight") = v[1];
    return mlp.forward(v[0]);
  };
  EXPECT_TRUE(testing::gradcheck(f, {x, mlp.fc1.weight.value().clone()}));
}

}  // namespace
}  // namespace upcycle
