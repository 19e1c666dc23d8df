#include "upcycle/nn/mlp.hpp"

#include "upcycle/ops/activation.hpp"
#include "upcycle/ops/elementwise.hpp"
#include "upcycle/ops/shape.hpp"

namespace upcycle::nn {

namespace {
const MlpConfig& checked(const MlpConfig& c) {
  UPCYCLE_CHECK(c.d_model > 0 && c.d_ff > 0, "mlp: d_model and d_ff must be positive, got ",
                c.d_model, " and ", c.d_ff);
  return c;
}
}  // namespace

Var apply_activation(MlpActivation activation, const Var& x) {
  switch (activation) {
    case MlpActivation::gelu_tanh: return gelu(x, GeluApprox::tanh);
    case MlpActivation::gelu_erf: return gelu(x, GeluApprox::erf);
    case MlpActivation::relu: return relu(x);
    case MlpActivation::swiglu: {
      const std::int64_t f = x.dim(-1) / 2;
      const auto halves = split(x, {f, f}, -1);
      return mul(silu(halves[0]), halves[1]);
    }
  }
  UPCYCLE_THROW("unknown MLP activation ", static_cast<int>(activation));
}

Mlp::Mlp(const MlpConfig& config, RngStream& rng)
    : fc1(checked(config).d_model, config.d_ff * fc1_rows_per_unit(config.activation), rng, config.bias,
          config.init_std),
      fc2(config.d_ff, config.d_model, rng, config.bias, config.out_init_std),
      config_(config) {
  register_module("fc1", fc1);
  register_module("fc2", fc2);
}

Var Mlp::forward(const Var& x) const {
  return fc2.forward(apply_activation(config_.activation, fc1.forward(x)));
}

}  // namespace upcycle::nn
