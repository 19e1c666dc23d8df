#pragma once
// Batched GEMM over operands packed densely per batch entry (the layout of per-head attention).
#include "upcycle/backend/backend.hpp"

namespace upcycle {

// C[b] = alpha op(A[b]) op(B[b]) for b < batch; A[b] is m x k (k x m when ta), B[b] k x n.
inline void packed_batched_gemm(Backend& be, std::int64_t batch, std::int64_t m, std::int64_t n, std::int64_t k,
                                bool ta, bool tb, double alpha, const Tensor& a, const Tensor& b, Tensor& c) {
  GemmDesc d;
  d.batch = batch;
  d.m = m;
  d.n = n;
  d.k = k;
  d.trans_a = ta;
  d.trans_b = tb;
  d.stride_a = m * k;
  d.stride_b = k * n;
  d.stride_c = m * n;
  d.alpha = alpha;
  be.gemm(d, a, b, c);
}

}  // namespace upcycle
