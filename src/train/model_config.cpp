#include "model_config.hpp"

#include <cmath>

namespace upcycle {

nn::TransformerBlockConfig block_config_from(const Config& cfg) {
  nn::TransformerBlockConfig b;
  b.d_model = cfg.get_int("model.width");
  b.n_heads = cfg.get_int("model.heads");
  b.d_ff = cfg.get_int("model.ffn_width");
  static const std::pair<const char*, nn::MlpActivation> kActivations[] = {
      {"gelu", nn::MlpActivation::gelu_tanh}, {"gelu_erf", nn::MlpActivation::gelu_erf}, {"swiglu", nn::MlpActivation::swiglu}};
  const std::string& act = cfg.get_string("model.ffn_activation");
  bool found = false;
  for (const auto& [name, value] : kActivations)
    if (act == name) b.activation = value, found = true;
  if (!found) UPCYCLE_USAGE_ERROR("model.ffn_activation = ", act, " has no implementation");
  b.dropout = cfg.get_float("model.dropout");
  b.ln_eps = cfg.get_float("model.ln_eps");
  b.init_std = cfg.get_float("model.init_std");
  // Residual-writing projections scaled by 1/sqrt(2 depth) (GPT-2), so the residual stream's
  // variance does not grow with depth at initialisation.
  b.residual_init_std = b.init_std / std::sqrt(2.0 * static_cast<double>(cfg.get_int("model.depth")));
  return b;
}

nn::ViTConfig vit_config_from(const Config& cfg) {
  nn::ViTConfig v;
  v.image_size = cfg.get_int("model.image_size");
  v.patch_size = cfg.get_int("model.patch_size");
  v.channels = cfg.get_int("model.channels");
  v.num_classes = cfg.get_int("model.num_classes");
  v.depth = cfg.get_int("model.depth");
  v.mean_pool = cfg.get_string("model.pool") == "mean";
  v.block = block_config_from(cfg);
  return v;
}

nn::GPTConfig gpt_config_from(const Config& cfg) {
  nn::GPTConfig g;
  g.vocab = cfg.get_int("model.vocab_size");
  g.context = cfg.get_int("model.context");
  g.depth = cfg.get_int("model.depth");
  g.tie_embeddings = cfg.get_bool("model.tie_embeddings");
  g.block = block_config_from(cfg);
  return g;
}

}  // namespace upcycle
