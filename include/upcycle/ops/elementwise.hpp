#pragma once
// Elementwise arithmetic. Binary ops broadcast a smaller operand whose shape is a suffix of the
// other's over the leading dimensions (e.g. [B, T, D] + [D]); its gradient is summed back.
#include "upcycle/autograd/var.hpp"
#include "upcycle/backend/backend.hpp"

namespace upcycle {

Var add(const Var& a, const Var& b);
Var sub(const Var& a, const Var& b);
Var mul(const Var& a, const Var& b);
Var div(const Var& a, const Var& b);
inline Var operator+(const Var& a, const Var& b) { return add(a, b); }
inline Var operator-(const Var& a, const Var& b) { return sub(a, b); }
inline Var operator*(const Var& a, const Var& b) { return mul(a, b); }
inline Var operator/(const Var& a, const Var& b) { return div(a, b); }

// alpha * x + beta
Var affine(const Var& x, double alpha, double beta);
inline Var add_scalar(const Var& x, double s) { return affine(x, 1.0, s); }
inline Var mul_scalar(const Var& x, double s) { return affine(x, s, 0.0); }
Var pow_scalar(const Var& x, double p);

// Any UnaryOp (its derivative lives in the backend's unary_backward).
Var unary(UnaryOp op, const Var& x);
inline Var neg(const Var& x) { return unary(UnaryOp::neg, x); }
inline Var exp(const Var& x) { return unary(UnaryOp::exp, x); }
inline Var log(const Var& x) { return unary(UnaryOp::log, x); }
inline Var sqrt(const Var& x) { return unary(UnaryOp::sqrt, x); }
inline Var square(const Var& x) { return unary(UnaryOp::square, x); }
inline Var tanh(const Var& x) { return unary(UnaryOp::tanh, x); }
inline Var sigmoid(const Var& x) { return unary(UnaryOp::sigmoid, x); }

}  // namespace upcycle
