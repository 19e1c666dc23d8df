#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "upcycle/core/rng.hpp"
#include "upcycle/nn/attention.hpp"
#include "upcycle/nn/feed_forward.hpp"
#include "upcycle/nn/layer_norm.hpp"
#include "upcycle/nn/mlp.hpp"
#include "upcycle/nn/module_list.hpp"

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
  // A sparse FFN (the MoE layer: moe::moe_ffn_factory): when set, the block registers what it
  // builds under "moe" in place of the dense Mlp under "mlp".
  FeedForwardFactory sparse_ffn;
};

// Pre-LN block: h = x + attn(ln1(x)); y = h + ffn(ln2(h)), ffn = the dense Mlp or the MoE layer.
// Parameters: "ln1/...", "attn/qkv/...", "attn/out/...", "ln2/...", then either "mlp/fc1/...",
// "mlp/fc2/..." (dense) or the sparse FFN's under "moe/" ("moe/router/weight", "moe/experts/w1", ...
// for the MoE layer, see moe_layer.hpp).
class TransformerBlock : public Module {
 public:
  TransformerBlock(const TransformerBlockConfig& config, RngStream& rng);
  // x [B, T, D] -> [B, T, D]. `dropout_rng` is needed only when training with dropout > 0.
  Var forward(const Var& x, RngStream* dropout_rng = nullptr) const;
  const TransformerBlockConfig& config() const { return config_; }

  LayerNorm ln1;
  MultiHeadAttention attn;
  LayerNorm ln2;
  std::unique_ptr<Mlp> mlp;             // dense FFN (null in a sparse block)
  std::unique_ptr<FeedForward> sparse;  // sparse FFN, registered as "moe" (null in a dense block)
  bool is_sparse() const { return sparse != nullptr; }

  // Called by forward with the FFN input u = ln2(h) [B, T, D] (empty = none). Upcycling's
  // calibration pass records the tokens that the future experts will see through it.
  std::function<void(const Tensor& ffn_input)> ffn_input_observer;

 private:
  Var residual_dropout(const Var& branch, RngStream* rng) const;
  TransformerBlockConfig config_;
};

// The config of block i of a model: `base` with the causal flag set, and the sparse FFN kept only
// when i is one of `sparse_blocks`.
TransformerBlockConfig block_config_at(const TransformerBlockConfig& base,
                                       const std::vector<std::int64_t>& sparse_blocks, std::int64_t i, bool causal);

}  // namespace upcycle::nn
