#pragma once
#include "upcycle/autograd/var.hpp"

namespace upcycle {

// y[n, :] = scale[n] * x[n, :] for x [N, D], scale [N] (differentiable in both). The elementwise
// ops broadcast a suffix only ([D] over [N, D]); this is the per-row counterpart (e.g. MoE gates
// times expert outputs, or rows divided by their sums).
Var scale_rows(const Var& x, const Var& scale);

}  // namespace upcycle
