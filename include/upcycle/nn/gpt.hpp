#pragma once
// Byte-level GPT: token (256 bytes) and learned positional embeddings, causal pre-LN blocks, a final
// LayerNorm, and a head that is either its own Linear or the token embedding transposed (tied).
// Parameters: "tok_embed" [V, D], "pos_embed" [context, D], "blocks/NN/...", "ln_f/...",
// "head/weight" [V, D] (absent when tied).
#include <memory>
#include <vector>

#include "upcycle/nn/layer_norm.hpp"
#include "upcycle/nn/linear.hpp"
#include "upcycle/nn/module_list.hpp"
#include "upcycle/nn/transformer_block.hpp"

namespace upcycle::nn {

struct GPTConfig {
  std::int64_t vocab = 256, context = 128, depth = 4;
  bool tie_embeddings = true;
  TransformerBlockConfig block;  // causal is forced on
  // MoE: the 0-based indices of the blocks whose FFN is block.sparse_ffn (ignored when it is not set).
  std::vector<std::int64_t> moe_blocks;
};

class GPT : public Module {
 public:
  GPT(const GPTConfig& config, RngStream& rng);
  // tokens [B, T] (i64, T <= context) -> logits [B, T, V]
  Var forward(const Tensor& tokens, RngStream* dropout_rng = nullptr) const;
  // The hidden states the head reads (after the final LayerNorm), [B, T, D].
  Var features(const Tensor& tokens, RngStream* dropout_rng = nullptr) const;
  // features -> logits [B, T, V] (the head, or the tied embedding transposed).
  Var logits(const Var& features) const;
  const GPTConfig& config() const { return config_; }

  Var tok_embed;
  Var pos_embed;
  ModuleList<TransformerBlock> blocks;
  LayerNorm ln_f;
  std::unique_ptr<Linear> head;  // null when tied

 private:
  GPTConfig config_;
};

}  // namespace upcycle::nn
