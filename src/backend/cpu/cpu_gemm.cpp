// Every matrix product on the CPU goes through OpenBLAS. Batches with a broadcast (stride 0)
// operand are folded into one large GEMM when the layout allows it.
#include <cblas.h>

#include "cpu_backend.hpp"

namespace upcycle {

namespace {
void gemm_call(bool ta, bool tb, int m, int n, int k, double alpha, const float* a, int lda,
               const float* b, int ldb, double beta, float* c, int ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k,
              static_cast<float>(alpha), a, lda, b, ldb, static_cast<float>(beta), c, ldc);
}
void gemm_call(bool ta, bool tb, int m, int n, int k, double alpha, const double* a, int lda,
               const double* b, int ldb, double beta, double* c, int ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k,
              alpha, a, lda, b, ldb, beta, c, ldc);
}

template <class T>
void gemm_typed(const GemmDesc& d, const Tensor& a, const Tensor& b, Tensor& c) {
  const T* pa = a.data<T>();
  const T* pb = b.data<T>();
  T* pc = c.data<T>();
  const int lda = static_cast<int>(d.trans_a ? d.m : d.k);
  const int ldb = static_cast<int>(d.trans_b ? d.k : d.n);
  const int ldc = static_cast<int>(d.n);
  // A batch of non-transposed A matrices times one shared B is one (batch*m) x n product.
  if (d.batch > 1 && d.stride_b == 0 && !d.trans_a && d.stride_a == d.m * d.k &&
      d.stride_c == d.m * d.n) {
    gemm_call(false, d.trans_b, static_cast<int>(d.batch * d.m), static_cast<int>(d.n),
              static_cast<int>(d.k), d.alpha, pa, lda, pb, ldb, d.beta, pc, ldc);
    return;
  }
  for (std::int64_t i = 0; i < d.batch; ++i)
    gemm_call(d.trans_a, d.trans_b, static_cast<int>(d.m), static_cast<int>(d.n), static_cast<int>(d.k),
              d.alpha, pa + i * d.stride_a, lda, pb + i * d.stride_b, ldb, d.beta, pc + i * d.stride_c, ldc);
}
}  // namespace

void CpuBackend::gemm(const GemmDesc& d, const Tensor& a, const Tensor& b, Tensor& c) {
  UPCYCLE_CHECK(a.dtype() == b.dtype() && b.dtype() == c.dtype(), "gemm: dtypes differ: ",
                describe(a), ", ", describe(b), ", ", describe(c));
  UPCYCLE_CHECK(d.m >= 0 && d.n >= 0 && d.k >= 0 && d.batch >= 0, "gemm: negative size");
  UPCYCLE_CHECK(a.numel() >= (d.batch - 1) * d.stride_a + d.m * d.k &&
                    b.numel() >= (d.batch - 1) * d.stride_b + d.k * d.n &&
                    c.numel() >= (d.batch - 1) * d.stride_c + d.m * d.n,
                "gemm: operands too small for batch ", d.batch, " of ", d.m, "x", d.k, " * ", d.k, "x", d.n);
  if (d.batch == 0 || d.m == 0 || d.n == 0) return;
  if (d.k == 0) {  // BLAS would leave C untouched; the product is zero.
    for (std::int64_t i = 0; i < d.batch; ++i) {
      Tensor ci = c.reshape({c.numel()}).rows(i * d.stride_c, i * d.stride_c + d.m * d.n);
      // beta = 0 means C is not read (it may hold garbage, even NaN), as in BLAS.
      if (d.beta == 0.0) fill(ci, 0.0);
      else affine(ci, ci, d.beta, 0.0);
    }
    return;
  }
  dispatch_floating(a.dtype(), "gemm", [&](auto t) { gemm_typed<decltype(t)>(d, a, b, c); });
}

}  // namespace upcycle
