#pragma once
#include "upcycle/autograd/var.hpp"

namespace upcycle {

enum class GeluApprox { tanh, erf };

Var relu(const Var& x);
Var gelu(const Var& x, GeluApprox approx = GeluApprox::tanh);
Var silu(const Var& x);

}  // namespace upcycle
