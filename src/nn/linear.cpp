#include "upcycle/nn/linear.hpp"

#include "upcycle/nn/init.hpp"
#include "upcycle/ops/linalg.hpp"

namespace upcycle::nn {

Linear::Linear(std::int64_t in_features, std::int64_t out_features, RngStream& rng, bool has_bias,
               double init_std) {
  UPCYCLE_CHECK(in_features > 0 && out_features > 0, "Linear: features must be positive, got in = ",
                in_features, ", out = ", out_features);
  weight = normal_parameter({out_features, in_features}, init_std, rng);
  register_parameter("weight", weight);
  if (has_bias) {
    bias = constant_parameter({out_features}, 0.0);
    register_parameter("bias", bias);
  }
}

Var Linear::forward(const Var& x) const { return linear(x, weight, bias); }

}  // namespace upcycle::nn
