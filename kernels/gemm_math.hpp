#pragma once
// How a row-major product becomes a cuBLAS (column-major) call, as plain functions compiled for
// the host too so that tests/unit/test_cuda_gemm_math.cpp checks them with naive GEMMs.
//
// A row-major m x n matrix is, read column-major, its n x m transpose. So the row-major
// C = op(A) op(B) is the column-major C^T = op(B)^T op(A)^T: cuBLAS gets B as its first operand
// and A as its second, with m and n swapped, each operand's transpose flag kept, and the
// row-major leading dimensions (the row lengths) as the column-major ones.
#include <cstdint>

#include "upcycle/core/host_device.hpp"

namespace upcycle::cuda {

// The arguments of one column-major GEMM C = op(first) op(second) + beta C (cuBLAS's A and B).
struct ColMajorGemm {
  bool trans_first = false, trans_second = false;  // cuBLAS transa, transb
  std::int64_t m = 0, n = 0, k = 0;                // cuBLAS m, n, k
  std::int64_t ld_first = 0, ld_second = 0, ldc = 0;
  std::int64_t stride_first = 0, stride_second = 0, stride_c = 0;  // between batch entries
};

// Row-major leading dimensions of the operands of C = op(A) op(B) (op(A) m x k, op(B) k x n): A is
// stored k x m when transposed (rows of m), m x k otherwise; B likewise; C is m x n.
UPCYCLE_HD inline std::int64_t row_major_lda(bool trans_a, std::int64_t m, std::int64_t k) { return trans_a ? m : k; }
UPCYCLE_HD inline std::int64_t row_major_ldb(bool trans_b, std::int64_t n, std::int64_t k) { return trans_b ? k : n; }

// The column-major call for the row-major product (strides in elements, 0 broadcasts).
UPCYCLE_HD inline ColMajorGemm col_major_gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n,
                                              std::int64_t k, std::int64_t stride_a = 0, std::int64_t stride_b = 0,
                                              std::int64_t stride_c = 0) {
  ColMajorGemm g;
  g.trans_first = trans_b;
  g.trans_second = trans_a;
  g.m = n;
  g.n = m;
  g.k = k;
  g.ld_first = row_major_ldb(trans_b, n, k);
  g.ld_second = row_major_lda(trans_a, m, k);
  g.ldc = n;
  g.stride_first = stride_b;
  g.stride_second = stride_a;
  g.stride_c = stride_c;
  return g;
}

// cuBLAS's first operand is the row-major B, its second the row-major A.
template <class P>
UPCYCLE_HD inline P first_operand(P /*a*/, P b) {
  return b;
}
template <class P>
UPCYCLE_HD inline P second_operand(P a, P /*b*/) {
  return a;
}

// A batch of non-transposed, packed A matrices times one shared B (stride_b == 0) is one
// (batch m) x n product: the A matrices stacked are one taller A, the Cs one taller C. The CPU
// (cpu_gemm.cpp) folds exactly these batches; folding changes no element's dot product.
UPCYCLE_HD inline bool gemm_batch_folds(std::int64_t batch, bool trans_a, std::int64_t m, std::int64_t n,
                                        std::int64_t k, std::int64_t stride_a, std::int64_t stride_b,
                                        std::int64_t stride_c) {
  return batch > 1 && stride_b == 0 && !trans_a && stride_a == m * k && stride_c == m * n;
}

// Whether the products of a batch write overlapping parts of C (stride_c == 0 accumulates a batch
// into one C). They must then run one after the other in batch order, as on the CPU: each reads
// the C the previous one wrote (C = alpha op(A_i) op(B_i) + beta C, beta applied every time).
UPCYCLE_HD inline bool gemm_batch_in_order(std::int64_t m, std::int64_t n, std::int64_t stride_c) {
  return stride_c < m * n;
}

}  // namespace upcycle::cuda
