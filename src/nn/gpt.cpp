#include "upcycle/nn/gpt.hpp"

#include "upcycle/nn/init.hpp"
#include "upcycle/ops/elementwise.hpp"
#include "upcycle/ops/index.hpp"
#include "upcycle/ops/linalg.hpp"
#include "upcycle/ops/shape.hpp"

namespace upcycle::nn {


GPT::GPT(const GPTConfig& config, RngStream& rng) : ln_f(config.block.d_model, config.block.ln_eps), config_(config) {
  UPCYCLE_CHECK(config.depth >= 1 && config.context >= 1 && config.vocab >= 2, "bad GPT sizes");
  const std::int64_t d = config.block.d_model;
  tok_embed = normal_parameter({config.vocab, d}, config.block.init_std, rng);
  pos_embed = normal_parameter({config.context, d}, config.block.init_std, rng);
  for (std::int64_t i = 0; i < config.depth; ++i)
    blocks.push_back(std::make_unique<TransformerBlock>(block_config_at(config.block, config.moe_blocks, i, true), rng));
  if (!config.tie_embeddings) head = std::make_unique<Linear>(d, config.vocab, rng, false, config.block.init_std);
  register_parameter("tok_embed", tok_embed);
  register_parameter("pos_embed", pos_embed);
  register_module("blocks", blocks);
  register_module("ln_f", ln_f);
  if (head) register_module("head", *head);
}

Var GPT::forward(const Tensor& tokens, RngStream* dropout_rng) const { return logits(features(tokens, dropout_rng)); }

Var GPT::logits(const Var& x) const {
  return head ? head->forward(x) : matmul(x, tok_embed, false, true);  // [B, T, V]
}

Var GPT::features(const Tensor& tokens, RngStream* dropout_rng) const {
  UPCYCLE_CHECK(tokens.ndim() == 2 && tokens.dim(1) <= config_.context, "GPT expects tokens [B, T<=",
                config_.context, "], got ", describe(tokens));
  const std::int64_t t = tokens.dim(1);
  Var x = embedding(tok_embed, tokens) + slice(pos_embed, 0, 0, t);  // [B, T, D] + [T, D]
  for (std::size_t i = 0; i < blocks.size(); ++i) x = blocks[i].forward(x, dropout_rng);
  return ln_f.forward(x);
}

}  // namespace upcycle::nn
