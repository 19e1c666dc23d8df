#pragma once
#include "upcycle/core/rng.hpp"
#include "upcycle/nn/attention.hpp"
#include "upcycle/nn/layer_norm.hpp"
#include "upcycle/nn/mlp.hpp"

namespace upcycle::nn {

struct TransformerBlockConfig {
  std::int64_t d_model = 0;
  std::int64_t n_heads = 0;
  std::int64_t d_ff = 0;
  bool causal = false;
  MlpActivation activation = MlpActivation::gelu_tanh;
  bool bias = true;
  double ln_eps = 1e-5;
  double init_std = 0.02;
  // attn/out and mlp/fc2 write into the residual stream; GPT-2 uses init_std / sqrt(2 n_layers).
  double residual_init_std = 0.02;
  // Dropout on each residual branch's output while training (0 = off).
  double dropout = 0.0;
};

// Pre-LN block: h = x + attn(ln1(x)); y = h + mlp(ln2(h)).
// Parameters: "ln1/...", "attn/qkv/...", "attn/out/...", "ln2/...", "mlp/fc1/...", "mlp/fc2/...".
class TransformerBlock : public Module {
 public:
  TransformerBlock(const TransformerBlockConfig& config, RngStream& rng);
  // x [B, T, D] -> [B, T, D]. `dropout_rng` is needed only when training with dropout > 0.
  Var forward(const Var& x, RngStream* dropout_rng = nullptr) const;
  const TransformerBlockConfig& config() const { return config_; }

  LayerNorm ln1;
  MultiHeadAttention attn;
  LayerNorm ln2;
  Mlp mlp;

 private:
  Var residual_dropout(const Var& branch, RngStream* rng) const;
  TransformerBlockConfig config_;
};

}  // namespace upcycle::nn
