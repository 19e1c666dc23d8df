// DPSL loss and gradient against numpy/scipy (scipy.special.betainc, scipy.stats.beta.pdf), from
// the file tests/golden/gen_dpsl.py wrote (see its docstring for the layout and the cases:
// symmetric alpha = 1, symmetric alpha = 0.5 with pdf clipping and exact zeros, asymmetric,
// group-conditioned with 2 and 3 groups and ignored rows). Usage: test_golden_dpsl FILE.h5.
//
// Bounds. Both sides evaluate the regularised incomplete beta function in double (Boost.Math here,
// Cephes incbet in scipy) to ~1e-15 relative; the loss is a sum of B E squared differences of
// O(1) terms and the gradient a product of three such terms. Measured (Boost 1.74, scipy 1.10):
// <= 3e-16 on the loss and <= 8e-16 on the gradient. The contract, with margin for other library
// versions: loss relative error <= 1e-13, gradient max |diff| / max |ref| <= 1e-12 for f64 inputs;
// for f32 inputs (the probabilities rounded to f32 move F by ~1e-7 f; measured <= 7e-8) 1e-6 and
// 1e-5. The printed table gives the measured errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "upcycle/io/hdf5.hpp"
#include "upcycle/moe/router_losses.hpp"

namespace upcycle {
namespace {

std::string g_file;

constexpr double kLossTol64 = 1e-13, kGradTol64 = 1e-12;
constexpr double kLossTol32 = 1e-6, kGradTol32 = 1e-5;

struct Case {
  Tensor p, alpha, groups, loss, grad;
  double lambda = 0, clip = 0;
  std::string kind;
  double alpha_b = 0, alpha_s = 0;
};

Case load(const std::string& name) {
  const h5::File f = h5::File::open(g_file);
  Case c;
  c.p = h5::read_tensor(f, name + "/p", DType::f64);
  c.alpha = h5::read_tensor(f, name + "/alpha", DType::f64);
  c.groups = h5::read_tensor(f, name + "/groups", DType::i64);
  c.loss = h5::read_tensor(f, name + "/loss", DType::f64);
  c.grad = h5::read_tensor(f, name + "/grad", DType::f64);
  c.lambda = h5::read_double_attribute(f, name, "lambda");
  c.clip = h5::read_double_attribute(f, name, "pdf_clip");
  c.kind = h5::read_string_attribute(f, name, "kind");
  if (c.kind == "group") {
    c.alpha_b = h5::read_double_attribute(f, name, "alpha_b");
    c.alpha_s = h5::read_double_attribute(f, name, "alpha_s");
  }
  return c;
}

// The prior built through the public constructors (so that their construction is checked too).
moe::DirichletPrior prior_of(const Case& c) {
  const std::int64_t G = c.alpha.dim(0), E = c.alpha.dim(1);
  const double* a = c.alpha.data<double>();
  if (c.kind == "symmetric") return moe::DirichletPrior::symmetric(E, a[0]);
  if (c.kind == "asymmetric") return moe::DirichletPrior::asymmetric(std::vector<double>(a, a + E));
  return moe::DirichletPrior::group_conditioned(G, E, c.alpha_b, c.alpha_s);
}

double rel_max(const Tensor& got, const Tensor& ref) {
  const Tensor a = got.to(DType::f64), b = ref.to(DType::f64);
  double diff = 0, mag = 0;
  for (std::int64_t i = 0; i < b.numel(); ++i) {
    const double x = a.data<double>()[i], r = b.data<double>()[i];
    diff = std::isnan(x) ? INFINITY : std::max(diff, std::abs(x - r));
    mag = std::max(mag, std::abs(r));
  }
  return diff / std::max(mag, 1e-300);
}

class GoldenDpsl : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenDpsl, LossAndGradientMatchScipy) {
  ASSERT_FALSE(g_file.empty()) << "usage: test_golden_dpsl FILE.h5 (written by tests/golden/gen_dpsl.py)";
  const Case c = load(GetParam());
  const moe::DirichletPrior prior = prior_of(c);
  // The constructed prior table equals the reference's.
  ASSERT_EQ(prior.num_groups(), c.alpha.dim(0));
  ASSERT_EQ(prior.num_experts(), c.alpha.dim(1));
  for (std::int64_t m = 0; m < prior.num_groups(); ++m)
    for (std::int64_t e = 0; e < prior.num_experts(); ++e)
      EXPECT_EQ(prior.alpha[m][e], c.alpha.data<double>()[m * c.alpha.dim(1) + e]) << "alpha[" << m << "][" << e << "]";

  moe::DpslOptions opt;
  opt.weight = c.lambda;
  opt.pdf_clip = c.clip;
  opt.scope = moe::DpslScope::rank;
  const Tensor groups = c.kind == "group" ? c.groups : Tensor();
  const double ref_loss = c.loss.data<double>()[0];
  for (DType dtype : {DType::f64, DType::f32}) {
    Var p(c.p.to(dtype), true);
    Var loss = moe::dpsl_loss(p, prior, opt, groups);
    loss.backward();
    const double got = loss.value().to(DType::f64).item<double>();
    const double loss_rel = std::abs(got - ref_loss) / std::abs(ref_loss);
    const double grad_rel = rel_max(p.grad(), c.grad);
    std::printf("%-18s %s  loss %.17g (scipy %.17g)  loss rel err %.3e  grad max|diff|/max|ref| %.3e\n",
                GetParam().c_str(), dtype_name(dtype), got, ref_loss, loss_rel, grad_rel);
    const bool f64 = dtype == DType::f64;
    EXPECT_LE(loss_rel, f64 ? kLossTol64 : kLossTol32) << dtype_name(dtype);
    EXPECT_LE(grad_rel, f64 ? kGradTol64 : kGradTol32) << dtype_name(dtype);
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, GoldenDpsl,
                         ::testing::Values("symmetric_a1", "symmetric_a05", "asymmetric", "group_g2",
                                           "group_g3_ignored"));

}  // namespace
}  // namespace upcycle

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (argc >= 2) upcycle::g_file = argv[1];
  return RUN_ALL_TESTS();
}
