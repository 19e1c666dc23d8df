#pragma once
// Dense linear algebra of the upcycling initialisers, in float64 on the host: thin, checked
// wrappers over LAPACKE (dgesdd, dpotrf, dgeqrf/dorgqr) and CBLAS (dgemm, dtrsm), all row-major.
// Upcycling runs once per expert on matrices of d_ff x d, so clarity and accuracy matter more
// than speed here: everything is double, and every routine copies its inputs (LAPACK overwrites
// them). Every shape mismatch and every LAPACK info != 0 throws upcycle::Error naming the routine
// and the info.
#include <cstdint>
#include <optional>
#include <vector>

#include "upcycle/core/tensor.hpp"

namespace upcycle::init {

// A dense row-major f64 matrix on the host: element (i, j) is data[i * cols + j].
struct Matrix {
  std::int64_t rows = 0, cols = 0;
  std::vector<double> data;

  Matrix() = default;
  Matrix(std::int64_t rows, std::int64_t cols, double value = 0.0);
  static Matrix identity(std::int64_t n);

  double& operator()(std::int64_t i, std::int64_t j) { return data[static_cast<std::size_t>(i * cols + j)]; }
  double operator()(std::int64_t i, std::int64_t j) const { return data[static_cast<std::size_t>(i * cols + j)]; }
  double* ptr() { return data.data(); }
  const double* ptr() const { return data.data(); }
};

// A 2-D f32/f64 tensor (any device) as a host f64 matrix, and back (a host tensor of `dtype`).
Matrix to_matrix(const Tensor& t);
Tensor to_tensor(const Matrix& m, DType dtype = DType::f32);

Matrix transpose(const Matrix& a);
// Columns [begin, end) of `a`, copied.
Matrix column_block(const Matrix& a, std::int64_t begin, std::int64_t end);
// Frobenius norm.
double frobenius_norm(const Matrix& a);

// op(a) op(b) with op = transpose or not (cblas_dgemm).
Matrix matmul(const Matrix& a, const Matrix& b, bool trans_a = false, bool trans_b = false);

// Thin SVD a = U diag(sigma) Vt (LAPACKE_dgesdd, jobz = 'S'): for a [m, n] and k = min(m, n),
// U [m, k] and Vt [k, n] have orthonormal columns / rows, sigma [k] is descending and >= 0.
// Singular vectors are unique only up to sign (and within repeated singular values).
struct Svd {
  Matrix u;
  std::vector<double> sigma;
  Matrix vt;
};
Svd svd(const Matrix& a);

// Lower Cholesky factor L (L L^T = a) of a symmetric positive definite matrix (LAPACKE_dpotrf,
// uplo = 'L': only the lower triangle of `a` is read; the upper triangle of L is zero). Throws
// when a is not positive definite (dpotrf's info > 0: the order of the failing leading minor).
Matrix cholesky_lower(const Matrix& a);
// The same, but std::nullopt where dpotrf reports info > 0 (not positive definite) so that the
// caller can retry with a jitter; still throws for info < 0 (a bad argument: a bug).
std::optional<Matrix> try_cholesky_lower(const Matrix& a);

// Triangular solve (cblas_dtrsm, non-unit diagonal): returns X with op(T) X = B (Side::left) or
// X op(T) = B (Side::right), op(T) = T or T^T. Only the `triangle` of T is read. Throws on a zero
// diagonal entry (singular T) instead of returning inf/NaN.
enum class Side { left, right };
enum class Triangle { lower, upper };
Matrix solve_triangular(const Matrix& t, Triangle triangle, const Matrix& b, Side side, bool transpose_t = false);

// The Q of a thin QR of a [m, n], m >= n (LAPACKE_dgeqrf + LAPACKE_dorgqr): [m, n] with
// orthonormal columns spanning the columns of a (when a has full column rank).
Matrix orthonormal_columns(const Matrix& a);

}  // namespace upcycle::init
