// Checked LAPACKE / CBLAS wrappers in double (include/upcycle/init/linalg.hpp). LAPACK reports
// failures only through `info`; each one is turned into an Error that names the routine, the info
// and what it means, so that a failed upcycling step says which factorisation broke on which shape.
#include "upcycle/init/linalg.hpp"

#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <string>

namespace upcycle::init {

namespace {

// LAPACKE's own negative codes (beyond -n, which names the bad argument).
std::string info_meaning(lapack_int info) {
  if (info == LAPACK_WORK_MEMORY_ERROR) return "could not allocate its workspace";
  if (info == LAPACK_TRANSPOSE_MEMORY_ERROR) return "could not allocate the row-major transpose buffer";
  if (info < 0) return "argument " + std::to_string(-info) + " had an illegal value";
  return "";
}

[[noreturn]] void throw_info(const char* routine, lapack_int info, const std::string& what) {
  UPCYCLE_THROW(routine, " failed with info = ", info, ": ", info < 0 ? info_meaning(info) : what);
}

lapack_int as_int(std::int64_t v, const char* what) {
  UPCYCLE_CHECK(v >= 0 && v <= INT_MAX, what, " = ", v, " does not fit the 32-bit LAPACK/BLAS integer");
  return static_cast<lapack_int>(v);
}

// LAPACK on NaN/inf input either loops, returns garbage or fails obscurely: refuse it up front.
void check_finite(const Matrix& a, const char* routine) {
  for (std::size_t i = 0; i < a.data.size(); ++i)
    UPCYCLE_CHECK(std::isfinite(a.data[i]), routine, ": input element (", static_cast<std::int64_t>(i) / a.cols, ", ",
                  static_cast<std::int64_t>(i) % a.cols, ") is not finite (", a.data[i], ")");
}

void check_nonempty(const Matrix& a, const char* routine) {
  UPCYCLE_CHECK(a.rows > 0 && a.cols > 0, routine, ": empty matrix [", a.rows, ", ", a.cols, "]");
  UPCYCLE_CHECK(a.data.size() == static_cast<std::size_t>(a.rows * a.cols), routine, ": matrix [", a.rows, ", ",
                a.cols, "] holds ", a.data.size(), " values");
}

}  // namespace

Matrix::Matrix(std::int64_t r, std::int64_t c, double value) : rows(r), cols(c) {
  UPCYCLE_CHECK(r >= 0 && c >= 0, "Matrix: negative shape [", r, ", ", c, "]");
  data.assign(static_cast<std::size_t>(r * c), value);
}

Matrix Matrix::identity(std::int64_t n) {
  Matrix m(n, n);
  for (std::int64_t i = 0; i < n; ++i) m(i, i) = 1.0;
  return m;
}

Matrix to_matrix(const Tensor& t) {
  UPCYCLE_CHECK(t.defined(), "to_matrix: undefined tensor");
  UPCYCLE_CHECK(t.ndim() == 2, "to_matrix: expected a 2-D tensor, got ", describe(t));
  UPCYCLE_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::f64, "to_matrix: expected f32 or f64, got ",
                describe(t));
  Matrix m;
  m.rows = t.dim(0);
  m.cols = t.dim(1);
  m.data = t.to(Device::cpu).to(DType::f64).to_vector<double>();
  return m;
}

Tensor to_tensor(const Matrix& m, DType dtype) {
  UPCYCLE_CHECK(dtype == DType::f32 || dtype == DType::f64, "to_tensor: dtype must be f32 or f64, got ",
                dtype_name(dtype));
  const Tensor t = Tensor::from_vector(m.data, {m.rows, m.cols}, Device::cpu);
  return t.to(dtype);
}

Matrix transpose(const Matrix& a) {
  Matrix t(a.cols, a.rows);
  for (std::int64_t i = 0; i < a.rows; ++i)
    for (std::int64_t j = 0; j < a.cols; ++j) t(j, i) = a(i, j);
  return t;
}

Matrix column_block(const Matrix& a, std::int64_t begin, std::int64_t end) {
  UPCYCLE_CHECK(0 <= begin && begin <= end && end <= a.cols, "column_block: columns [", begin, ", ", end,
                ") of a matrix with ", a.cols, " columns");
  Matrix b(a.rows, end - begin);
  for (std::int64_t i = 0; i < a.rows; ++i)
    std::copy(a.data.begin() + i * a.cols + begin, a.data.begin() + i * a.cols + end, b.data.begin() + i * b.cols);
  return b;
}

double frobenius_norm(const Matrix& a) {
  double s = 0.0;
  for (double v : a.data) s += v * v;
  return std::sqrt(s);
}

Matrix matmul(const Matrix& a, const Matrix& b, bool trans_a, bool trans_b) {
  const std::int64_t m = trans_a ? a.cols : a.rows, k = trans_a ? a.rows : a.cols;
  const std::int64_t kb = trans_b ? b.cols : b.rows, n = trans_b ? b.rows : b.cols;
  UPCYCLE_CHECK(k == kb, "matmul: inner dimensions differ: op(a) is [", m, ", ", k, "], op(b) is [", kb, ", ", n,
                "]");
  Matrix c(m, n);
  if (m == 0 || n == 0) return c;
  if (k == 0) return c;  // an empty sum: zeros (dgemm would reject lda = 0)
  cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              as_int(m, "dgemm m"), as_int(n, "dgemm n"), as_int(k, "dgemm k"), 1.0, a.ptr(),
              as_int(a.cols, "dgemm lda"), b.ptr(), as_int(b.cols, "dgemm ldb"), 0.0, c.ptr(),
              as_int(n, "dgemm ldc"));
  return c;
}

Svd svd(const Matrix& a) {
  check_nonempty(a, "svd (dgesdd)");
  check_finite(a, "svd (dgesdd)");
  const std::int64_t m = a.rows, n = a.cols, k = std::min(m, n);
  Matrix work = a;  // dgesdd destroys its input
  Svd r;
  r.u = Matrix(m, k);
  r.vt = Matrix(k, n);
  r.sigma.assign(static_cast<std::size_t>(k), 0.0);
  const lapack_int info =
      LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'S', as_int(m, "dgesdd m"), as_int(n, "dgesdd n"), work.ptr(),
                     as_int(n, "dgesdd lda"), r.sigma.data(), r.u.ptr(), as_int(k, "dgesdd ldu"), r.vt.ptr(),
                     as_int(n, "dgesdd ldvt"));
  if (info != 0)
    throw_info("LAPACKE_dgesdd", info, "the divide-and-conquer bidiagonal SVD (dbdsdc) did not converge");
  return r;
}

namespace {

// dpotrf on a copy of `a`; returns dpotrf's info (> 0: not positive definite). On success the
// strict upper triangle, which dpotrf leaves as it found it, is cleared so that L is triangular.
lapack_int potrf_lower(const Matrix& a, Matrix& l) {
  check_nonempty(a, "cholesky (dpotrf)");
  UPCYCLE_CHECK(a.rows == a.cols, "cholesky (dpotrf): expected a square matrix, got [", a.rows, ", ", a.cols, "]");
  check_finite(a, "cholesky (dpotrf)");
  const std::int64_t n = a.rows;
  l = a;
  const lapack_int info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', as_int(n, "dpotrf n"), l.ptr(), as_int(n, "dpotrf lda"));
  if (info < 0) throw_info("LAPACKE_dpotrf", info, "");
  if (info == 0)
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t j = i + 1; j < n; ++j) l(i, j) = 0.0;
  return info;
}

}  // namespace

std::optional<Matrix> try_cholesky_lower(const Matrix& a) {
  Matrix l;
  if (potrf_lower(a, l) != 0) return std::nullopt;
  return l;
}

Matrix cholesky_lower(const Matrix& a) {
  Matrix l;
  const lapack_int info = potrf_lower(a, l);
  if (info != 0)
    throw_info("LAPACKE_dpotrf", info,
               "the leading minor of order " + std::to_string(info) + " is not positive definite");
  return l;
}

Matrix solve_triangular(const Matrix& t, Triangle triangle, const Matrix& b, Side side, bool transpose_t) {
  check_nonempty(t, "solve_triangular (dtrsm)");
  UPCYCLE_CHECK(t.rows == t.cols, "solve_triangular (dtrsm): T must be square, got [", t.rows, ", ", t.cols, "]");
  const std::int64_t need = side == Side::left ? b.rows : b.cols;
  UPCYCLE_CHECK(need == t.rows, "solve_triangular (dtrsm): T is [", t.rows, ", ", t.cols, "] but B is [", b.rows,
                ", ", b.cols, "] (side ", side == Side::left ? "left" : "right", ")");
  // dtrsm divides by the diagonal without a check: a zero there would give inf/NaN silently.
  for (std::int64_t i = 0; i < t.rows; ++i)
    UPCYCLE_CHECK(t(i, i) != 0.0 && std::isfinite(t(i, i)), "solve_triangular (dtrsm): T is singular (diagonal entry ",
                  i, " is ", t(i, i), ")");
  Matrix x = b;
  if (b.rows == 0 || b.cols == 0) return x;
  cblas_dtrsm(CblasRowMajor, side == Side::left ? CblasLeft : CblasRight,
              triangle == Triangle::lower ? CblasLower : CblasUpper, transpose_t ? CblasTrans : CblasNoTrans,
              CblasNonUnit, as_int(b.rows, "dtrsm m"), as_int(b.cols, "dtrsm n"), 1.0, t.ptr(),
              as_int(t.cols, "dtrsm lda"), x.ptr(), as_int(b.cols, "dtrsm ldb"));
  return x;
}

Matrix orthonormal_columns(const Matrix& a) {
  check_nonempty(a, "orthonormal_columns (dgeqrf)");
  UPCYCLE_CHECK(a.rows >= a.cols, "orthonormal_columns (dgeqrf): needs rows >= cols, got [", a.rows, ", ", a.cols,
                "]");
  check_finite(a, "orthonormal_columns (dgeqrf)");
  const lapack_int m = as_int(a.rows, "dgeqrf m"), n = as_int(a.cols, "dgeqrf n");
  Matrix q = a;
  std::vector<double> tau(static_cast<std::size_t>(n));
  lapack_int info = LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, m, n, q.ptr(), n, tau.data());
  if (info != 0) throw_info("LAPACKE_dgeqrf", info, "unexpected positive info");
  info = LAPACKE_dorgqr(LAPACK_ROW_MAJOR, m, n, n, q.ptr(), n, tau.data());
  if (info != 0) throw_info("LAPACKE_dorgqr", info, "unexpected positive info");
  return q;
}

}  // namespace upcycle::init
