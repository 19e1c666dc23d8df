#include "upcycle/ops/topk.hpp"

#include "upcycle/backend/backend.hpp"

namespace upcycle {

namespace {
// The gradient of a selection along the last dim: g scattered (added) into zeros shaped like x at
// idx, so an entry picked twice receives both gradients.
BackwardFn scatter_backward(const Shape& x_shape, const Tensor& idx) {
  return [x_shape, idx](const Tensor& g, GradSink& sink) {
    Tensor gx = Tensor::zeros(x_shape, g.dtype(), g.device());
    backend_of(g).scatter_add_last(gx, idx, g);
    sink.add(0, gx);
  };
}

// x's shape with the last dim replaced by k.
Shape with_last_dim(const Shape& s, std::int64_t k) {
  Shape out = s;
  out[s.ndim() - 1] = k;
  return out;
}
}  // namespace

TopK topk(const Var& x, std::int64_t k) {
  const Shape& s = x.shape();
  UPCYCLE_CHECK(s.ndim() >= 1, "topk: input must be [..., C], got ", describe(x.value()));
  UPCYCLE_CHECK(k >= 0 && k <= s.dim(-1), "topk: k must lie in [0, ", s.dim(-1), "] for input ",
                describe(x.value()), ", got ", k);
  const Shape out_shape = with_last_dim(s, k);
  Tensor values = Tensor::empty(out_shape, x.dtype(), x.device());
  Tensor idx = Tensor::empty(out_shape, DType::i64, x.device());
  backend_of(values).topk(x.value(), k, values, idx);
  return {make_output("topk", values, {&x}, scatter_backward(s, idx)), idx};
}

Var gather_last(const Var& x, const Tensor& idx) {
  const Shape& s = x.shape();
  UPCYCLE_CHECK(s.ndim() >= 1 && idx.defined() && idx.ndim() == s.ndim() &&
                    idx.shape() == with_last_dim(s, idx.dim(-1)),
                "gather_last: indices must be [..., k] with the leading shape of ", describe(x.value()),
                ", got ", describe(idx));
  Tensor out = Tensor::empty(idx.shape(), x.dtype(), x.device());
  backend_of(out).gather_last(x.value(), idx, out);
  return make_output("gather_last", out, {&x}, scatter_backward(s, idx));
}

}  // namespace upcycle
