// Parity with PyTorch: the MoE layer (router + E = 4 experts, top-2, GELU tanh; gates renormalised
// or not; with or without a shared expert), forward and backward, against the file
// tests/golden/gen_moe_block.py wrote from a live torch (see its docstring for the layout).
// Usage: test_golden_moe FILE.h5 [gtest flags].
//
// Error measure, per tensor (as test_golden_block): rel = max_i |a_i - ref_i| / max_i |ref_i|.
// Both sides compute in f32 in different orders (torch runs every expert densely and masks by the
// gate; we dispatch the selected rows only): forward outputs must agree to 1e-5, gradients to 1e-4.
// The routing itself (which experts each token picks) must agree exactly; the generator draws
// data whose top-k choices are at least 1e-3 away from a tie.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>

#include "relative_error.hpp"
#include "upcycle/io/hdf5.hpp"
#include "upcycle/moe/moe_layer.hpp"
#include "upcycle/nn/parameter_io.hpp"
#include "upcycle/ops/elementwise.hpp"
#include "upcycle/ops/reduce.hpp"

namespace upcycle {
namespace {

std::string g_file;  // from the command line

constexpr double kForwardTol = 1e-5;
constexpr double kGradTol = 1e-4;

using testing::RelError;
using testing::relative_error;

class GoldenMoe : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_FALSE(g_file.empty()) << "usage: test_golden_moe FILE.h5 (written by tests/golden/gen_moe_block.py)";
    file_ = std::make_unique<h5::File>(h5::File::open(g_file));
    const h5::File& f = *file_;
    moe::MoeConfig cfg;
    cfg.d_model = h5::read_int_attribute(f, "/", "D");
    cfg.d_ff = h5::read_int_attribute(f, "/", "F");
    cfg.num_experts = h5::read_int_attribute(f, "/", "E");
    cfg.top_k = h5::read_int_attribute(f, "/", "k");
    cfg.renormalize = h5::read_int_attribute(f, "/", "renormalize") != 0;
    cfg.shared_expert = h5::read_int_attribute(f, "/", "shared") != 0;
    cfg.shared_d_ff = h5::read_int_attribute(f, "/", "shared_F");
    cfg.activation = nn::MlpActivation::gelu_tanh;
    cfg.bias = true;
    std::printf("golden file %s (torch %s): D=%lld F=%lld E=%lld k=%lld renormalize=%d shared=%d\n", g_file.c_str(),
                h5::read_string_attribute(f, "/", "torch_version").c_str(), static_cast<long long>(cfg.d_model),
                static_cast<long long>(cfg.d_ff), static_cast<long long>(cfg.num_experts),
                static_cast<long long>(cfg.top_k), cfg.renormalize ? 1 : 0, cfg.shared_expert ? 1 : 0);

    RngStream rng(0);  // the init is overwritten by the file's weights
    layer_ = std::make_unique<moe::MoeLayer>(cfg, nullptr, rng);
    const auto params = layer_->named_parameters();
    for (const auto& [name, p] : params) nn::assign_parameter(*layer_, name, h5::read_tensor(f, "moe/" + name));
    ASSERT_EQ(h5::list_datasets(f, "moe").size(), params.size())
        << "the golden file has parameters under /moe that the C++ layer lacks";

    x_ = Var(h5::read_tensor(f, "x", DType::f32), true);
    const Var proj(h5::read_tensor(f, "proj", DType::f32));
    y_ = layer_->forward(x_);
    loss_ = sum_all(mul(y_, proj));
    loss_.backward();
    ready_ = true;
  }

  void SetUp() override { ASSERT_TRUE(ready_) << "suite set-up failed, see the error above"; }

  static void TearDownTestSuite() {
    layer_.reset();
    file_.reset();
    x_ = y_ = loss_ = Var();
  }

  static void expect_close(const std::string& what, const Tensor& got, const std::string& dataset, double tol) {
    const Tensor ref = h5::read_tensor(*file_, dataset);
    ASSERT_EQ(got.shape(), ref.shape()) << what;
    const RelError e = relative_error(got, ref);
    std::printf("  %-28s rel %.3e  (max|diff| %.3e, max|ref| %.3e, bound %.0e)\n", what.c_str(), e.rel, e.max_diff,
                e.max_ref, tol);
    EXPECT_LE(e.rel, tol) << what << " differs from PyTorch (" << dataset << ")";
  }

  static bool ready_;
  static std::unique_ptr<h5::File> file_;
  static std::unique_ptr<moe::MoeLayer> layer_;
  static Var x_, y_, loss_;
};

bool GoldenMoe::ready_ = false;
std::unique_ptr<h5::File> GoldenMoe::file_;
std::unique_ptr<moe::MoeLayer> GoldenMoe::layer_;
Var GoldenMoe::x_, GoldenMoe::y_, GoldenMoe::loss_;

TEST_F(GoldenMoe, RoutingIsTheSame) {
  const Tensor ref = h5::read_tensor(*file_, "indices", DType::i64);
  EXPECT_EQ(layer_->last_routing().indices.to_vector<std::int64_t>(), ref.to_vector<std::int64_t>());
  EXPECT_EQ(layer_->last_routing().dropped, 0);
}

TEST_F(GoldenMoe, Forward) {
  expect_close("y", y_.value(), "y", kForwardTol);
  expect_close("loss", loss_.value(), "loss", kForwardTol);
}

TEST_F(GoldenMoe, InputGradient) {
  ASSERT_TRUE(x_.grad().defined());
  expect_close("x", x_.grad(), "grad/x", kGradTol);
}

TEST_F(GoldenMoe, ParameterGradients) {
  for (const auto& [name, p] : layer_->named_parameters()) {
    ASSERT_TRUE(p.grad().defined()) << name << " received no gradient";
    expect_close("moe/" + name, p.grad(), "grad/moe/" + name, kGradTol);
  }
}

}  // namespace
}  // namespace upcycle

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);  // removes the gtest flags
  if (argc >= 2) upcycle::g_file = argv[1];
  return RUN_ALL_TESTS();
}
