#pragma once
// The pieces of Expert-Ensemble Self-Distillation that belong to one MoE layer (docs/methods.md
// section 5): the teacher's dense expert ensemble, the distillation loss and its entropy weights.
#include "upcycle/moe/moe_layer.hpp"

namespace upcycle::moe {

// The dense ensemble of `layer` on the rows of u [T, D]:
//   y(u) = sum over ALL E experts of p_e(u) E_e(u)   (+ S(u) with a shared expert)
// with p = softmax(u W_r^T), the router's full distribution (no top-k, no selection bias). No
// graph is recorded. Collective over the layer's expert-parallel group (every rank calls it):
//   1. all_gather of the group's token rows (each rank's rows padded to the largest count),
//   2. every rank runs its E / P local experts on all P T rows and weights them by their p_e,
//   3. reduce_scatter (sum) of the [P T, D] partial sums, so each rank gets its own T rows back.
// Per rank and call that moves (P - 1) T D values in and (P - 1) T D out; with P = 1 nothing.
Tensor dense_ensemble(const MoeLayer& layer, const Tensor& u);

// Per-token weights w_t = H(p_t) / log E from router logits [T, E] (the routing entropy,
// normalised to [0, 1]); no graph. With E = 1 every weight is 1.
Tensor entropy_weights(const Tensor& logits);

// mean over the T rows of w_t ||s_t - target_t||^2, for s and target [..., C] viewed as [T, C]
// (weights [T], or undefined = 1). Differentiable in `student` only. Shape [1].
Var distillation_loss(const Var& student, const Tensor& target, const Tensor& weights = Tensor());

}  // namespace upcycle::moe
