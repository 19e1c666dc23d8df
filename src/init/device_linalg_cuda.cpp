// The cuda side of device_linalg.hpp: cuSOLVER (potrf, syevd) and cuBLAS (trmm, trsm) in float64
// on the CUDA backend's compute stream, so they are ordered with the Backend kernels that make and
// read their operands. Workspaces and the info word come from the backend's caching allocator
// (Tensor::empty on cuda), sized by each routine's own query. The handles are this file's own
// (the backend's cuBLAS handle is private to it), bound to the compute stream once.
#include "device_linalg_cuda.hpp"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <algorithm>
#include <cstdint>

#include "upcycle/backend/backend.hpp"

namespace upcycle::init::cuda_linalg {

namespace {

const char* solver_status_name(cusolverStatus_t s) {
  switch (s) {
    case CUSOLVER_STATUS_SUCCESS: return "CUSOLVER_STATUS_SUCCESS";
    case CUSOLVER_STATUS_NOT_INITIALIZED: return "CUSOLVER_STATUS_NOT_INITIALIZED";
    case CUSOLVER_STATUS_ALLOC_FAILED: return "CUSOLVER_STATUS_ALLOC_FAILED";
    case CUSOLVER_STATUS_INVALID_VALUE: return "CUSOLVER_STATUS_INVALID_VALUE";
    case CUSOLVER_STATUS_ARCH_MISMATCH: return "CUSOLVER_STATUS_ARCH_MISMATCH";
    case CUSOLVER_STATUS_EXECUTION_FAILED: return "CUSOLVER_STATUS_EXECUTION_FAILED";
    case CUSOLVER_STATUS_INTERNAL_ERROR: return "CUSOLVER_STATUS_INTERNAL_ERROR";
    case CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED: return "CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED";
    case CUSOLVER_STATUS_NOT_SUPPORTED: return "CUSOLVER_STATUS_NOT_SUPPORTED";
    case CUSOLVER_STATUS_INVALID_WORKSPACE: return "CUSOLVER_STATUS_INVALID_WORKSPACE";
    default: return "cusolverStatus_t (other)";
  }
}

#define UPCYCLE_CUSOLVER_CHECK(expr)                                                                           \
  do {                                                                                                         \
    const cusolverStatus_t upcycle_solver_status_ = (expr);                                                    \
    if (upcycle_solver_status_ != CUSOLVER_STATUS_SUCCESS)                                                     \
      UPCYCLE_THROW(#expr, " failed: ", solver_status_name(upcycle_solver_status_), " (",                      \
                    static_cast<int>(upcycle_solver_status_), ")");                                            \
  } while (0)

#define UPCYCLE_LINALG_CUBLAS_CHECK(expr)                                                                      \
  do {                                                                                                         \
    const cublasStatus_t upcycle_blas_status_ = (expr);                                                        \
    if (upcycle_blas_status_ != CUBLAS_STATUS_SUCCESS)                                                         \
      UPCYCLE_THROW(#expr, " failed: ", cublasGetStatusName(upcycle_blas_status_), " (",                       \
                    cublasGetStatusString(upcycle_blas_status_), ")");                                         \
  } while (0)

struct Handles {
  cusolverDnHandle_t solver = nullptr;
  cublasHandle_t blas = nullptr;
};

// Created on first use, on the GPU the CUDA backend drives (backend_for starts it, and it made
// its GPU current), and never destroyed: destroying them at exit could run after the CUDA runtime
// has shut down.
Handles& handles() {
  static Handles* h = [] {
    const auto stream = static_cast<cudaStream_t>(backend_for(Device::cuda).compute_stream());
    auto* made = new Handles;
    UPCYCLE_CUSOLVER_CHECK(cusolverDnCreate(&made->solver));
    UPCYCLE_CUSOLVER_CHECK(cusolverDnSetStream(made->solver, stream));
    UPCYCLE_LINALG_CUBLAS_CHECK(cublasCreate(&made->blas));
    UPCYCLE_LINALG_CUBLAS_CHECK(cublasSetStream(made->blas, stream));
    return made;
  }();
  return *h;
}

// A routine's device workspace of `lwork` doubles (at least one, so the pointer is valid).
Tensor workspace(int lwork) { return Tensor::empty({std::max(lwork, 1)}, DType::f64, Device::cuda); }

// The info word the routine wrote, read on the host (after the routine, in stream order).
int read_info(const Tensor& info) { return info.item<std::int32_t>(); }

}  // namespace

int potrf_upper(double* a, const column_major::Square& s) {
  Handles& h = handles();
  int lwork = 0;
  UPCYCLE_CUSOLVER_CHECK(cusolverDnDpotrf_bufferSize(h.solver, CUBLAS_FILL_MODE_UPPER, s.n, a, s.lda, &lwork));
  Tensor work = workspace(lwork);
  Tensor info = Tensor::empty({1}, DType::i32, Device::cuda);
  UPCYCLE_CUSOLVER_CHECK(cusolverDnDpotrf(h.solver, CUBLAS_FILL_MODE_UPPER, s.n, a, s.lda,
                                          static_cast<double*>(work.raw()), lwork,
                                          static_cast<int*>(info.raw())));
  const int status = read_info(info);
  UPCYCLE_CHECK(status >= 0, "cusolverDnDpotrf failed with info = ", status, ": argument ", -status,
                " had an illegal value");
  return status;  // > 0: the leading minor of that order is not positive definite
}

void trmm_left_upper(const double* l, const double* b, double* c, const column_major::RightLowerTriangular& t) {
  const double one = 1.0;
  UPCYCLE_LINALG_CUBLAS_CHECK(cublasDtrmm(handles().blas, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_N,
                                          CUBLAS_DIAG_NON_UNIT, t.m, t.n, &one, l, t.lda, b, t.ldb, c, t.ldb));
}

void trsm_left_upper(const double* l, double* b, const column_major::RightLowerTriangular& t) {
  const double one = 1.0;
  UPCYCLE_LINALG_CUBLAS_CHECK(cublasDtrsm(handles().blas, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_N,
                                          CUBLAS_DIAG_NON_UNIT, t.m, t.n, &one, l, t.lda, b, t.ldb));
}

void syevd_upper(double* a, double* w, const column_major::Square& s) {
  Handles& h = handles();
  int lwork = 0;
  UPCYCLE_CUSOLVER_CHECK(cusolverDnDsyevd_bufferSize(h.solver, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_UPPER, s.n, a,
                                                     s.lda, w, &lwork));
  Tensor work = workspace(lwork);
  Tensor info = Tensor::empty({1}, DType::i32, Device::cuda);
  UPCYCLE_CUSOLVER_CHECK(cusolverDnDsyevd(h.solver, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_UPPER, s.n, a, s.lda, w,
                                          static_cast<double*>(work.raw()), lwork, static_cast<int*>(info.raw())));
  const int status = read_info(info);
  UPCYCLE_CHECK(status == 0, "cusolverDnDsyevd failed with info = ", status, ": ",
                status < 0 ? "an argument had an illegal value"
                           : "the divide-and-conquer eigensolver did not converge (off-diagonal elements of the "
                             "tridiagonal form left)");
}

}  // namespace upcycle::init::cuda_linalg
