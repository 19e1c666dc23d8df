#include "upcycle/nn/transformer_block.hpp"

#include "upcycle/ops/elementwise.hpp"
#include "upcycle/ops/random.hpp"

namespace upcycle::nn {

namespace {
AttentionConfig attention_config(const TransformerBlockConfig& c) {
  AttentionConfig a;
  a.d_model = c.d_model;
  a.n_heads = c.n_heads;
  a.causal = c.causal;
  a.bias = c.bias;
  a.init_std = c.init_std;
  a.out_init_std = c.residual_init_std;
  return a;
}

MlpConfig mlp_config(const TransformerBlockConfig& c) {
  MlpConfig m;
  m.d_model = c.d_model;
  m.d_ff = c.d_ff;
  m.activation = c.activation;
  m.bias = c.bias;
  m.init_std = c.init_std;
  m.out_init_std = c.residual_init_std;
  return m;
}
}  // namespace

TransformerBlock::TransformerBlock(const TransformerBlockConfig& config, RngStream& rng)
    : ln1(config.d_model, config.ln_eps),
      attn(attention_config(config), rng),
      ln2(config.d_model, config.ln_eps),
      config_(config) {
  UPCYCLE_CHECK(config.dropout >= 0.0 && config.dropout < 1.0,
                "transformer block: dropout must be in [0, 1), got ", config.dropout);
  register_module("ln1", ln1);
  register_module("attn", attn);
  register_module("ln2", ln2);
  if (config.sparse_ffn) {
    sparse = config.sparse_ffn(rng);
    UPCYCLE_CHECK(sparse != nullptr, "transformer block: the sparse FFN factory built nothing");
    register_module("moe", *sparse);
  } else {
    mlp = std::make_unique<Mlp>(mlp_config(config), rng);
    register_module("mlp", *mlp);
  }
}

Var TransformerBlock::residual_dropout(const Var& branch, RngStream* rng) const {
  // Skipped entirely when inactive, so that evaluation never touches the RNG stream.
  if (config_.dropout == 0.0 || !training()) return branch;
  UPCYCLE_CHECK(rng != nullptr, "transformer block: dropout ", config_.dropout,
                " while training needs a dropout RngStream");
  return dropout(branch, config_.dropout, *rng, true);
}

Var TransformerBlock::forward(const Var& x, RngStream* dropout_rng) const {
  const Var h = x + residual_dropout(attn.forward(ln1.forward(x)), dropout_rng);
  const Var u = ln2.forward(h);
  if (ffn_input_observer) ffn_input_observer(u.value());
  return h + residual_dropout(sparse ? sparse->apply(u) : mlp->forward(u), dropout_rng);
}

TransformerBlockConfig block_config_at(const TransformerBlockConfig& base,
                                       const std::vector<std::int64_t>& sparse_blocks, std::int64_t i, bool causal) {
  TransformerBlockConfig b = base;
  b.causal = causal;
  bool sparse = false;
  for (std::int64_t m : sparse_blocks) sparse = sparse || m == i;
  if (!sparse) b.sparse_ffn = nullptr;
  return b;
}

}  // namespace upcycle::nn
