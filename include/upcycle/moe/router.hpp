#pragma once
// The top-k softmax router of an MoE layer (docs/methods.md notation):
//   logits = x W_r^T            [T, E]      W_r: "weight" [E, D], N(0, init_std), no bias
//   probs  = softmax(logits)    [T, E]
//   selected experts = top-k over e of (probs[t, e] + selection_bias[e])   (bias optional)
//   gates  = probs at the selected experts, renormalised to sum 1 over the k when configured.
// The selection bias is the auxiliary-loss-free bias (DeepSeek-V3): a plain tensor that another
// component updates between steps. It changes which experts are picked, never the gate values, and
// no gradient flows through the selection itself (gates are differentiable in probs).
#include <cstdint>

#include "upcycle/core/rng.hpp"
#include "upcycle/nn/module.hpp"

namespace upcycle::moe {

struct RouterConfig {
  std::int64_t d_model = 0;
  std::int64_t num_experts = 0;
  std::int64_t top_k = 2;
  bool renormalize = true;  // gates sum to 1 over the k selected experts
  double init_std = 0.02;
};

struct Routing {
  Var logits;      // [T, E]
  Var probs;       // [T, E]
  Tensor indices;  // [T, k] i64: selected experts, best first (ties: lower id first)
  Var gates;       // [T, k]: gate of each selected expert (differentiable)
};

// Parameters: "weight" [E, D] (float32 at construction).
class Router : public nn::Module {
 public:
  Router(const RouterConfig& config, RngStream& rng);
  // x [T, D]; selection_bias [E] (any floating dtype) or undefined.
  Routing forward(const Var& x, const Tensor& selection_bias = Tensor()) const;
  const RouterConfig& config() const { return config_; }

  Var weight;

 private:
  RouterConfig config_;
};

}  // namespace upcycle::moe
