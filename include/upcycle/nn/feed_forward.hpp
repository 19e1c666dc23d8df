#pragma once
// The FFN branch of a transformer block, as the block sees it: u [..., D] -> [..., D]. The dense Mlp
// implements it, and so does the MoE layer (in the moe layer, above nn): the block holds whichever
// its config's factory builds, so nn never names the MoE layer.
#include <functional>
#include <memory>

#include "upcycle/core/rng.hpp"
#include "upcycle/nn/module.hpp"

namespace upcycle::nn {

class FeedForward : public Module {
 public:
  virtual Var apply(const Var& u) = 0;
};

// Builds a block's sparse FFN from the block's initialisation stream (drawn after the attention
// weights, where the dense Mlp would draw).
using FeedForwardFactory = std::function<std::unique_ptr<FeedForward>(RngStream& rng)>;

}  // namespace upcycle::nn
