#pragma once
// Argument checks of the reduction kernels (reduce, expand_axis, sum_squares), shared by the CPU
// backend (src/backend/cpu/cpu_reduce.cpp) and the CUDA one (kernels/reduce.cu) so that a bad call
// fails with the same message on every device, before anything is enqueued.
#include <cstdint>

#include "upcycle/core/tensor.hpp"

namespace upcycle {

inline void check_reduce_args(const Tensor& x, const Tensor& out, std::int64_t outer, std::int64_t axis,
                              std::int64_t inner) {
  UPCYCLE_CHECK(x.numel() == outer * axis * inner && out.numel() == outer * inner,
                "reduce: ", describe(x), " as [", outer, ", ", axis, ", ", inner, "] into ", describe(out));
  UPCYCLE_CHECK(x.dtype() == out.dtype(), "reduce: dtypes differ");
}

inline void check_expand_axis_args(const Tensor& x, const Tensor& out, std::int64_t outer, std::int64_t axis,
                                   std::int64_t inner) {
  UPCYCLE_CHECK(x.numel() == outer * inner && out.numel() == outer * axis * inner, "expand_axis: ",
                describe(x), " -> ", describe(out), " as [", outer, ", ", axis, ", ", inner, "]");
}

inline void check_sum_squares_output(const Tensor& out) {
  check_dtype(out, DType::f64, "sum_squares output");
  UPCYCLE_CHECK(out.numel() == 1, "sum_squares: output must have one element");
}

}  // namespace upcycle
