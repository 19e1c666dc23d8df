#pragma once
// Argument checks of the elementwise kernels, shared by the CPU backend (cpu_elementwise.cpp) and
// the CUDA backend (kernels/elementwise.cu), so that a bad call fails the same way on every device
// and before a CUDA kernel is enqueued.
#include "backend/scalar_math.hpp"
#include "upcycle/backend/backend.hpp"

namespace upcycle {

// x -> y elementwise: same dtype, same element count (shapes may differ).
inline void check_elementwise_pair(const Tensor& x, const Tensor& y, const char* what) {
  UPCYCLE_CHECK(x.dtype() == y.dtype() && x.numel() == y.numel(), what, ": ", describe(x), " -> ",
                describe(y));
}

// The operand op's derivative reads (y for exp, sqrt, ..., x for the others but neg) must be given
// and hold one element per element of gy.
inline void check_unary_backward_operand(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& gy) {
  const bool from_y = scalar_math::derivative_reads_output(op);
  UPCYCLE_CHECK(from_y ? y.defined() : x.defined() || op == UnaryOp::neg, "unary_backward: missing the ",
                from_y ? "output" : "input");
  if (op == UnaryOp::neg) return;
  const Tensor& read = from_y ? y : x;
  UPCYCLE_CHECK(read.numel() == gy.numel(), "unary_backward: ", from_y ? "output " : "input ", describe(read),
                " for gradient ", describe(gy));
}

// binary: one dtype; equal shapes, or one shape a suffix of the other's (equal element counts also
// pass: the operands are then read elementwise); out holds the larger. The larger is decided by
// the suffix relation, not by element count: [0, 7] with [7] is a valid, empty broadcast.
inline void check_binary_args(const Tensor& a, const Tensor& b, const Tensor& out) {
  UPCYCLE_CHECK(a.dtype() == b.dtype() && b.dtype() == out.dtype(), "binary: dtypes differ: ", describe(a), ", ",
                describe(b));
  const bool b_in_a = is_suffix_of(b.shape(), a.shape()), a_in_b = is_suffix_of(a.shape(), b.shape());
  UPCYCLE_CHECK(b_in_a || a_in_b || a.numel() == b.numel(), "binary: cannot broadcast ", describe(a), " with ",
                describe(b), " (the smaller shape must be a suffix of the larger)");
  const Shape& big = b_in_a ? a.shape() : a_in_b ? b.shape() : a.shape();
  UPCYCLE_CHECK(out.numel() == big.numel(), "binary: output ", describe(out), " for ", big.str());
}

// masked_fill: out like x; the mask tiles x (a non-empty mask whose element count divides x's).
inline void check_masked_fill_args(const Tensor& x, const Tensor& mask, const Tensor& out) {
  check_elementwise_pair(x, out, "masked_fill");
  UPCYCLE_CHECK(mask.numel() > 0 && x.numel() % mask.numel() == 0, "masked_fill: mask ", describe(mask),
                " does not tile ", describe(x));
}

}  // namespace upcycle
