// Activations are unary ops of the backend; unary() keeps x (their derivatives read the input).
#include "upcycle/ops/activation.hpp"

#include "upcycle/ops/elementwise.hpp"

namespace upcycle {

Var relu(const Var& x) { return unary(UnaryOp::relu, x); }

Var gelu(const Var& x, GeluApprox approx) {
  return unary(approx == GeluApprox::tanh ? UnaryOp::gelu_tanh : UnaryOp::gelu_erf, x);
}

Var silu(const Var& x) { return unary(UnaryOp::silu, x); }

}  // namespace upcycle
