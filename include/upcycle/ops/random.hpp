#pragma once
#include "upcycle/autograd/var.hpp"
#include "upcycle/core/rng.hpp"

namespace upcycle {

// Inverted dropout with probability p from the counter-based stream (advances it by numel);
// identity when !training or p == 0.
Var dropout(const Var& x, double p, RngStream& rng, bool training);

}  // namespace upcycle
