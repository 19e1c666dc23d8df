#include "upcycle/nn/attention.hpp"

#include "upcycle/ops/attention.hpp"
#include "upcycle/ops/shape.hpp"

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
  const std::int64_t D = config_.d_model, H = config_.n_heads, Dh = head_dim();
  UPCYCLE_CHECK(x.shape().ndim() == 3 && x.dim(2) == D, "attention: expected input [B, T, ", D,
                "], got ", x.shape().str());
  const std::int64_t B = x.dim(0), T = x.dim(1);
  // [B, T, 3D] viewed as [B, T, 3, H, Dh], then [3, B, H, T, Dh] so q, k, v are contiguous
  // [B, H, T, Dh] blocks for the per-head attention.
  Var fused = permute(reshape(qkv.forward(x), {B, T, 3, H, Dh}), {2, 0, 3, 1, 4});
  std::vector<Var> parts = split(fused, {1, 1, 1}, 0);
  const Shape head_shape{B, H, T, Dh};
  Var y = scaled_dot_product_attention(reshape(parts[0], head_shape), reshape(parts[1], head_shape),
                                       reshape(parts[2], head_shape), config_.causal);
  // Merge heads back: [B, H, T, Dh] -> [B, T, H, Dh] -> [B, T, D].
  y = reshape(permute(y, {0, 2, 1, 3}), {B, T, D});
  return out.forward(y);
}

}  // namespace upcycle::nn
