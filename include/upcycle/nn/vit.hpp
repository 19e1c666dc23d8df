#pragma once
// Vision Transformer: non-overlapping patches flattened and projected, a class token, learned
// positional embeddings, pre-LN blocks, a final LayerNorm and a linear head on the class token.
// Parameters: "patch_embed/...", "cls_token" [D], "pos_embed" [1 + N, D], "blocks/NN/...",
// "ln_f/...", "head/...".
#include <memory>
#include <vector>

#include "upcycle/nn/layer_norm.hpp"
#include "upcycle/nn/linear.hpp"
#include "upcycle/nn/module_list.hpp"
#include "upcycle/nn/transformer_block.hpp"

namespace upcycle::nn {

struct ViTConfig {
  std::int64_t image_size = 28, patch_size = 4, channels = 1, num_classes = 10;
  std::int64_t depth = 4;
  bool mean_pool = false;  // classify from the mean of all tokens instead of the class token
  TransformerBlockConfig block;  // d_model, n_heads, d_ff, activation, dropout, init; causal is off
  // MoE: the 0-based indices of the blocks whose FFN is block.sparse_ffn (ignored when it
  // is not set; every block is dense then). The other blocks are dense.
  std::vector<std::int64_t> moe_blocks;
  std::int64_t num_patches() const { return (image_size / patch_size) * (image_size / patch_size); }
  std::int64_t patch_dim() const { return channels * patch_size * patch_size; }
};

class ViT : public Module {
 public:
  ViT(const ViTConfig& config, RngStream& rng);
  // images [B, C, H, W] (f32) -> logits [B, num_classes] = head(features(images)).
  Var forward(const Tensor& images, RngStream* dropout_rng = nullptr) const;
  // The image embedding the head reads: the final LayerNorm of the class token (or of the mean
  // token with mean_pool), [B, D]. Few-shot probes and EESD's embedding target use it.
  Var features(const Tensor& images, RngStream* dropout_rng = nullptr) const;
  // The token sequence entering block 0: [B, 1 + N, D] (used by calibration later).
  Var embed(const Tensor& images) const;
  const ViTConfig& config() const { return config_; }

  Linear patch_embed;
  Var cls_token;
  Var pos_embed;
  ModuleList<TransformerBlock> blocks;
  LayerNorm ln_f;
  Linear head;

 private:
  ViTConfig config_;
};

// [B, C, H, W] -> [B, N, C*p*p], patches in row-major order, each flattened as (c, py, px).
Tensor patchify(const Tensor& images, std::int64_t patch_size);

}  // namespace upcycle::nn
