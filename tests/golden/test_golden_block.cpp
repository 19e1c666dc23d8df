// Parity with PyTorch: one pre-LN transformer block plus a Linear + cross-entropy head, forward and
// backward, against the file tests/golden/gen_block.py wrote from a live torch (see its docstring
// for the layout). Usage: test_golden_block FILE.h5 [gtest flags].
//
// Error measure, per tensor: rel(a, ref) = max_i |a_i - ref_i| / max(max_i |ref_i|, 1e-6), i.e. the
// worst absolute deviation in units of the reference's largest magnitude (a plain elementwise
// relative error would blow up on entries that happen to be near zero). Both sides compute in f32
// with different summation orders, so agreement is limited to a few f32 ulps times the depth of
// the computation: forward outputs must agree to 1e-5 and gradients (one more pass of rounding) to
// 1e-4. These bounds are the contract; when one fails, the printed table shows which tensor (and
// so which op) is off.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>

#include "relative_error.hpp"
#include "upcycle/io/hdf5.hpp"
#include "upcycle/nn/linear.hpp"
#include "upcycle/nn/parameter_io.hpp"
#include "upcycle/nn/transformer_block.hpp"
#include "upcycle/ops/loss.hpp"

namespace upcycle {
namespace {

std::string g_file;  // from the command line

constexpr double kForwardTol = 1e-5;
constexpr double kGradTol = 1e-4;

using testing::RelError;
using testing::relative_error;

// Runs the model once for the whole suite; each TEST then checks one group of tensors.
class GoldenBlock : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_FALSE(g_file.empty()) << "usage: test_golden_block FILE.h5 (written by tests/golden/gen_block.py)";
    file_ = std::make_unique<h5::File>(h5::File::open(g_file));
    const h5::File& f = *file_;
    nn::TransformerBlockConfig cfg;
    cfg.d_model = h5::read_int_attribute(f, "/", "D");
    cfg.n_heads = h5::read_int_attribute(f, "/", "H");
    cfg.d_ff = h5::read_int_attribute(f, "/", "F");
    cfg.causal = h5::read_int_attribute(f, "/", "causal") != 0;
    cfg.ln_eps = h5::read_double_attribute(f, "/", "ln_eps");
    cfg.activation = nn::MlpActivation::gelu_tanh;
    const std::int64_t classes = h5::read_int_attribute(f, "/", "C");
    std::printf("golden file %s (torch %s): D=%lld H=%lld F=%lld C=%lld causal=%d\n", g_file.c_str(),
                h5::read_string_attribute(f, "/", "torch_version").c_str(),
                static_cast<long long>(cfg.d_model), static_cast<long long>(cfg.n_heads),
                static_cast<long long>(cfg.d_ff), static_cast<long long>(classes), cfg.causal ? 1 : 0);

    RngStream rng(0);  // the init is overwritten by the file's weights
    block_ = std::make_unique<nn::TransformerBlock>(cfg, rng);
    head_ = std::make_unique<nn::Linear>(cfg.d_model, classes, rng);
    load(*block_, "block");
    load(*head_, "head");

    x_ = Var(h5::read_tensor(f, "x", DType::f32), true);
    const Tensor targets = h5::read_tensor(f, "targets", DType::i64);
    Var y = block_->forward(x_);
    Var logits = head_->forward(y);
    Var loss = cross_entropy(logits, targets, -100);
    loss.backward();
    block_out_ = y.value();
    logits_ = logits.value();
    loss_ = loss.value();
    ready_ = true;
  }

  // A set-up failure (e.g. an op that throws) is reported once above; stop each test cleanly.
  void SetUp() override { ASSERT_TRUE(ready_) << "suite set-up failed, see the error above"; }

  static void TearDownTestSuite() {
    block_.reset();
    head_.reset();
    file_.reset();
  }

  // Every parameter of `m` from /<prefix>/<name>; the file must hold no others, so a name that
  // drifted on either side fails here rather than silently keeping an initial value.
  static void load(nn::Module& m, const std::string& prefix) {
    const auto params = m.named_parameters();
    for (const auto& [name, p] : params)
      nn::assign_parameter(m, name, h5::read_tensor(*file_, prefix + "/" + name));
    ASSERT_EQ(h5::list_datasets(*file_, prefix).size(), params.size())
        << "the golden file has parameters under /" << prefix << " that the C++ module lacks";
  }

  static void expect_close(const std::string& what, const Tensor& got, const std::string& dataset,
                           double tol) {
    const Tensor ref = h5::read_tensor(*file_, dataset);
    ASSERT_EQ(got.shape(), ref.shape()) << what;
    const RelError e = relative_error(got, ref);
    std::printf("  %-28s rel %.3e  (max|diff| %.3e, max|ref| %.3e, bound %.0e)\n", what.c_str(), e.rel,
                e.max_diff, e.max_ref, tol);
    EXPECT_LE(e.rel, tol) << what << " differs from PyTorch (" << dataset << ")";
  }

  static void expect_grads(const nn::Module& m, const std::string& prefix) {
    for (const auto& [name, p] : m.named_parameters()) {
      ASSERT_TRUE(p.grad().defined()) << prefix << "/" << name << " received no gradient";
      expect_close(prefix + "/" + name, p.grad(), "grad/" + prefix + "/" + name, kGradTol);
    }
  }

  static bool ready_;
  static std::unique_ptr<h5::File> file_;
  static std::unique_ptr<nn::TransformerBlock> block_;
  static std::unique_ptr<nn::Linear> head_;
  static Var x_;
  static Tensor block_out_, logits_, loss_;
};

bool GoldenBlock::ready_ = false;
std::unique_ptr<h5::File> GoldenBlock::file_;
std::unique_ptr<nn::TransformerBlock> GoldenBlock::block_;
std::unique_ptr<nn::Linear> GoldenBlock::head_;
Var GoldenBlock::x_;
Tensor GoldenBlock::block_out_, GoldenBlock::logits_, GoldenBlock::loss_;

TEST_F(GoldenBlock, Forward) {
  expect_close("block_out", block_out_, "block_out", kForwardTol);
  expect_close("logits", logits_, "logits", kForwardTol);
  expect_close("loss", loss_, "loss", kForwardTol);
}

TEST_F(GoldenBlock, InputGradient) {
  ASSERT_TRUE(x_.grad().defined());
  expect_close("x", x_.grad(), "grad/x", kGradTol);
}

TEST_F(GoldenBlock, BlockParameterGradients) { expect_grads(*block_, "block"); }

TEST_F(GoldenBlock, HeadParameterGradients) { expect_grads(*head_, "head"); }

}  // namespace
}  // namespace upcycle

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);  // removes the gtest flags
  if (argc >= 2) upcycle::g_file = argv[1];
  return RUN_ALL_TESTS();
}
