#pragma once
#include "upcycle/core/rng.hpp"
#include "upcycle/nn/feed_forward.hpp"
#include "upcycle/nn/linear.hpp"

namespace upcycle::nn {

// Activation between fc1 and fc2. swiglu is gated (Shazeer 2020): fc1 is [2F, D], its rows
// 0..F-1 the gate and F..2F-1 the up-projection, and the activation is silu(gate) * up.
enum class MlpActivation { gelu_tanh, gelu_erf, relu, swiglu };

// Rows of fc1 per hidden unit: 2 for gated activations, 1 otherwise.
inline std::int64_t fc1_rows_per_unit(MlpActivation a) { return a == MlpActivation::swiglu ? 2 : 1; }

struct MlpConfig {
  std::int64_t d_model = 0;
  std::int64_t d_ff = 0;
  MlpActivation activation = MlpActivation::gelu_tanh;
  bool bias = true;
  double init_std = 0.02;      // fc1
  double out_init_std = 0.02;  // fc2 (feeds the residual stream)
};

// fc2(act(fc1(x))). Parameters: "fc1/weight" [F, D] ([2F, D] for swiglu), "fc1/bias", "fc2/weight" [D, F],
// "fc2/bias" [D]. The MoE experts copy these tensors, so keep the layout.
class Mlp : public FeedForward {
 public:
  Mlp(const MlpConfig& config, RngStream& rng);
  Var forward(const Var& x) const;  // x [..., D] -> [..., D]
  Var apply(const Var& u) override { return forward(u); }
  const MlpConfig& config() const { return config_; }

  Linear fc1;
  Linear fc2;

 private:
  MlpConfig config_;
};

// The activation alone (shared with the MoE experts): x [..., F] -> [..., F], or for swiglu
// x [..., 2F] -> [..., F].
Var apply_activation(MlpActivation activation, const Var& x);

}  // namespace upcycle::nn
