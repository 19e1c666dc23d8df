// softmax / log_softmax ops and the causal_mask kernel: forward values against plain-loop
// references, gradients by finite differences, and the f32 path against the f64 one.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "gradcheck.hpp"
#include "upcycle/backend/backend.hpp"
#include "upcycle/ops/softmax.hpp"

namespace upcycle {
namespace {

using testing::gradcheck;
using testing::max_abs_diff;
using testing::randn_tensor;

// Plain-loop softmax (or log_softmax) over the last dim, in double.
Tensor reference_softmax(const Tensor& x, bool log) {
  const std::vector<double> v = x.to(DType::f64).to_vector<double>();
  const std::int64_t cols = x.dim(-1), rows = x.numel() / cols;
  std::vector<double> out(v.size());
  for (std::int64_t r = 0; r < rows; ++r) {
    double m = -std::numeric_limits<double>::infinity();
    for (std::int64_t j = 0; j < cols; ++j) m = std::max(m, v[r * cols + j]);
    double s = 0.0;
    for (std::int64_t j = 0; j < cols; ++j) s += std::exp(v[r * cols + j] - m);
    for (std::int64_t j = 0; j < cols; ++j)
      out[r * cols + j] = log ? v[r * cols + j] - m - std::log(s) : std::exp(v[r * cols + j] - m) / s;
  }
  return Tensor::from_vector(out, x.shape(), Device::cpu);
}

// Plain-loop vector-Jacobian product of softmax / log_softmax at x with seed g, in double:
// softmax: d y_i / d x_j = y_i (delta_ij - y_j); log_softmax: delta_ij - softmax_j.
Tensor reference_softmax_vjp(const Tensor& x, const Tensor& g, bool log) {
  const std::vector<double> p = reference_softmax(x, false).to_vector<double>();
  const std::vector<double> gv = g.to(DType::f64).to_vector<double>();
  const std::int64_t cols = x.dim(-1), rows = x.numel() / cols;
  std::vector<double> out(p.size(), 0.0);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t j = 0; j < cols; ++j)
      for (std::int64_t i = 0; i < cols; ++i) {
        const double pi = p[r * cols + i], pj = p[r * cols + j];
        const double jac = log ? (i == j) - pj : pi * ((i == j) - pj);
        out[r * cols + j] += gv[r * cols + i] * jac;
      }
  return Tensor::from_vector(out, x.shape(), Device::cpu);
}

// Rows with very different offsets, one far above exp's range: only a max-subtracted kernel
// returns finite values for it.
Tensor offset_rows(const Shape& shape, std::uint64_t seed, DType dtype = DType::f64) {
  Tensor x = randn_tensor(shape, seed, 2.0);
  std::vector<double> v = x.to_vector<double>();
  const std::int64_t cols = shape.dim(-1);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] += (i / cols) % 2 ? 1000.0 : -50.0;
  return Tensor::from_vector(v, shape, Device::cpu).to(dtype);
}

TEST(Softmax, ForwardMatchesReference) {
  const Tensor x = offset_rows({2, 3, 7}, 1);
  const Tensor y = softmax(Var(x)).value();
  EXPECT_EQ(y.shape(), x.shape());
  EXPECT_LT(max_abs_diff(y, reference_softmax(x, false)), 1e-14);
}

TEST(LogSoftmax, ForwardMatchesReference) {
  const Tensor x = offset_rows({2, 3, 7}, 2);
  const Tensor y = log_softmax(Var(x)).value();
  EXPECT_EQ(y.shape(), x.shape());
  EXPECT_LT(max_abs_diff(y, reference_softmax(x, true)), 1e-12);
}

TEST(Softmax, OneDimensionalInputIsOneRow) {
  const Tensor x = Tensor::from_vector<double>({1.0, 2.0, 3.0}, {3}, Device::cpu);
  const std::vector<double> y = softmax(Var(x)).value().to_vector<double>();
  const double s = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  for (int j = 0; j < 3; ++j) EXPECT_NEAR(y[j], std::exp(j + 1.0) / s, 1e-15);
}

TEST(Softmax, Gradcheck) {
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return softmax(in[0]); },
                        {randn_tensor({2, 3, 5}, 3, 2.0)}));
}

TEST(LogSoftmax, Gradcheck) {
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return log_softmax(in[0]); },
                        {randn_tensor({2, 3, 5}, 4, 2.0)}));
}

// 96 x 512 = 49152 elements takes the OpenMP path of the kernels.
TEST(Softmax, ParallelPathMatchesReference) {
  for (bool log : {false, true}) {
    const Tensor x = offset_rows({96, 512}, 5);
    const Tensor g = randn_tensor({96, 512}, 6);
    Var xv(x, true);
    Var y = log ? log_softmax(xv) : softmax(xv);
    EXPECT_LT(max_abs_diff(y.value(), reference_softmax(x, log)), 1e-12) << "log " << log;
    y.backward(g);
    EXPECT_LT(max_abs_diff(xv.grad(), reference_softmax_vjp(x, g, log)), 1e-12) << "log " << log;
  }
}

// The f32 kernels accumulate row sums in double; what remains is float rounding of inputs and
// outputs. Probabilities are <= 1, so 1e-6 bounds a few float ulps; log-probabilities here reach
// about -25 (ulp 2e-6), hence 2e-5; gradients are O(1) sums over 64 terms, hence 5e-6.
TEST(Softmax, Float32AgreesWithFloat64) {
  const Tensor x64 = randn_tensor({8, 64}, 7, 3.0);
  const Tensor x32 = x64.to(DType::f32);
  const Tensor g64 = randn_tensor({8, 64}, 8);
  for (bool log : {false, true}) {
    Var a(x64, true), b(x32, true);
    Var ya = log ? log_softmax(a) : softmax(a);
    Var yb = log ? log_softmax(b) : softmax(b);
    EXPECT_EQ(yb.dtype(), DType::f32);
    EXPECT_LT(max_abs_diff(ya.value(), yb.value()), log ? 2e-5 : 1e-6) << "log " << log;
    ya.backward(g64);
    yb.backward(g64.to(DType::f32));
    EXPECT_LT(max_abs_diff(a.grad(), b.grad()), 5e-6) << "log " << log;
  }
}

TEST(Softmax, HugeFloat32LogitsStayFinite) {
  const Tensor x = Tensor::from_vector<float>({3e38f, 1e38f, -3e38f, 0.0f}, {1, 4}, Device::cpu);
  const std::vector<float> y = softmax(Var(x)).value().to_vector<float>();
  EXPECT_FLOAT_EQ(y[0], 1.0f);
  for (int j = 1; j < 4; ++j) EXPECT_EQ(y[j], 0.0f);
  const std::vector<float> ly = log_softmax(Var(x)).value().to_vector<float>();
  EXPECT_EQ(ly[0], 0.0f);
  EXPECT_TRUE(std::isfinite(ly[1]));
}

TEST(Softmax, RejectsIntegerInput) {
  EXPECT_THROW(softmax(Var(Tensor::zeros({2, 3}, DType::i32, Device::cpu))), Error);
}

TEST(CausalMask, MasksKeysAfterTheAlignedDiagonal) {
  // Two batches of [t = 3, s = 5]: query i sees keys j <= i + 2.
  Tensor scores = Tensor::zeros({2, 3, 5}, DType::f64, Device::cpu);
  backend_for(Device::cpu).causal_mask(scores, 3, 5);
  const std::vector<double> v = scores.to_vector<double>();
  for (int b = 0; b < 2; ++b)
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 5; ++j) {
        const double e = v[(b * 3 + i) * 5 + j];
        if (j > i + 2)
          EXPECT_TRUE(std::isinf(e) && e < 0) << b << " " << i << " " << j;
        else
          EXPECT_EQ(e, 0.0) << b << " " << i << " " << j;
      }
  EXPECT_THROW(backend_for(Device::cpu).causal_mask(scores, 4, 5), Error);
}

}  // namespace
}  // namespace upcycle
