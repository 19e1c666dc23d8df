// The float64 LAPACKE/CBLAS wrappers of the upcycling initialisers (include/upcycle/init/linalg.hpp):
// SVD, Cholesky, triangular solves, matmul and QR against their defining identities, and their
// errors for bad shapes, non-finite input and non-positive-definite matrices.
//
// Bounds. Every routine here is backward stable: the computed factors are the exact factors of a
// matrix within c n eps ||A|| of A (eps = 2.2e-16, c a small constant, n <= 40 here), i.e. ~1e-14
// relative. Residuals and orthonormality are asserted at 1e-12 (relative to the matrix's scale),
// 100x above that and still 10^4 below any real error (a wrong sign, transpose or missing
// column gives O(1)). Measured: <= 3e-15.
#include <gtest/gtest.h>

#include "error_of.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "gradcheck.hpp"
#include "upcycle/init/linalg.hpp"

namespace upcycle::init {
namespace {
using upcycle::testing::error_of;

constexpr double kTol = 1e-12;

Matrix randn(std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
  return to_matrix(testing::randn_tensor({rows, cols}, seed));
}

double max_abs(const Matrix& a) {
  double m = 0.0;
  for (double v : a.data) m = std::max(m, std::abs(v));
  return m;
}

Matrix minus(const Matrix& a, const Matrix& b) {
  EXPECT_EQ(a.rows, b.rows);
  EXPECT_EQ(a.cols, b.cols);
  Matrix c = a;
  for (std::size_t i = 0; i < c.data.size(); ++i) c.data[i] -= b.data[i];
  return c;
}

// max |Q^T Q - I| for the columns of q.
double orthonormality_error(const Matrix& q) {
  return max_abs(minus(matmul(q, q, true, false), Matrix::identity(q.cols)));
}

Matrix reconstruct(const Svd& s) {
  Matrix us = s.u;
  for (std::int64_t i = 0; i < us.rows; ++i)
    for (std::int64_t j = 0; j < us.cols; ++j) us(i, j) *= s.sigma[static_cast<std::size_t>(j)];
  return matmul(us, s.vt);
}

// Naive triple loop (the reference for cblas_dgemm).
Matrix naive_matmul(const Matrix& a, const Matrix& b) {
  Matrix c(a.rows, b.cols);
  for (std::int64_t i = 0; i < a.rows; ++i)
    for (std::int64_t j = 0; j < b.cols; ++j) {
      double s = 0.0;
      for (std::int64_t l = 0; l < a.cols; ++l) s += a(i, l) * b(l, j);
      c(i, j) = s;
    }
  return c;
}


// --- SVD ---

class SvdShapes : public ::testing::TestWithParam<std::pair<int, int>> {};

TEST_P(SvdShapes, ReconstructsWithOrthonormalFactors) {
  const auto [m, n] = GetParam();
  const Matrix a = randn(m, n, 11 + m * 100 + n);
  const Svd s = svd(a);
  const std::int64_t k = std::min(m, n);
  ASSERT_EQ(s.u.rows, m);
  ASSERT_EQ(s.u.cols, k);
  ASSERT_EQ(s.vt.rows, k);
  ASSERT_EQ(s.vt.cols, n);
  ASSERT_EQ(static_cast<std::int64_t>(s.sigma.size()), k);
  for (std::int64_t l = 0; l < k; ++l) {
    EXPECT_GE(s.sigma[l], 0.0);
    if (l > 0) {
      EXPECT_LE(s.sigma[l], s.sigma[l - 1]) << "sigma not descending at " << l;
    }
  }
  const double rel = frobenius_norm(minus(reconstruct(s), a)) / frobenius_norm(a);
  const double ortho_u = orthonormality_error(s.u);
  const double ortho_v = orthonormality_error(transpose(s.vt));
  std::printf("svd [%d, %d]: ||A - U S Vt|| / ||A|| = %.2e, |U^T U - I| = %.2e, |V^T V - I| = %.2e\n", m, n, rel,
              ortho_u, ortho_v);
  EXPECT_LE(rel, kTol);
  EXPECT_LE(ortho_u, kTol);
  EXPECT_LE(ortho_v, kTol);
}

INSTANTIATE_TEST_SUITE_P(TallWideSquare, SvdShapes,
                         ::testing::Values(std::pair{7, 5}, std::pair{5, 7}, std::pair{6, 6}, std::pair{40, 13},
                                           std::pair{1, 9}, std::pair{9, 1}));

TEST(InitLinalg, SvdOfAKnownMatrix) {
  // A = diag(1, 3, 2) with rows permuted and one column sign flipped: singular values {3, 2, 1}.
  Matrix a(3, 3);
  a(0, 1) = 3.0;
  a(1, 2) = -2.0;
  a(2, 0) = 1.0;
  const Svd s = svd(a);
  EXPECT_NEAR(s.sigma[0], 3.0, kTol);
  EXPECT_NEAR(s.sigma[1], 2.0, kTol);
  EXPECT_NEAR(s.sigma[2], 1.0, kTol);
  // The top right singular vector is +-e_1 (column 1 holds the 3), the top left one +-e_0.
  EXPECT_NEAR(std::abs(s.vt(0, 1)), 1.0, kTol);
  EXPECT_NEAR(std::abs(s.u(0, 0)), 1.0, kTol);
}

TEST(InitLinalg, SvdOfARankDeficientMatrix) {
  // Rank 2 by construction: the other singular values are rounding noise, ~eps sigma_max.
  const Matrix a = matmul(randn(8, 2, 5), randn(2, 6, 6));
  const Svd s = svd(a);
  EXPECT_GT(s.sigma[1], 1e-3 * s.sigma[0]);
  for (std::size_t l = 2; l < s.sigma.size(); ++l) EXPECT_LE(s.sigma[l], kTol * s.sigma[0]) << "sigma " << l;
  EXPECT_LE(frobenius_norm(minus(reconstruct(s), a)) / frobenius_norm(a), kTol);
  EXPECT_LE(orthonormality_error(s.u), kTol);  // the null-space columns are orthonormal too
}

TEST(InitLinalg, SvdRejectsEmptyAndNonFiniteInput) {
  EXPECT_THROW(svd(Matrix(0, 3)), Error);
  Matrix a = randn(3, 3, 1);
  a(1, 2) = std::nan("");
  const std::string msg = error_of([&] { svd(a); });
  EXPECT_NE(msg.find("not finite"), std::string::npos) << msg;
  a(1, 2) = INFINITY;
  EXPECT_THROW(svd(a), Error);
}

// --- Cholesky ---

Matrix spd(std::int64_t n, std::uint64_t seed) {
  const Matrix b = randn(n + 3, n, seed);
  Matrix a = matmul(b, b, true, false);  // B^T B: positive definite (B has full column rank)
  for (std::int64_t i = 0; i < n; ++i) a(i, i) += 0.1;
  return a;
}

TEST(InitLinalg, CholeskyOfAKnownMatrix) {
  // [[4, 2], [2, 3]] = L L^T with L = [[2, 0], [1, sqrt 2]].
  Matrix a(2, 2);
  a(0, 0) = 4;
  a(0, 1) = a(1, 0) = 2;
  a(1, 1) = 3;
  const Matrix l = cholesky_lower(a);
  EXPECT_NEAR(l(0, 0), 2.0, kTol);
  EXPECT_NEAR(l(1, 0), 1.0, kTol);
  EXPECT_NEAR(l(1, 1), std::sqrt(2.0), kTol);
  EXPECT_EQ(l(0, 1), 0.0);
}

TEST(InitLinalg, CholeskyFactorsSpdMatrices) {
  for (std::int64_t n : {1, 5, 24}) {
    const Matrix a = spd(n, 40 + n);
    const Matrix l = cholesky_lower(a);
    for (std::int64_t i = 0; i < n; ++i) {
      EXPECT_GT(l(i, i), 0.0);
      for (std::int64_t j = i + 1; j < n; ++j) EXPECT_EQ(l(i, j), 0.0) << "upper triangle not cleared";
    }
    const double rel = max_abs(minus(matmul(l, l, false, true), a)) / max_abs(a);
    std::printf("cholesky n = %lld: max|L L^T - A| / max|A| = %.2e\n", static_cast<long long>(n), rel);
    EXPECT_LE(rel, kTol);
    // try_ variant: the same factor.
    const std::optional<Matrix> t = try_cholesky_lower(a);
    ASSERT_TRUE(t.has_value());
    EXPECT_EQ(t->data, l.data);
  }
}

TEST(InitLinalg, CholeskyReadsOnlyTheLowerTriangle) {
  const Matrix a = spd(6, 3);
  Matrix garbage = a;
  for (std::int64_t i = 0; i < 6; ++i)
    for (std::int64_t j = i + 1; j < 6; ++j) garbage(i, j) = -1e3;
  EXPECT_EQ(cholesky_lower(garbage).data, cholesky_lower(a).data);
}

TEST(InitLinalg, CholeskyOfAnIndefiniteMatrixNamesDpotrfAndTheInfo) {
  // [[1, 2], [2, 1]] has eigenvalues 3 and -1: the leading minor of order 2 fails.
  Matrix a(2, 2, 2.0);
  a(0, 0) = a(1, 1) = 1.0;
  EXPECT_FALSE(try_cholesky_lower(a).has_value());
  const std::string msg = error_of([&] { cholesky_lower(a); });
  EXPECT_NE(msg.find("LAPACKE_dpotrf"), std::string::npos) << msg;
  EXPECT_NE(msg.find("info = 2"), std::string::npos) << msg;
  EXPECT_FALSE(try_cholesky_lower(Matrix(3, 3)).has_value());  // all-zero: singular
}

TEST(InitLinalg, CholeskyRejectsBadShapesAndNonFiniteInput) {
  EXPECT_THROW(cholesky_lower(Matrix(2, 3)), Error);
  EXPECT_THROW(try_cholesky_lower(Matrix(2, 3)), Error);  // a bad shape is a bug, not "not PD"
  EXPECT_THROW(cholesky_lower(Matrix(0, 0)), Error);
  Matrix a = spd(3, 1);
  a(2, 1) = std::nan("");
  EXPECT_THROW(try_cholesky_lower(a), Error);
}

// --- triangular solve ---

// A well-conditioned triangular matrix: the Cholesky factor of an SPD matrix (or its transpose).
TEST(InitLinalg, TriangularSolvesAllSidesAndTransposes) {
  const std::int64_t n = 7;
  const Matrix l = cholesky_lower(spd(n, 9));
  const Matrix u = transpose(l);
  const Matrix b_left = randn(n, 4, 10), b_right = randn(5, n, 12);
  for (Triangle tri : {Triangle::lower, Triangle::upper}) {
    const Matrix& t = tri == Triangle::lower ? l : u;
    for (bool tr : {false, true}) {
      const Matrix op_t = tr ? transpose(t) : t;
      const Matrix xl = solve_triangular(t, tri, b_left, Side::left, tr);
      const Matrix xr = solve_triangular(t, tri, b_right, Side::right, tr);
      const double el = max_abs(minus(naive_matmul(op_t, xl), b_left)) / max_abs(b_left);
      const double er = max_abs(minus(naive_matmul(xr, op_t), b_right)) / max_abs(b_right);
      EXPECT_LE(el, kTol) << "left, " << (tri == Triangle::lower ? "lower" : "upper") << ", transpose " << tr;
      EXPECT_LE(er, kTol) << "right, " << (tri == Triangle::lower ? "lower" : "upper") << ", transpose " << tr;
    }
  }
}

TEST(InitLinalg, TriangularSolveRejectsSingularAndMismatchedInput) {
  Matrix l = cholesky_lower(spd(4, 2));
  EXPECT_THROW(solve_triangular(l, Triangle::lower, randn(3, 2, 1), Side::left), Error);   // 3 != 4 rows
  EXPECT_THROW(solve_triangular(l, Triangle::lower, randn(4, 2, 1), Side::right), Error);  // 2 != 4 cols
  EXPECT_THROW(solve_triangular(Matrix(4, 3), Triangle::lower, randn(4, 2, 1), Side::left), Error);
  l(2, 2) = 0.0;
  const std::string msg = error_of([&] { solve_triangular(l, Triangle::lower, randn(4, 2, 1), Side::left); });
  EXPECT_NE(msg.find("singular"), std::string::npos) << msg;
}

// --- matmul, QR, conversions ---

TEST(InitLinalg, MatmulMatchesNaiveLoopsForEveryTranspose) {
  const Matrix a = randn(6, 4, 1), b = randn(4, 5, 2);
  const Matrix ref = naive_matmul(a, b);
  const Matrix at = transpose(a), bt = transpose(b);
  EXPECT_LE(max_abs(minus(matmul(a, b), ref)), kTol * max_abs(ref));
  EXPECT_LE(max_abs(minus(matmul(at, b, true, false), ref)), kTol * max_abs(ref));
  EXPECT_LE(max_abs(minus(matmul(a, bt, false, true), ref)), kTol * max_abs(ref));
  EXPECT_LE(max_abs(minus(matmul(at, bt, true, true), ref)), kTol * max_abs(ref));
  EXPECT_THROW(matmul(a, a), Error);  // [6, 4] x [6, 4]
  const std::string msg = error_of([&] { matmul(a, b, true, false); });
  EXPECT_NE(msg.find("inner dimensions"), std::string::npos) << msg;
}

TEST(InitLinalg, OrthonormalColumnsSpanTheInput) {
  const Matrix a = randn(9, 4, 3);
  const Matrix q = orthonormal_columns(a);
  ASSERT_EQ(q.rows, 9);
  ASSERT_EQ(q.cols, 4);
  EXPECT_LE(orthonormality_error(q), kTol);
  // Q Q^T A = A: every column of A lies in the span of Q.
  const Matrix proj = matmul(q, matmul(q, a, true, false));
  EXPECT_LE(max_abs(minus(proj, a)), kTol * max_abs(a));
  EXPECT_THROW(orthonormal_columns(randn(3, 4, 1)), Error);  // wide: no thin QR
}

TEST(InitLinalg, TensorConversionsRoundTrip) {
  const Tensor t = testing::randn_tensor({3, 4}, 5, 1.0, DType::f32);
  const Matrix m = to_matrix(t);
  ASSERT_EQ(m.rows, 3);
  ASSERT_EQ(m.cols, 4);
  const Tensor back = to_tensor(m, DType::f32);
  EXPECT_EQ(back.dtype(), DType::f32);
  EXPECT_EQ(back.to_vector<float>(), t.to_vector<float>());  // f32 -> f64 -> f32 is exact
  EXPECT_EQ(to_tensor(m, DType::f64).to_vector<double>(), m.data);
  EXPECT_THROW(to_matrix(Tensor::zeros({2, 3, 4}, DType::f32, Device::cpu)), Error);
  EXPECT_THROW(to_matrix(Tensor::zeros({2, 3}, DType::i64, Device::cpu)), Error);
  EXPECT_THROW(to_matrix(Tensor()), Error);
}

}  // namespace
}  // namespace upcycle::init
