#pragma once
#include "upcycle/autograd/var.hpp"

namespace upcycle {

Var sum(const Var& x, int axis, bool keepdim = false);
Var mean(const Var& x, int axis, bool keepdim = false);
Var sum_all(const Var& x);   // shape [1]
Var mean_all(const Var& x);  // shape [1]

// Sums a gradient shaped like `full` down to `target` (a suffix of `full`), the inverse of
// suffix broadcasting; returns g itself when the shapes agree.
Tensor sum_to_shape(const Tensor& g, const Shape& target);

}  // namespace upcycle
