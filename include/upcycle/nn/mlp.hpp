#pragma once
#include "upcycle/core/rng.hpp"
#include "upcycle/nn/linear.hpp"

namespace upcycle::nn {

// Activation between fc1 and fc2.
// SwiGLU hook: add `swiglu` here; Mlp then builds fc1 as [2F, D] (gate rows 0..F-1, up rows
// F..2F-1) and forward() computes silu(gate) * up before fc2. Nothing else has to change.
enum class MlpActivation { gelu_tanh, gelu_erf, relu };

struct MlpConfig {
  std::int64_t d_model = 0;
  std::int64_t d_ff = 0;
  MlpActivation activation = MlpActivation::gelu_tanh;
  bool bias = true;
  double init_std = 0.02;      // fc1
  double out_init_std = 0.02;  // fc2 (feeds the residual stream)
};

// fc2(act(fc1(x))). Parameters: "fc1/weight" [F, D], "fc1/bias" [F], "fc2/weight" [D, F],
// "fc2/bias" [D]. The MoE experts copy these tensors, so keep the layout.
class Mlp : public Module {
 public:
  Mlp(const MlpConfig& config, RngStream& rng);
  Var forward(const Var& x) const;  // x [..., D] -> [..., D]
  const MlpConfig& config() const { return config_; }

  Linear fc1;
  Linear fc2;

 private:
  MlpConfig config_;
};

// The activation alone (shared with the MoE experts).
Var apply_activation(MlpActivation activation, const Var& x);

}  // namespace upcycle::nn
