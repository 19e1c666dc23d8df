#pragma once
#include "upcycle/core/rng.hpp"
#include "upcycle/nn/module.hpp"

namespace upcycle::nn {

// y = x W^T + b over the last dim. weight [out, in] ~ N(0, init_std), bias [out] = 0 (or none).
// Parameters: "weight", "bias".
class Linear : public Module {
 public:
  Linear(std::int64_t in_features, std::int64_t out_features, RngStream& rng, bool bias = true,
         double init_std = 0.02);
  Var forward(const Var& x) const;  // x [..., in] -> [..., out]

  std::int64_t in_features() const { return weight.dim(1); }
  std::int64_t out_features() const { return weight.dim(0); }

  Var weight;
  Var bias;  // undefined when built without bias
};

}  // namespace upcycle::nn
