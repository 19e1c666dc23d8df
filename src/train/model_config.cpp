#include "model_config.hpp"

#include "upcycle/backend/devices.hpp"

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

std::int64_t expert_ffn_width_from(const Config& cfg) {
  const std::int64_t w = cfg.get_int("moe.expert_ffn_width");
  if (w > 0) return w;
  const std::int64_t f = cfg.get_int("model.ffn_width");
  return cfg.get_string("upcycle.method") == "granular" ? f / cfg.get_int("upcycle.granularity") : f;
}

moe::MoeConfig moe_config_from(const Config& cfg) {
  const nn::TransformerBlockConfig b = block_config_from(cfg);
  moe::MoeConfig m;
  m.d_model = b.d_model;
  m.d_ff = expert_ffn_width_from(cfg);
  m.num_experts = cfg.get_int("moe.num_experts");
  m.top_k = cfg.get_int("moe.top_k");
  m.renormalize = cfg.get_bool("moe.renormalize");
  m.capacity_factor = cfg.get_float("moe.capacity_factor");
  m.shared_expert = cfg.get_bool("moe.shared_expert");
  m.activation = b.activation;
  m.bias = b.bias;
  m.init_std = b.init_std;
  m.out_init_std = b.residual_init_std;
  m.router_std = cfg.get_float("upcycle.router_std");
  moe::validate(m);
  return m;
}

Device model_device_from(const Config& cfg) { return choose_device(cfg.get_string("run.device")).device; }

std::vector<std::int64_t> moe_block_indices_from(const Config& cfg) {
  const std::int64_t depth = cfg.get_int("model.depth");
  const std::string& mode = cfg.get_string("moe.blocks");
  std::vector<std::int64_t> out;
  if (mode == "list") {
    out = cfg.get_int_list("moe.block_list");
  } else {
    for (std::int64_t i = mode == "all" ? 0 : 1; i < depth; i += mode == "all" ? 1 : 2) out.push_back(i);
  }
  return out;
}

namespace {
void apply_moe(const Config& cfg, const TaskOptions& options, nn::TransformerBlockConfig& block,
               std::vector<std::int64_t>& blocks) {
  if (!options.moe) return;
  const moe::MoeConfig m = moe_config_from(cfg);
  UPCYCLE_CHECK(m.d_model == block.d_model, "the MoE layer's d_model ", m.d_model, " differs from the block's ",
                block.d_model);
  block.sparse_ffn = moe::moe_ffn_factory(m, options.expert_parallel);
  blocks = moe_block_indices_from(cfg);
  if (blocks.empty())
    UPCYCLE_USAGE_ERROR("moe.blocks = ", cfg.get_string("moe.blocks"), " selects no block of model.depth = ",
                        cfg.get_int("model.depth"), ": an MoE model needs at least one MoE block");
}
}  // namespace

nn::ViTConfig vit_config_from(const Config& cfg, const TaskOptions& options) {
  nn::ViTConfig v;
  v.image_size = cfg.get_int("model.image_size");
  v.patch_size = cfg.get_int("model.patch_size");
  v.channels = cfg.get_int("model.channels");
  v.num_classes = cfg.get_int("model.num_classes");
  v.depth = cfg.get_int("model.depth");
  v.mean_pool = cfg.get_string("model.pool") == "mean";
  v.block = block_config_from(cfg);
  apply_moe(cfg, options, v.block, v.moe_blocks);
  return v;
}

nn::GPTConfig gpt_config_from(const Config& cfg, const TaskOptions& options) {
  nn::GPTConfig g;
  g.vocab = cfg.get_int("model.vocab_size");
  g.context = cfg.get_int("model.context");
  g.depth = cfg.get_int("model.depth");
  g.tie_embeddings = cfg.get_bool("model.tie_embeddings");
  g.block = block_config_from(cfg);
  apply_moe(cfg, options, g.block, g.moe_blocks);
  return g;
}

}  // namespace upcycle
