// matmul and linear: forward against naive loops, backward against finite differences.
#include <gtest/gtest.h>

#include "gradcheck.hpp"
#include "upcycle/ops/linalg.hpp"

using namespace upcycle;
using upcycle::testing::gradcheck;
using upcycle::testing::random_tensor;

namespace {
// Naive op(A) op(B) for one matrix pair, in double.
std::vector<double> naive(const double* a, bool ta, const double* b, bool tb, int m, int n, int k) {
  std::vector<double> c(static_cast<std::size_t>(m * n), 0.0);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      double s = 0;
      for (int l = 0; l < k; ++l) s += (ta ? a[l * m + i] : a[i * k + l]) * (tb ? b[j * k + l] : b[l * n + j]);
      c[static_cast<std::size_t>(i * n + j)] = s;
    }
  return c;
}
}  // namespace

class MatmulTransposes : public ::testing::TestWithParam<std::tuple<bool, bool, bool>> {};

TEST_P(MatmulTransposes, ForwardAndGradient) {
  const auto [ta, tb, shared_b] = GetParam();
  const int batch = 3, m = 4, n = 5, k = 6;
  Tensor a = random_tensor(ta ? Shape{batch, k, m} : Shape{batch, m, k}, 11);
  Tensor b = shared_b ? random_tensor(tb ? Shape{n, k} : Shape{k, n}, 12)
                      : random_tensor(tb ? Shape{batch, n, k} : Shape{batch, k, n}, 12);
  Var c = matmul(Var(a), Var(b), ta, tb);
  ASSERT_EQ(c.shape(), (Shape{batch, m, n}));
  for (int bi = 0; bi < batch; ++bi) {
    auto ref = naive(a.data<double>() + bi * m * k, ta, b.data<double>() + (shared_b ? 0 : bi * n * k), tb, m, n, k);
    for (int i = 0; i < m * n; ++i)
      EXPECT_NEAR(c.value().data<double>()[bi * m * n + i], ref[static_cast<std::size_t>(i)], 1e-13);
  }
  EXPECT_TRUE(gradcheck([&](const std::vector<Var>& in) { return matmul(in[0], in[1], ta, tb); }, {a, b}));
}

INSTANTIATE_TEST_SUITE_P(AllLayouts, MatmulTransposes,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool(), ::testing::Bool()));

TEST(Matmul, PlainMatricesAndShapeErrors) {
  Tensor a = random_tensor({3, 4}, 1), b = random_tensor({4, 2}, 2);
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return matmul(in[0], in[1]); }, {a, b}));
  EXPECT_THROW(matmul(Var(a), Var(random_tensor({3, 2}, 3))), Error);
  EXPECT_THROW(matmul(Var(random_tensor({2, 3, 4}, 1)), Var(random_tensor({3, 4, 2}, 3))), Error);
}

TEST(Linear, ForwardMatchesDefinition) {
  Tensor x = random_tensor({2, 3, 4}, 1), w = random_tensor({5, 4}, 2), b = random_tensor({5}, 3);
  Var y = linear(Var(x), Var(w), Var(b));
  ASSERT_EQ(y.shape(), (Shape{2, 3, 5}));
  for (int r = 0; r < 6; ++r)
    for (int o = 0; o < 5; ++o) {
      double s = b.data<double>()[o];
      for (int i = 0; i < 4; ++i) s += x.data<double>()[r * 4 + i] * w.data<double>()[o * 4 + i];
      EXPECT_NEAR(y.value().data<double>()[r * 5 + o], s, 1e-13);
    }
}

TEST(Linear, GradientWithAndWithoutBias) {
  Tensor x = random_tensor({2, 3, 4}, 1), w = random_tensor({5, 4}, 2), b = random_tensor({5}, 3);
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return linear(in[0], in[1], in[2]); }, {x, w, b}));
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return linear(in[0], in[1]); }, {x, w}));
}

TEST(Linear, FloatPathAgreesWithDouble) {
  // f32 against f64 on the same values: OpenBLAS sgemm over k = 64 terms of size ~1 keeps the
  // relative error near 64 * 6e-8; 1e-5 absolute on outputs of size ~8 is a safe float bound.
  Tensor x = random_tensor({16, 64}, 1), w = random_tensor({32, 64}, 2);
  Var y64 = linear(Var(x), Var(w));
  Var y32 = linear(Var(x.to(DType::f32)), Var(w.to(DType::f32)));
  EXPECT_LT(upcycle::testing::max_abs_diff(y64.value(), y32.value()), 1e-5);
}
