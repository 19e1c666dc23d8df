#pragma once
// Shape and dtype checks of the gather / scatter-add kernels, shared by the CPU kernels
// (cpu_index.cpp) and the CUDA ones (kernels/index.cu) so that a bad call fails the same way on
// every device. Index values are checked separately: on the host by the CPU kernel, on the device
// by the CUDA kernel.
#include <cstdint>

#include "upcycle/core/tensor.hpp"

namespace upcycle {

// gather_rows / index_add_rows: a [V, D] table, N indices, [N, D] rows.
struct IndexRowsDims {
  std::int64_t V, D, N;
};

// gather_last / scatter_add_last over the last dim: `rows` rows of `cols` values, `k` indices per
// row.
struct IndexLastDims {
  std::int64_t rows, k, cols;
};

// [rows, cols] view of a tensor's last dim.
struct IndexLastDim {
  std::int64_t rows, cols;
};
inline IndexLastDim index_last_dim(const Tensor& t, const char* what) {
  UPCYCLE_CHECK(t.ndim() >= 1, what, ": expected at least one dim, got ", describe(t));
  return {t.shape().prod(0, t.ndim() - 1), t.dim(-1)};
}

inline IndexRowsDims check_gather_rows_args(const Tensor& table, const Tensor& idx, const Tensor& out) {
  UPCYCLE_CHECK(table.ndim() == 2, "gather_rows: table must be [V, D], got ", describe(table));
  const std::int64_t V = table.dim(0), D = table.dim(1), N = idx.numel();
  UPCYCLE_CHECK(out.dtype() == table.dtype() && out.numel() == N * D, "gather_rows: output ", describe(out),
                " for ", N, " rows of ", describe(table));
  return {V, D, N};
}

inline IndexRowsDims check_index_add_rows_args(const Tensor& out, const Tensor& idx, const Tensor& src) {
  UPCYCLE_CHECK(out.ndim() == 2, "index_add_rows: output must be [V, D], got ", describe(out));
  const std::int64_t V = out.dim(0), D = out.dim(1), N = idx.numel();
  UPCYCLE_CHECK(src.dtype() == out.dtype() && src.numel() == N * D, "index_add_rows: source ", describe(src),
                " for ", N, " indices into ", describe(out));
  return {V, D, N};
}

inline IndexLastDims check_gather_last_args(const Tensor& x, const Tensor& idx, const Tensor& out) {
  const IndexLastDim xd = index_last_dim(x, "gather_last"), id = index_last_dim(idx, "gather_last");
  UPCYCLE_CHECK(id.rows == xd.rows, "gather_last: indices ", describe(idx), " do not match the rows of ",
                describe(x));
  UPCYCLE_CHECK(out.dtype() == x.dtype() && out.numel() == idx.numel(), "gather_last: output ", describe(out),
                " for indices ", describe(idx));
  return {id.rows, id.cols, xd.cols};
}

inline IndexLastDims check_scatter_add_last_args(const Tensor& out, const Tensor& idx, const Tensor& src) {
  const IndexLastDim od = index_last_dim(out, "scatter_add_last"), id = index_last_dim(idx, "scatter_add_last");
  UPCYCLE_CHECK(id.rows == od.rows, "scatter_add_last: indices ", describe(idx), " do not match the rows of ",
                describe(out));
  UPCYCLE_CHECK(src.dtype() == out.dtype() && src.numel() == idx.numel(), "scatter_add_last: source ",
                describe(src), " for indices ", describe(idx));
  return {id.rows, id.cols, od.cols};
}

}  // namespace upcycle
