#include "upcycle/nn/vit.hpp"

#include "upcycle/backend/backend.hpp"
#include "upcycle/nn/init.hpp"
#include "upcycle/ops/elementwise.hpp"
#include "upcycle/ops/reduce.hpp"
#include "upcycle/ops/shape.hpp"

namespace upcycle::nn {


Tensor patchify(const Tensor& images, std::int64_t p) {
  UPCYCLE_CHECK(images.ndim() == 4, "ViT input must be [B, C, H, W], got ", describe(images));
  const std::int64_t b = images.dim(0), c = images.dim(1), h = images.dim(2), w = images.dim(3);
  UPCYCLE_CHECK(h % p == 0 && w % p == 0, "image ", h, "x", w, " is not divisible into ", p, "x", p, " patches");
  // [B, C, H/p, p, W/p, p] -> [B, H/p, W/p, C, p, p]
  const Tensor v = images.reshape({b, c, h / p, p, w / p, p});
  Tensor out = Tensor::empty({b, h / p, w / p, c, p, p}, images.dtype(), images.device());
  const int perm[6] = {0, 2, 4, 1, 3, 5};
  backend_of(images).permute(v, out, perm);
  return out.reshape({b, (h / p) * (w / p), c * p * p});
}

ViT::ViT(const ViTConfig& config, RngStream& rng)
    : patch_embed(config.patch_dim(), config.block.d_model, rng, true, config.block.init_std),
      ln_f(config.block.d_model, config.block.ln_eps),
      head(config.block.d_model, config.num_classes, rng, true, config.block.init_std),
      config_(config) {
  UPCYCLE_CHECK(config.image_size % config.patch_size == 0, "image_size ", config.image_size,
                " is not a multiple of patch_size ", config.patch_size);
  UPCYCLE_CHECK(config.depth >= 1, "ViT depth must be >= 1");
  const std::int64_t d = config.block.d_model;
  cls_token = normal_parameter({d}, config.block.init_std, rng);
  pos_embed = normal_parameter({1 + config.num_patches(), d}, config.block.init_std, rng);
  for (std::int64_t i = 0; i < config.depth; ++i)
    blocks.push_back(std::make_unique<TransformerBlock>(block_config_at(config.block, config.moe_blocks, i, false), rng));
  register_module("patch_embed", patch_embed);
  register_parameter("cls_token", cls_token);
  register_parameter("pos_embed", pos_embed);
  register_module("blocks", blocks);
  register_module("ln_f", ln_f);
  register_module("head", head);
}

Var ViT::embed(const Tensor& images) const {
  UPCYCLE_CHECK(images.ndim() == 4 && images.dim(1) == config_.channels && images.dim(2) == config_.image_size &&
                    images.dim(3) == config_.image_size,
                "ViT expects images [B, ", config_.channels, ", ", config_.image_size, ", ", config_.image_size,
                "], got ", describe(images));
  const std::int64_t b = images.dim(0), d = config_.block.d_model;
  const Var patches = patch_embed.forward(Var(patchify(images, config_.patch_size)));  // [B, N, D]
  // The class token broadcast over the batch: zeros [B, 1, D] + cls [D] keeps its gradient summed.
  const Var cls = Var(Tensor::zeros({b, 1, d}, images.dtype(), images.device())) + cls_token;
  return concat({cls, patches}, 1) + pos_embed;
}

Var ViT::features(const Tensor& images, RngStream* dropout_rng) const {
  Var x = embed(images);
  for (std::size_t i = 0; i < blocks.size(); ++i) x = blocks[i].forward(x, dropout_rng);
  x = ln_f.forward(config_.mean_pool ? mean(x, 1, true) : slice(x, 1, 0, 1));  // [B, 1, D]
  return reshape(x, {images.dim(0), config_.block.d_model});
}

Var ViT::forward(const Tensor& images, RngStream* dropout_rng) const {
  return head.forward(features(images, dropout_rng));
}

}  // namespace upcycle::nn
