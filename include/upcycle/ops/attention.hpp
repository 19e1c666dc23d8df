#pragma once
#include "upcycle/autograd/var.hpp"

namespace upcycle {

// Scaled dot-product attention per head: q [B, H, T, Dh], k/v [B, H, S, Dh] -> [B, H, T, Dh],
// softmax(q k^T / sqrt(Dh)) v; `causal` masks key j > query i + (S - T).
Var scaled_dot_product_attention(const Var& q, const Var& k, const Var& v, bool causal);

}  // namespace upcycle
