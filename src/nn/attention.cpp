#include "upcycle/nn/attention.hpp"

#include "upcycle/ops/fused_attention.hpp"

namespace upcycle::nn {

namespace {
const AttentionConfig& checked(const AttentionConfig& c) {
  UPCYCLE_CHECK(c.d_model > 0 && c.n_heads > 0 && c.d_model % c.n_heads == 0,
                "attention: d_model (", c.d_model, ") must be a positive multiple of n_heads (",
                c.n_heads, ")");
  return c;
}
}  // namespace

MultiHeadAttention::MultiHeadAttention(const AttentionConfig& config, RngStream& rng)
    : qkv(checked(config).d_model, 3 * config.d_model, rng, config.bias, config.init_std),
      out(config.d_model, config.d_model, rng, config.bias, config.out_init_std),
      config_(config) {
  register_module("qkv", qkv);
  register_module("out", out);
}

Var MultiHeadAttention::forward(const Var& x) const {
  const std::int64_t D = config_.d_model, H = config_.n_heads;
  UPCYCLE_CHECK(x.shape().ndim() == 3 && x.dim(2) == D, "attention: expected input [B, T, ", D,
                "], got ", x.shape().str());
  // The fused qkv output [B, T, 3D] goes to attention as it is: the op reads q, k, v per head
  // and returns [B, T, D], with no split copies (same values and gradients as splitting).
  const Var y = packed_qkv_attention(qkv.forward(x), H, config_.causal);
  return out.forward(y);
}

}  // namespace upcycle::nn
