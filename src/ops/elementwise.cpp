#include "upcycle/ops/elementwise.hpp"

#include "upcycle/ops/reduce.hpp"

namespace upcycle {

namespace {
Shape broadcast_shape(const Var& a, const Var& b, const char* op) {
  const Shape& sa = a.shape();
  const Shape& sb = b.shape();
  UPCYCLE_CHECK(a.dtype() == b.dtype(), op, ": dtypes differ: ", describe(a.value()), ", ",
                describe(b.value()));
  if (sa == sb) return sa;
  if (is_suffix_of(sb, sa)) return sa;
  if (is_suffix_of(sa, sb)) return sb;
  UPCYCLE_THROW(op, ": cannot broadcast ", sa.str(), " with ", sb.str(),
                " (one shape must be a suffix of the other)");
}

Tensor binary_value(BinaryOp op, const Tensor& a, const Tensor& b, const Shape& shape) {
  Tensor out = Tensor::empty(shape, a.dtype(), a.device());
  backend_of(a).binary(op, a, b, out);
  return out;
}
}  // namespace

Var add(const Var& a, const Var& b) {
  const Shape shape = broadcast_shape(a, b, "add");
  const Shape sa = a.shape(), sb = b.shape();
  return make_output("add", binary_value(BinaryOp::add, a.value(), b.value(), shape), {&a, &b},
                     [sa, sb](const Tensor& gy, GradSink& sink) {
                       if (sink.needs(0)) sink.add(0, sum_to_shape(gy, sa));
                       if (sink.needs(1)) sink.add(1, sum_to_shape(gy, sb));
                     });
}

Var sub(const Var& a, const Var& b) {
  const Shape shape = broadcast_shape(a, b, "sub");
  const Shape sa = a.shape(), sb = b.shape();
  return make_output("sub", binary_value(BinaryOp::sub, a.value(), b.value(), shape), {&a, &b},
                     [sa, sb](const Tensor& gy, GradSink& sink) {
                       if (sink.needs(0)) sink.add(0, sum_to_shape(gy, sa));
                       if (sink.needs(1)) {
                         Tensor g = sum_to_shape(gy, sb);
                         Tensor neg = Tensor::empty_like(g);
                         backend_of(g).affine(g, neg, -1.0, 0.0);
                         sink.add(1, neg);
                       }
                     });
}

Var mul(const Var& a, const Var& b) {
  const Shape shape = broadcast_shape(a, b, "mul");
  Tensor av = a.value(), bv = b.value();
  return make_output("mul", binary_value(BinaryOp::mul, av, bv, shape), {&a, &b},
                     [av, bv, shape](const Tensor& gy, GradSink& sink) {
                       if (sink.needs(0)) sink.add(0, sum_to_shape(binary_value(BinaryOp::mul, gy, bv, shape), av.shape()));
                       if (sink.needs(1)) sink.add(1, sum_to_shape(binary_value(BinaryOp::mul, gy, av, shape), bv.shape()));
                     });
}

Var div(const Var& a, const Var& b) {
  const Shape shape = broadcast_shape(a, b, "div");
  Tensor av = a.value(), bv = b.value();
  Tensor y = binary_value(BinaryOp::div, av, bv, shape);
  const Shape a_shape = av.shape();
  return make_output("div", y, {&a, &b}, [y, bv, shape, a_shape](const Tensor& gy, GradSink& sink) {
    Tensor ga = binary_value(BinaryOp::div, gy, bv, shape);  // gy / b
    if (sink.needs(1)) {
      // d(a/b)/db = -(a/b)/b, so gb = -(gy / b) * y
      Tensor gb = binary_value(BinaryOp::mul, ga, y, shape);
      backend_of(gb).affine(gb, gb, -1.0, 0.0);
      sink.add(1, sum_to_shape(gb, bv.shape()));
    }
    if (sink.needs(0)) sink.add(0, sum_to_shape(ga, a_shape));
  });
}

Var affine(const Var& x, double alpha, double beta) {
  Tensor y = Tensor::empty_like(x.value());
  backend_of(y).affine(x.value(), y, alpha, beta);
  return make_output("affine", y, {&x}, [alpha](const Tensor& gy, GradSink& sink) {
    if (alpha == 1.0) return sink.add(0, gy);
    Tensor gx = Tensor::empty_like(gy);
    backend_of(gy).affine(gy, gx, alpha, 0.0);
    sink.add(0, gx);
  });
}

Var pow_scalar(const Var& x, double p) {
  Tensor xv = x.value();
  Tensor y = Tensor::empty_like(xv);
  backend_of(y).pow_scalar(xv, y, p);
  return make_output("pow_scalar", y, {&x}, [xv, p](const Tensor& gy, GradSink& sink) {
    // d x^p = p x^(p-1)
    Tensor d = Tensor::empty_like(xv);
    backend_of(xv).pow_scalar(xv, d, p - 1.0);
    backend_of(xv).affine(d, d, p, 0.0);
    Tensor gx = Tensor::empty_like(xv);
    backend_of(xv).binary(BinaryOp::mul, gy, d, gx);
    sink.add(0, gx);
  });
}

namespace {
// Whether the derivative of op is computed from its output (so backward keeps y, not x).
bool derivative_from_output(UnaryOp op) {
  return op == UnaryOp::exp || op == UnaryOp::sqrt || op == UnaryOp::rsqrt || op == UnaryOp::tanh ||
         op == UnaryOp::sigmoid || op == UnaryOp::reciprocal;
}
}  // namespace

Var unary(UnaryOp op, const Var& x) {
  Tensor y = Tensor::empty_like(x.value());
  backend_of(y).unary(op, x.value(), y);
  const bool from_y = derivative_from_output(op);
  Tensor xv = from_y || op == UnaryOp::neg ? Tensor() : x.value();
  Tensor yv = from_y ? y : Tensor();
  return make_output(unary_op_name(op), y, {&x}, [op, xv, yv](const Tensor& gy, GradSink& sink) {
    Tensor gx = Tensor::empty_like(gy);
    backend_of(gy).unary_backward(op, xv, yv, gy, gx);
    sink.add(0, gx);
  });
}

}  // namespace upcycle
