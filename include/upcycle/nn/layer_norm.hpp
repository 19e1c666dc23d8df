#pragma once
#include "upcycle/nn/module.hpp"

namespace upcycle::nn {

// LayerNorm over the last dim with affine gamma (ones) and beta (zeros).
// Parameters: "gamma", "beta".
class LayerNorm : public Module {
 public:
  explicit LayerNorm(std::int64_t dim, double eps = 1e-5);
  Var forward(const Var& x) const;  // x [..., dim]
  double eps() const { return eps_; }

  Var gamma;
  Var beta;

 private:
  double eps_;
};

}  // namespace upcycle::nn
