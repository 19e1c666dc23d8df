// Dense float64 linear algebra on a tensor's device (include/upcycle/init/device_linalg.hpp): the
// argument checks, the host side (LAPACKE / CBLAS in column-major terms, column_major.hpp) and
// the dispatch to the cuda side.
#include "upcycle/init/device_linalg.hpp"

#include <cblas.h>
#include <lapacke.h>

#include <string>

#include "column_major.hpp"
#if UPCYCLE_WITH_CUDA
#include "device_linalg_cuda.hpp"
#endif

namespace upcycle::init {

namespace {

void check_matrix(const Tensor& t, const char* routine, const char* what) {
  UPCYCLE_CHECK(t.defined() && t.ndim() == 2 && t.dtype() == DType::f64, routine, ": ", what,
                " must be a 2-D f64 matrix, got ", t.defined() ? describe(t) : std::string("undefined"));
}

void check_square(const Tensor& t, const char* routine, const char* what) {
  check_matrix(t, routine, what);
  UPCYCLE_CHECK(t.dim(0) == t.dim(1), routine, ": ", what, " must be square, got ", describe(t));
}

void check_same_device(const Tensor& a, const Tensor& b, const char* routine) {
  UPCYCLE_CHECK(a.device() == b.device(), routine, ": operands on different devices: ", describe(a), " and ",
                describe(b));
}

#if UPCYCLE_WITH_CUDA
double* device_ptr(const Tensor& t) { return static_cast<double*>(t.raw()); }
#endif

// After the cuda dispatch: what is left must be in host memory.
void require_host(const Tensor& t, const char* routine) {
  UPCYCLE_CHECK(t.device() == Device::cpu, routine, ": ", describe(t), " is on a device this build has no library for");
}

}  // namespace

int cholesky_lower_in_place(Tensor& a) {
  constexpr const char* kRoutine = "cholesky_lower_in_place (potrf)";
  check_square(a, kRoutine, "a");
  const column_major::Square s = column_major::square(a.dim(0), kRoutine);
  if (s.n == 0) return 0;
#if UPCYCLE_WITH_CUDA
  if (a.device() == Device::cuda) return cuda_linalg::potrf_upper(device_ptr(a), s);
#endif
  require_host(a, kRoutine);
  const lapack_int info = LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'U', s.n, a.data<double>(), s.lda);
  UPCYCLE_CHECK(info >= 0, "LAPACKE_dpotrf failed with info = ", info, ": argument ", -info, " had an illegal value");
  return info;
}

void multiply_lower_right(const Tensor& b, const Tensor& l, Tensor& out) {
  constexpr const char* kRoutine = "multiply_lower_right (trmm)";
  check_matrix(b, kRoutine, "b");
  check_square(l, kRoutine, "L");
  check_matrix(out, kRoutine, "out");
  check_same_device(b, l, kRoutine);
  check_same_device(b, out, kRoutine);
  UPCYCLE_CHECK(l.dim(0) == b.dim(1) && out.shape() == b.shape(), kRoutine, ": b ", describe(b), ", L ", describe(l),
                ", out ", describe(out), " do not fit out = b L");
  const column_major::RightLowerTriangular t = column_major::right_lower_triangular(b.dim(0), b.dim(1), kRoutine);
  if (t.m == 0 || t.n == 0) return;
#if UPCYCLE_WITH_CUDA
  if (b.device() == Device::cuda) return cuda_linalg::trmm_left_upper(device_ptr(l), device_ptr(b), device_ptr(out), t);
#endif
  require_host(b, kRoutine);
  out.copy_from(b);  // CBLAS multiplies in place
  cblas_dtrmm(CblasColMajor, CblasLeft, CblasUpper, CblasNoTrans, CblasNonUnit, t.m, t.n, 1.0, l.data<double>(), t.lda,
              out.data<double>(), t.ldb);
}

void solve_lower_right_in_place(Tensor& b, const Tensor& l) {
  constexpr const char* kRoutine = "solve_lower_right_in_place (trsm)";
  check_matrix(b, kRoutine, "b");
  check_square(l, kRoutine, "L");
  check_same_device(b, l, kRoutine);
  UPCYCLE_CHECK(l.dim(0) == b.dim(1), kRoutine, ": b ", describe(b), " and L ", describe(l), " do not fit X L = b");
  const column_major::RightLowerTriangular t = column_major::right_lower_triangular(b.dim(0), b.dim(1), kRoutine);
  if (t.m == 0 || t.n == 0) return;
#if UPCYCLE_WITH_CUDA
  if (b.device() == Device::cuda) return cuda_linalg::trsm_left_upper(device_ptr(l), device_ptr(b), t);
#endif
  require_host(b, kRoutine);
  cblas_dtrsm(CblasColMajor, CblasLeft, CblasUpper, CblasNoTrans, CblasNonUnit, t.m, t.n, 1.0, l.data<double>(), t.lda,
              b.data<double>(), t.ldb);
}

void symmetric_eigen_in_place(Tensor& a, Tensor& eigenvalues) {
  constexpr const char* kRoutine = "symmetric_eigen_in_place (syevd)";
  check_square(a, kRoutine, "a");
  check_same_device(a, eigenvalues, kRoutine);
  UPCYCLE_CHECK(eigenvalues.defined() && eigenvalues.dtype() == DType::f64 && eigenvalues.numel() == a.dim(0),
                kRoutine, ": eigenvalues must be f64 [", a.dim(0), "], got ", describe(eigenvalues));
  const column_major::Square s = column_major::square(a.dim(0), kRoutine);
  if (s.n == 0) return;
#if UPCYCLE_WITH_CUDA
  if (a.device() == Device::cuda) return cuda_linalg::syevd_upper(device_ptr(a), device_ptr(eigenvalues), s);
#endif
  require_host(a, kRoutine);
  const lapack_int info = LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'U', s.n, a.data<double>(), s.lda,
                                         eigenvalues.data<double>());
  UPCYCLE_CHECK(info == 0, "LAPACKE_dsyevd failed with info = ", info, ": ",
                info < 0 ? "an argument had an illegal value"
                         : "the divide-and-conquer eigensolver did not converge");
}

}  // namespace upcycle::init
