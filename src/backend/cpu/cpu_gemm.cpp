// Every matrix product on the CPU goes through OpenBLAS. Batches with a broadcast (stride 0)
// operand are folded into one large GEMM when the layout allows it.
//
// Threading: the kernels' parallel loop (cpu_parallel.hpp) is the only pool. OpenBLAS runs
// single-threaded (its own pthread pool would otherwise spin next to ours after every loop and
// the two pools oversubscribe the cores), and the products are split here: one large product
// into blocks of C rows (or columns) with one OpenBLAS call per block, a batch of small products
// over the batch. C is never split along k, so every element of C is one single-threaded dot
// product over the whole k whatever the thread count: the results do not depend on it.
#include <algorithm>

#include "cpu_backend.hpp"
#include "cpu_parallel.hpp"
#include "backend/kernel_checks.hpp"
#include "upcycle/backend/gemm.hpp"

#ifdef UPCYCLE_WITH_OPENBLAS
#include <cblas.h>

extern "C" void openblas_set_num_threads(int);
extern "C" int openblas_get_num_threads(void);
#endif

namespace upcycle {

namespace {

// Below this many flops a product runs on the calling thread (a parallel region costs a few
// microseconds; 2 MFLOP take about 30 us on one core).
constexpr double kParallelFlops = 2.0 * 1024 * 1024;

#ifdef UPCYCLE_WITH_OPENBLAS
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

// OpenBLAS must not start its own threads under ours (see the top of the file). Cheap to check,
// so it is checked on every product: something else may have raised the count since.
void keep_blas_single_threaded() {
  if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
}
#else
// A build without OpenBLAS (UPCYCLE_OPENBLAS=OFF: the self-contained bundle the GPU device check
// runs, where the CPU backend is only the oracle of small test shapes): plain loops with the same
// BLAS semantics (beta == 0 does not read C), accumulated in the element type like a BLAS.
template <class T>
void gemm_call(bool ta, bool tb, int m, int n, int k, double alpha, const T* a, int lda, const T* b, int ldb,
               double beta, T* c, int ldc) {
  const T al = static_cast<T>(alpha), be = static_cast<T>(beta);
  for (int i = 0; i < m; ++i) {
    T* ci = c + static_cast<std::int64_t>(i) * ldc;
    for (int j = 0; j < n; ++j) ci[j] = beta == 0.0 ? T(0) : be * ci[j];
    for (int p = 0; p < k; ++p) {
      const T aip = al * (ta ? a[static_cast<std::int64_t>(p) * lda + i] : a[static_cast<std::int64_t>(i) * lda + p]);
      for (int j = 0; j < n; ++j)
        ci[j] += aip * (tb ? b[static_cast<std::int64_t>(j) * ldb + p] : b[static_cast<std::int64_t>(p) * ldb + j]);
    }
  }
}
void keep_blas_single_threaded() {}
#endif

// One product C = alpha op(A) op(B) + beta C (row-major, leading dims given), split over the
// OpenMP threads into blocks of rows of C (when m >= n) or of columns.
template <class T>
void gemm_split(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, double alpha, const T* a, int lda,
                const T* b, int ldb, double beta, T* c, int ldc) {
  const int threads = cpu::in_parallel_loop() ? 1 : cpu::loop_threads();
  const double flops = 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  const bool by_rows = m >= n;
  const std::int64_t len = by_rows ? m : n;
  // Block edges on multiples of the BLAS micro-kernel's unroll keep every block on the fast path.
  const std::int64_t align = by_rows ? 16 : 8;
  std::int64_t parts = threads > 1 && flops >= kParallelFlops ? threads : 1;
  std::int64_t block = (len + parts - 1) / parts;
  block = (block + align - 1) / align * align;
  parts = block > 0 ? (len + block - 1) / block : 1;
  if (parts <= 1) {
    gemm_call(ta, tb, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a, lda, b, ldb, beta, c,
              ldc);
    return;
  }
  cpu::parallel_for(parts, 1, [&](std::int64_t p0, std::int64_t p1) {
    for (std::int64_t p = p0; p < p1; ++p) {
      const std::int64_t lo = p * block, hi = std::min(len, lo + block);
      if (lo >= hi) continue;
      if (by_rows) {
        // Rows lo..hi of op(A): rows of A, or columns of A when it is transposed.
        const T* ap = ta ? a + lo : a + lo * lda;
        gemm_call(ta, tb, static_cast<int>(hi - lo), static_cast<int>(n), static_cast<int>(k), alpha, ap, lda, b,
                  ldb, beta, c + lo * ldc, ldc);
      } else {
        // Columns lo..hi of op(B): columns of B, or rows of B when it is transposed.
        const T* bp = tb ? b + lo * ldb : b + lo;
        gemm_call(ta, tb, static_cast<int>(m), static_cast<int>(hi - lo), static_cast<int>(k), alpha, a, lda, bp,
                  ldb, beta, c + lo, ldc);
      }
    }
  });
}

template <class T>
void gemm_typed(const GemmDesc& d, const Tensor& a, const Tensor& b, Tensor& c) {
  keep_blas_single_threaded();
  const T* pa = a.data<T>();
  const T* pb = b.data<T>();
  T* pc = c.data<T>();
  const int lda = static_cast<int>(d.trans_a ? d.m : d.k);
  const int ldb = static_cast<int>(d.trans_b ? d.k : d.n);
  const int ldc = static_cast<int>(d.n);
  // A batch of non-transposed A matrices times one shared B is one (batch*m) x n product.
  if (d.batch > 1 && d.stride_b == 0 && !d.trans_a && d.stride_a == d.m * d.k && d.stride_c == d.m * d.n) {
    gemm_split<T>(false, d.trans_b, d.batch * d.m, d.n, d.k, d.alpha, pa, lda, pb, ldb, d.beta, pc, ldc);
    return;
  }
  if (d.batch == 1 || d.stride_c == 0) {
    // One product, or a batch accumulating into one C (in order, each product split).
    for (std::int64_t i = 0; i < d.batch; ++i)
      gemm_split<T>(d.trans_a, d.trans_b, d.m, d.n, d.k, d.alpha, pa + i * d.stride_a, lda, pb + i * d.stride_b, ldb,
                    d.beta, pc + i * d.stride_c, ldc);
    return;
  }
  // A batch of independent products: whole products per chunk, at least kParallelFlops / 2 each.
  const double flops = 2.0 * static_cast<double>(d.m) * static_cast<double>(d.n) * static_cast<double>(d.k);
  const bool disjoint = d.stride_c >= d.m * d.n;  // chunks must not write the same C elements
  const std::int64_t grain = disjoint ? std::max<std::int64_t>(1, static_cast<std::int64_t>(kParallelFlops / 2 / flops))
                                      : d.batch;
  cpu::parallel_for(d.batch, grain, [&](std::int64_t i0, std::int64_t i1) {
    for (std::int64_t i = i0; i < i1; ++i)
      gemm_call(d.trans_a, d.trans_b, static_cast<int>(d.m), static_cast<int>(d.n), static_cast<int>(d.k), d.alpha,
                pa + i * d.stride_a, lda, pb + i * d.stride_b, ldb, d.beta, pc + i * d.stride_c, ldc);
  });
}
}  // namespace

void CpuBackend::gemm(const GemmDesc& d, const Tensor& a, const Tensor& b, Tensor& c) {
  check_gemm_args(d, a, b, c);
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

// The groups one after the other, each product split over the threads as gemm() does.
void CpuBackend::grouped_gemm(bool trans_a, bool trans_b, double alpha, double beta,
                              const std::vector<GemmGroup>& groups) {
  for (std::size_t i = 0; i < groups.size(); ++i) check_gemm_group(groups[i], i);
  grouped_gemm_as_gemms(*this, trans_a, trans_b, alpha, beta, groups);
}

}  // namespace upcycle
