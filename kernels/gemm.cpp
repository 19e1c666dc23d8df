// CudaBackend::gemm through cuBLAS (host code). CPU twin: CpuBackend::gemm in
// src/backend/cpu/cpu_gemm.cpp; this file takes the same cases in the same order:
//   - a batch of packed, non-transposed A against one shared B: one tall product (as the CPU folds
//     it; one large GEMM also runs faster than a batch of small ones);
//   - one product: cublasGemmEx;
//   - products that write overlapping parts of C (stride_c == 0 accumulates a batch into one C):
//     one cublasGemmEx per product in batch order, since each reads the C the previous one wrote;
//   - independent products: one cublasGemmStridedBatchedEx (stride 0 broadcasts an operand).
// Row-major operands reach cuBLAS as the column-major C^T = op(B)^T op(A)^T (gemm_math.hpp).
// f32 computes in f32 (TF32 on tensor cores only when allow_tf32()), f64 in f64; alpha and beta
// are host scalars of the compute type, as the CPU's BLAS takes them.
#include <climits>

#include "backend/kernel_checks.hpp"
#include "cuda_common.cuh"
#include "gemm_math.hpp"

namespace upcycle {

namespace {

template <class T>
struct CublasTypes;
template <>
struct CublasTypes<float> {
  static constexpr cudaDataType_t data = CUDA_R_32F;
  static cublasComputeType_t compute(bool allow_tf32) {
    return allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  }
};
template <>
struct CublasTypes<double> {
  static constexpr cudaDataType_t data = CUDA_R_64F;
  static cublasComputeType_t compute(bool) { return CUBLAS_COMPUTE_64F; }
};

cublasOperation_t op(bool trans) { return trans ? CUBLAS_OP_T : CUBLAS_OP_N; }

// cuBLAS's legacy API takes int dimensions; the CPU's BLAS does too (cpu_gemm.cpp casts to int).
int as_int(std::int64_t v, const char* what) {
  UPCYCLE_CHECK(v <= INT_MAX, "gemm: ", what, " ", v, " exceeds the int range of cuBLAS");
  return static_cast<int>(v);
}

// One product C = alpha op(first) op(second) + beta C in cuBLAS's terms (g from col_major_gemm).
template <class T>
void gemm_one(cublasHandle_t h, bool tf32, const cuda::ColMajorGemm& g, T alpha, const T* first, const T* second,
              T beta, T* c) {
  UPCYCLE_CUBLAS_CHECK(cublasGemmEx(h, op(g.trans_first), op(g.trans_second), as_int(g.m, "m"), as_int(g.n, "n"),
                                    as_int(g.k, "k"), &alpha, first, CublasTypes<T>::data,
                                    as_int(g.ld_first, "leading dim"), second, CublasTypes<T>::data,
                                    as_int(g.ld_second, "leading dim"), &beta, c, CublasTypes<T>::data,
                                    as_int(g.ldc, "leading dim"), CublasTypes<T>::compute(tf32), CUBLAS_GEMM_DEFAULT));
}

template <class T>
void gemm_typed(cublasHandle_t h, bool tf32, const GemmDesc& d, const Tensor& a, const Tensor& b, Tensor& c) {
  const T* pa = cuda::device_ptr<T>(a, "gemm A");
  const T* pb = cuda::device_ptr<T>(b, "gemm B");
  T* pc = cuda::device_ptr<T>(c, "gemm C");
  const T alpha = static_cast<T>(d.alpha), beta = static_cast<T>(d.beta);
  if (cuda::gemm_batch_folds(d.batch, d.trans_a, d.m, d.n, d.k, d.stride_a, d.stride_b, d.stride_c) &&
      d.batch * d.m <= INT_MAX) {
    const cuda::ColMajorGemm g = cuda::col_major_gemm(false, d.trans_b, d.batch * d.m, d.n, d.k);
    gemm_one<T>(h, tf32, g, alpha, cuda::first_operand(pa, pb), cuda::second_operand(pa, pb), beta, pc);
    return;
  }
  const cuda::ColMajorGemm g =
      cuda::col_major_gemm(d.trans_a, d.trans_b, d.m, d.n, d.k, d.stride_a, d.stride_b, d.stride_c);
  const T* first = cuda::first_operand(pa, pb);
  const T* second = cuda::second_operand(pa, pb);
  if (d.batch == 1 || cuda::gemm_batch_in_order(d.m, d.n, d.stride_c)) {
    for (std::int64_t i = 0; i < d.batch; ++i)
      gemm_one<T>(h, tf32, g, alpha, first + i * g.stride_first, second + i * g.stride_second, beta,
                  pc + i * g.stride_c);
    return;
  }
  UPCYCLE_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      h, op(g.trans_first), op(g.trans_second), as_int(g.m, "m"), as_int(g.n, "n"), as_int(g.k, "k"), &alpha, first,
      CublasTypes<T>::data, as_int(g.ld_first, "leading dim"), static_cast<long long>(g.stride_first), second,
      CublasTypes<T>::data, as_int(g.ld_second, "leading dim"), static_cast<long long>(g.stride_second), &beta, pc,
      CublasTypes<T>::data, as_int(g.ldc, "leading dim"), static_cast<long long>(g.stride_c),
      as_int(d.batch, "batch"), CublasTypes<T>::compute(tf32), CUBLAS_GEMM_DEFAULT));
}

}  // namespace

// CPU twin: CpuBackend::gemm in src/backend/cpu/cpu_gemm.cpp.
void CudaBackend::gemm(const GemmDesc& d, const Tensor& a, const Tensor& b, Tensor& c) {
  check_gemm_args(d, a, b, c);
  if (d.batch == 0 || d.m == 0 || d.n == 0) return;
  if (d.k == 0) {
    // cuBLAS would leave C untouched; the product is zero. The same kernels as on the CPU, batch
    // by batch (a batch accumulating into one C scales it once per product, as there).
    for (std::int64_t i = 0; i < d.batch; ++i) {
      Tensor ci = c.reshape({c.numel()}).rows(i * d.stride_c, i * d.stride_c + d.m * d.n);
      // beta = 0 means C is not read (it may hold garbage, even NaN), as in BLAS.
      if (d.beta == 0.0) fill(ci, 0.0);
      else affine(ci, ci, d.beta, 0.0);
    }
    return;
  }
  dispatch_floating(a.dtype(), "gemm", [&](auto t) { gemm_typed<decltype(t)>(cublas_, allow_tf32_, d, a, b, c); });
}

}  // namespace upcycle
