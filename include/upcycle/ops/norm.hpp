#pragma once
#include "upcycle/autograd/var.hpp"

namespace upcycle {

// Over the last dim; gamma/beta [D] or undefined.
Var layer_norm(const Var& x, const Var& gamma, const Var& beta, double eps = 1e-5);
Var rms_norm(const Var& x, const Var& gamma, double eps = 1e-6);

}  // namespace upcycle
