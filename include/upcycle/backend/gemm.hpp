#pragma once
// GEMM helpers on top of Backend::gemm: batched products over densely packed operands (per-head
// attention) and a grouped GEMM as one gemm() per group.
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

// A grouped GEMM as one gemm() per group (the CPU backend's, and any backend without a grouped
// kernel): the groups in order, each with the shared transposes and scalars.
inline void grouped_gemm_as_gemms(Backend& be, bool trans_a, bool trans_b, double alpha, double beta,
                                  const std::vector<GemmGroup>& groups) {
  for (const GemmGroup& g : groups) {
    if (g.m == 0 || g.n == 0) continue;
    GemmDesc d;
    d.m = g.m;
    d.n = g.n;
    d.k = g.k;
    d.trans_a = trans_a;
    d.trans_b = trans_b;
    d.alpha = alpha;
    d.beta = beta;
    Tensor c = g.c;
    // k == 0 reads neither operand (gemm sets C = beta C): C stands in for both.
    be.gemm(d, g.k == 0 ? g.c : g.a, g.k == 0 ? g.c : g.b, c);
  }
}

}  // namespace upcycle
