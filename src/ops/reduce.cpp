#include "upcycle/ops/reduce.hpp"

#include "upcycle/backend/backend.hpp"
#include "upcycle/ops/shape.hpp"

namespace upcycle {

namespace {
Shape reduced_shape(const Shape& s, int axis, bool keepdim) {
  Shape out;
  for (int i = 0; i < s.ndim(); ++i) {
    if (i != axis) out.push_back(s[i]);
    else if (keepdim) out.push_back(1);
  }
  if (out.ndim() == 0) out.push_back(1);
  return out;
}

Var reduce_axis(const char* name, ReduceOp op, const Var& x, int axis_in, bool keepdim) {
  const Shape& s = x.shape();
  const int axis = s.wrap_axis(axis_in);
  const std::int64_t outer = s.prod(0, axis), len = s[axis], inner = s.prod(axis + 1, s.ndim());
  Tensor out = Tensor::empty(reduced_shape(s, axis, keepdim), x.dtype(), x.device());
  backend_of(out).reduce(op, x.value(), out, outer, len, inner);
  const Shape in_shape = s;
  const double scale = op == ReduceOp::mean ? 1.0 / static_cast<double>(len) : 1.0;
  return make_output(name, out, {&x}, [=](const Tensor& gy, GradSink& sink) {
    Tensor gx = Tensor::empty(in_shape, gy.dtype(), gy.device());
    backend_of(gy).expand_axis(gy, gx, outer, len, inner, scale);
    sink.add(0, gx);
  });
}
}  // namespace

Var sum(const Var& x, int axis, bool keepdim) { return reduce_axis("sum", ReduceOp::sum, x, axis, keepdim); }
Var mean(const Var& x, int axis, bool keepdim) { return reduce_axis("mean", ReduceOp::mean, x, axis, keepdim); }

Var sum_all(const Var& x) { return reduce_axis("sum_all", ReduceOp::sum, reshape(x, {x.value().numel()}), 0, false); }
Var mean_all(const Var& x) { return reduce_axis("mean_all", ReduceOp::mean, reshape(x, {x.value().numel()}), 0, false); }

Tensor sum_to_shape(const Tensor& g, const Shape& target) {
  if (g.shape() == target) return g;
  if (g.numel() == target.numel()) return g.reshape(target);
  UPCYCLE_CHECK(is_suffix_of(target, g.shape()), "cannot sum ", describe(g), " to ", target.str(),
                " (the target must be a suffix of the gradient's shape)");
  Tensor out = Tensor::empty(target, g.dtype(), g.device());
  backend_of(g).reduce(ReduceOp::sum, g, out, 1, g.numel() / target.numel(), target.numel());
  return out;
}

}  // namespace upcycle
