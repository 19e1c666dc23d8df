#include "upcycle/nn/layer_norm.hpp"

#include "upcycle/nn/init.hpp"
#include "upcycle/ops/norm.hpp"

namespace upcycle::nn {

LayerNorm::LayerNorm(std::int64_t dim, double eps) : eps_(eps) {
  UPCYCLE_CHECK(dim > 0, "LayerNorm: dim must be positive, got ", dim);
  UPCYCLE_CHECK(eps > 0.0, "LayerNorm: eps must be positive, got ", eps);
  gamma = constant_parameter({dim}, 1.0);
  beta = constant_parameter({dim}, 0.0);
  register_parameter("gamma", gamma);
  register_parameter("beta", beta);
}

Var LayerNorm::forward(const Var& x) const { return layer_norm(x, gamma, beta, eps_); }

}  // namespace upcycle::nn
