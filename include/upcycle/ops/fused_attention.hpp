#pragma once
#include "upcycle/autograd/var.hpp"

namespace upcycle {

// Multi-head attention straight from a fused q/k/v projection, as one autograd op:
// qkv [B, T, 3 * D] laid out as [B, T, 3, H, Dh] (the output of a Linear(D, 3D)) ->
// [B, T, D] with the heads merged as [B, T, H, Dh], i.e. the same values as
//   fused = permute(reshape(qkv, {B, T, 3, H, Dh}), {2, 0, 3, 1, 4});
//   q, k, v = split(fused, {1, 1, 1}, 0) (each reshaped to [B, H, T, Dh]);
//   reshape(permute(scaled_dot_product_attention(q, k, v, causal), {0, 2, 1, 3}), {B, T, D})
// but with one permute in and one out (forward and backward), q / k / v as views of the permuted
// block instead of three copies, and the q / k / v gradients written into one buffer instead of
// three zero-filled full-size tensors that are then added.
Var packed_qkv_attention(const Var& qkv, std::int64_t heads, bool causal);

}  // namespace upcycle
