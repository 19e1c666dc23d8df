#pragma once
// Argument checks of topk and argsort, shared by the CPU kernels (cpu_sort.cpp) and the CUDA ones
// (kernels/topk.cu) so that a bad call fails the same way on every device.
#include <cstdint>

#include "upcycle/core/tensor.hpp"

namespace upcycle {

// The [rows, cols] view of the last dim that both kernels sort.
struct SortRows {
  std::int64_t rows, cols;
};

inline std::int64_t sort_cols_of(const Tensor& x, const char* what) {
  UPCYCLE_CHECK(x.defined() && x.ndim() >= 1, what, ": expected a tensor with at least one dim, got ",
                describe(x));
  return x.dim(-1);
}

inline SortRows check_topk_args(const Tensor& x, std::int64_t k, const Tensor& values, const Tensor& idx) {
  const std::int64_t cols = sort_cols_of(x, "topk");
  UPCYCLE_CHECK(k >= 0 && k <= cols, "topk: k must lie in [0, ", cols, "] (the last dim of ",
                describe(x), "), got ", k);
  const std::int64_t rows = cols == 0 ? 0 : x.numel() / cols;
  UPCYCLE_CHECK(values.defined() && values.dtype() == x.dtype() && values.numel() == rows * k,
                "topk: values must be ", dtype_name(x.dtype()), " with ", rows, " x ", k,
                " elements, got ", describe(values));
  check_dtype(idx, DType::i64, "topk indices");
  UPCYCLE_CHECK(idx.numel() == rows * k, "topk: indices must have ", rows, " x ", k, " elements, got ",
                describe(idx));
  return {rows, cols};
}

inline SortRows check_argsort_args(const Tensor& x, const Tensor& idx) {
  const std::int64_t cols = sort_cols_of(x, "argsort");
  check_dtype(idx, DType::i64, "argsort indices");
  UPCYCLE_CHECK(idx.numel() == x.numel(), "argsort: indices must have ", x.numel(), " elements (",
                describe(x), "), got ", describe(idx));
  return {cols == 0 ? 0 : x.numel() / cols, cols};
}

}  // namespace upcycle
