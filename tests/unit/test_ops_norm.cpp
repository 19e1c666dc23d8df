// layer_norm and rms_norm, with and without affine parameters: forward values against plain-loop
// references, gradients by finite differences, f32 against f64, and deterministic parameter
// gradients.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <vector>

#include "gradcheck.hpp"
#include "upcycle/backend/backend.hpp"
#include "upcycle/ops/norm.hpp"

namespace upcycle {
namespace {

using testing::gradcheck;
using testing::max_abs_diff;
using testing::randn_tensor;

// Plain loops in double: y = (x - mean) / sqrt(var + eps) * gamma + beta with the biased
// variance (layer norm), or y = x / sqrt(mean(x^2) + eps) * gamma (rms norm). Undefined gamma /
// beta mean 1 / 0.
Tensor reference_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps, bool rms) {
  const std::vector<double> v = x.to(DType::f64).to_vector<double>();
  const std::int64_t d = x.dim(-1), rows = x.numel() / d;
  std::vector<double> g(d, 1.0), b(d, 0.0);
  if (gamma.defined()) g = gamma.to(DType::f64).to_vector<double>();
  if (beta.defined()) b = beta.to(DType::f64).to_vector<double>();
  std::vector<double> out(v.size());
  for (std::int64_t r = 0; r < rows; ++r) {
    double mean = 0.0;
    if (!rms) {
      for (std::int64_t j = 0; j < d; ++j) mean += v[r * d + j];
      mean /= d;
    }
    double var = 0.0;
    for (std::int64_t j = 0; j < d; ++j) var += (v[r * d + j] - mean) * (v[r * d + j] - mean);
    var /= d;
    for (std::int64_t j = 0; j < d; ++j)
      out[r * d + j] = (v[r * d + j] - mean) / std::sqrt(var + eps) * g[j] + b[j];
  }
  return Tensor::from_vector(out, x.shape(), Device::cpu);
}

Var maybe(const Tensor& t) { return t.defined() ? Var(t) : Var(); }

TEST(LayerNorm, ForwardMatchesReference) {
  const Tensor x = randn_tensor({2, 3, 8}, 1, 3.0);
  const Tensor gamma = randn_tensor({8}, 2), beta = randn_tensor({8}, 3);
  for (int variant = 0; variant < 3; ++variant) {  // affine, none, gamma only
    const Tensor g = variant == 1 ? Tensor() : gamma, b = variant == 0 ? beta : Tensor();
    const Tensor y = layer_norm(Var(x), maybe(g), maybe(b), 1e-5).value();
    EXPECT_EQ(y.shape(), x.shape());
    EXPECT_LT(max_abs_diff(y, reference_norm(x, g, b, 1e-5, false)), 1e-13) << "variant " << variant;
  }
}

TEST(RmsNorm, ForwardMatchesReference) {
  const Tensor x = randn_tensor({2, 3, 8}, 4, 3.0);
  const Tensor gamma = randn_tensor({8}, 5);
  for (bool affine : {true, false}) {
    const Tensor g = affine ? gamma : Tensor();
    const Tensor y = rms_norm(Var(x), maybe(g), 1e-6).value();
    EXPECT_LT(max_abs_diff(y, reference_norm(x, g, Tensor(), 1e-6, true)), 1e-13) << "affine " << affine;
  }
}

TEST(LayerNorm, GradcheckWithAffine) {
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return layer_norm(in[0], in[1], in[2], 1e-5); },
                        {randn_tensor({2, 3, 6}, 6, 2.0), randn_tensor({6}, 7), randn_tensor({6}, 8)}));
}

TEST(LayerNorm, GradcheckWithoutAffine) {
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return layer_norm(in[0], Var(), Var(), 1e-5); },
                        {randn_tensor({2, 3, 6}, 9, 2.0)}));
}

TEST(LayerNorm, GradcheckGammaOnly) {
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return layer_norm(in[0], in[1], Var(), 1e-5); },
                        {randn_tensor({4, 6}, 10, 2.0), randn_tensor({6}, 11)}));
}

TEST(LayerNorm, GradcheckParametersOnly) {
  // x is a constant: the op must still deliver gamma and beta gradients.
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return layer_norm(in[0], in[1], in[2], 1e-5); },
                        {randn_tensor({4, 6}, 12, 2.0), randn_tensor({6}, 13), randn_tensor({6}, 14)}, {}, {0}));
}

TEST(RmsNorm, GradcheckWithGamma) {
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return rms_norm(in[0], in[1], 1e-6); },
                        {randn_tensor({2, 3, 6}, 15, 2.0), randn_tensor({6}, 16)}));
}

TEST(RmsNorm, GradcheckWithoutGamma) {
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return rms_norm(in[0], Var(), 1e-6); },
                        {randn_tensor({2, 3, 6}, 17, 2.0)}));
}

// Same float inputs through both paths. Outputs are O(3) after gamma, with float rounding of the
// stored mean / rstd and of each product (a few ulps of 4e-7); gradients are O(1) with row sums in
// double. 5e-6 bounds both.
TEST(Norms, Float32AgreesWithFloat64) {
  const Tensor x32 = randn_tensor({16, 48}, 18, 2.0, DType::f32);
  const Tensor g32 = randn_tensor({48}, 19, 1.0, DType::f32), b32 = randn_tensor({48}, 20, 1.0, DType::f32);
  const Tensor seed = randn_tensor({16, 48}, 21);
  for (bool rms : {false, true}) {
    Var xa(x32.to(DType::f64), true), ga(g32.to(DType::f64), true), ba(b32.to(DType::f64), true);
    Var xb(x32, true), gb(g32, true), bb(b32, true);
    Var ya = rms ? rms_norm(xa, ga) : layer_norm(xa, ga, ba);
    Var yb = rms ? rms_norm(xb, gb) : layer_norm(xb, gb, bb);
    EXPECT_LT(max_abs_diff(ya.value(), yb.value()), 5e-6) << "rms " << rms;
    ya.backward(seed);
    yb.backward(seed.to(DType::f32));
    EXPECT_LT(max_abs_diff(xa.grad(), xb.grad()), 5e-6) << "rms " << rms;
    EXPECT_LT(max_abs_diff(ga.grad(), gb.grad()), 5e-6) << "rms " << rms;
    if (!rms) {
      EXPECT_LT(max_abs_diff(ba.grad(), bb.grad()), 5e-6);
    }
  }
}

// Rows around 1e4 with unit spread: E[x^2] - E[x]^2 in float would lose every digit of the
// variance (float ulp of 1e8 is 8). The two-pass double statistics keep y at unit variance.
TEST(LayerNorm, Float32LargeOffsetKeepsVariance) {
  std::vector<float> v(4 * 256);
  const std::vector<double> noise = randn_tensor({4 * 256}, 22).to_vector<double>();
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(1e4 + noise[i]);
  const Tensor x = Tensor::from_vector(v, {4, 256}, Device::cpu);
  const Tensor y = layer_norm(Var(x), Var(), Var()).value();
  // The reference on the same float inputs; f32 (x - mean) is exact to float rounding of x near
  // 1e4 (ulp 1e-3), so y agrees to a few 1e-3 / std(x) ~ 1e-3.
  EXPECT_LT(max_abs_diff(y, reference_norm(x, Tensor(), Tensor(), 1e-5, false)), 2e-3);
}

// Parameter gradients are column sums over rows; they must not depend on the thread count. f64,
// because an f32 result rounds away the last bits in which differently ordered double sums differ.
// 1024 x 48 elements runs the OpenMP path.
TEST(Norms, ParameterGradientsAreDeterministic) {
  const Tensor x = randn_tensor({1024, 48}, 23);
  const Tensor gamma = randn_tensor({48}, 24), beta = randn_tensor({48}, 25);
  const Tensor seed = randn_tensor({1024, 48}, 26);
  auto grads = [&](bool rms, int threads) {
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    Var xv(x, true), gv(gamma, true), bv(beta, true);
    (rms ? rms_norm(xv, gv) : layer_norm(xv, gv, bv)).backward(seed);
    omp_set_num_threads(saved);
    return std::vector<Tensor>{xv.grad(), gv.grad(), rms ? Tensor() : bv.grad()};
  };
  for (bool rms : {false, true}) {
    const std::vector<Tensor> one = grads(rms, 1), two = grads(rms, 2), three = grads(rms, 3);
    for (std::size_t i = 0; i < one.size(); ++i) {
      if (!one[i].defined()) continue;
      EXPECT_EQ(one[i].to_vector<double>(), two[i].to_vector<double>()) << "rms " << rms << " grad " << i;
      EXPECT_EQ(one[i].to_vector<double>(), three[i].to_vector<double>()) << "rms " << rms << " grad " << i;
    }
  }
  // And the column sums are right: gbeta = sum over rows of the seed.
  Var xv(x, true), gv(gamma, true), bv(beta, true);
  layer_norm(xv, gv, bv).backward(seed);
  const std::vector<double> s = seed.to_vector<double>();
  const std::vector<double> gb = bv.grad().to_vector<double>();
  for (int j = 0; j < 48; ++j) {
    double col = 0.0;
    for (int r = 0; r < 1024; ++r) col += s[r * 48 + j];
    EXPECT_NEAR(gb[j], col, 1e-12) << "column " << j;
  }
}

TEST(Norms, RejectWrongParameterShapes) {
  const Var x(randn_tensor({2, 6}, 27));
  EXPECT_THROW(layer_norm(x, Var(randn_tensor({5}, 28)), Var()), Error);
  EXPECT_THROW(layer_norm(x, Var(), Var(randn_tensor({2, 6}, 29))), Error);
  EXPECT_THROW(rms_norm(x, Var(randn_tensor({6}, 30, 1.0, DType::f32))), Error);
}

}  // namespace
}  // namespace upcycle
