// Row gathers and their adjoint, index_add. Index tensors are constants: the graph keeps them
// (they are small) and never differentiates through them.
#include "upcycle/ops/index.hpp"

#include "upcycle/backend/backend.hpp"

namespace upcycle {

namespace {

void check_index_tensor(const Tensor& idx, const Tensor& data, const char* what) {
  UPCYCLE_CHECK(idx.defined(), what, ": undefined index tensor");
  UPCYCLE_CHECK(idx.dtype() == DType::i32 || idx.dtype() == DType::i64, what, ": indices must be i32 or i64, got ",
                describe(idx));
  UPCYCLE_CHECK(idx.device() == data.device(), what, ": indices ", describe(idx), " and data ", describe(data),
                " are on different devices");
}

// table[idx[i], :] for every index, as [N, D].
Tensor gather(const Tensor& table, const Tensor& idx, const Shape& out_shape) {
  Tensor out = Tensor::empty(out_shape, table.dtype(), table.device());
  backend_of(table).gather_rows(table, idx, out);
  return out;
}

// zeros [rows, D] with out[idx[i], :] += src[i, :].
Tensor scatter(std::int64_t rows, const Tensor& idx, const Tensor& src) {
  const std::int64_t D = src.dim(-1);
  Tensor out = Tensor::zeros({rows, D}, src.dtype(), src.device());
  backend_of(src).index_add_rows(out, idx, src.reshape({idx.numel(), D}));
  return out;
}

// Shared by embedding and gather_rows: out [idx.shape..., D] = table[idx].
Var gather_op(const char* name, const Var& table, const Tensor& idx) {
  check_index_tensor(idx, table.value(), name);
  UPCYCLE_CHECK(table.shape().ndim() == 2, name, ": table must be [rows, D], got ", describe(table.value()));
  Shape out_shape = idx.shape();
  out_shape.push_back(table.dim(1));
  const std::int64_t rows = table.dim(0);
  return make_output(name, gather(table.value(), idx, out_shape), {&table},
                     [idx, rows](const Tensor& gy, GradSink& sink) { sink.add(0, scatter(rows, idx, gy)); });
}

}  // namespace

Var embedding(const Var& table, const Tensor& idx) { return gather_op("embedding", table, idx); }

Var gather_rows(const Var& x, const Tensor& idx) {
  UPCYCLE_CHECK(idx.defined() && idx.ndim() == 1, "gather_rows: indices must be 1-D, got ", describe(idx));
  return gather_op("gather_rows", x, idx);
}

Var index_add_rows(std::int64_t num_rows, const Tensor& idx, const Var& src) {
  check_index_tensor(idx, src.value(), "index_add_rows");
  UPCYCLE_CHECK(src.shape().ndim() == 2 && src.dim(0) == idx.numel(), "index_add_rows: source must be [",
                idx.numel(), ", D] for ", describe(idx), ", got ", describe(src.value()));
  UPCYCLE_CHECK(num_rows >= 0, "index_add_rows: negative row count ", num_rows);
  return make_output("index_add_rows", scatter(num_rows, idx, src.value()), {&src},
                     [idx](const Tensor& gy, GradSink& sink) { sink.add(0, gather(gy, idx, {idx.numel(), gy.dim(1)})); });
}

}  // namespace upcycle
