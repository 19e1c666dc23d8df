#pragma once
#include "upcycle/autograd/var.hpp"

namespace upcycle {

// a [..., m, k] (or [..., k, m] with trans_a) times b: either a matrix [k, n] ([n, k] with
// trans_b) shared over a's leading dims, or a batch with a's leading dims.
Var matmul(const Var& a, const Var& b, bool trans_a = false, bool trans_b = false);

// y = x W^T + bias; x [..., in], w [out, in], bias [out] or undefined.
Var linear(const Var& x, const Var& w, const Var& bias = Var());

}  // namespace upcycle
