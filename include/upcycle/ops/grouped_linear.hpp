#pragma once
// Grouped linear: one affine map per group of consecutive rows, the expert computation of an MoE
// layer (every expert sees the rows dispatched to it, stored contiguously, expert after expert).
#include <cstdint>
#include <vector>

#include "upcycle/autograd/var.hpp"

namespace upcycle {

// x [N, in] holds G groups of consecutive rows, group g has group_sizes[g] rows (sizes may be 0,
// sum(group_sizes) == N); w [G, out, in]; bias [G, out] or undefined. Returns y [N, out] with
//   y[rows of g] = x[rows of g] w[g]^T + bias[g].
// One autograd op: forward and backward run one backend gemm per non-empty group directly on row
// slices of x, y and on w[g] in place (no copy of any weight). Gradients: x, w (zero for empty
// groups) and bias (zero for empty groups). group_sizes is host data (it decides the gemm shapes).
Var grouped_linear(const Var& x, const Var& w, const Var& bias, const std::vector<std::int64_t>& group_sizes);

}  // namespace upcycle
