#pragma once
// A tiny ViT (dense, or with an MoE block) and one training step of it as the trainer takes it:
// stage the host batch to the model's device, forward, cross-entropy (+ the MoE router losses),
// backward, the global gradient norm on the device, one read of [loss, norm^2] on the host, AdamW.
// For tests that count what a warm step allocates and how often the host waits for the device.
#include <memory>
#include <vector>

#include "upcycle/backend/backend.hpp"
#include "upcycle/moe/moe_layer.hpp"
#include "upcycle/moe/router_losses.hpp"
#include "upcycle/nn/vit.hpp"
#include "upcycle/ops/elementwise.hpp"
#include "upcycle/ops/loss.hpp"
#include "upcycle/ops/shape.hpp"
#include "upcycle/train/batch_stager.hpp"
#include "upcycle/train/grad_reducer.hpp"
#include "upcycle/train/optimizer.hpp"

namespace upcycle::testing {

// 28x28 one-channel images in 7x7 patches, width 16, 2 blocks; with moe, block 1 is an MoE layer
// of 4 experts, top-2.
inline nn::ViTConfig tiny_vit_config(bool moe) {
  nn::ViTConfig v;
  v.image_size = 28;
  v.patch_size = 7;
  v.depth = 2;
  v.block.d_model = 16;
  v.block.n_heads = 2;
  v.block.d_ff = 32;
  if (moe) {
    moe::MoeConfig m;
    m.d_model = 16;
    m.d_ff = 32;
    m.num_experts = 4;
    m.top_k = 2;
    v.block.sparse_ffn = moe::moe_ffn_factory(m, nullptr);
    v.moe_blocks = {1};
  }
  return v;
}

// Host batch `i` of `rows` images: N(0, 1) pixels from the Philox stream, labels i + r mod 10.
inline Batch synthetic_batch(std::int64_t rows, std::uint64_t i) {
  Batch b;
  b.inputs = Tensor::empty({rows, 1, 28, 28}, DType::f32, Device::cpu);
  backend_for(Device::cpu).normal(b.inputs, 100 + i, 0, 0.0, 1.0);
  std::vector<std::int64_t> labels(static_cast<std::size_t>(rows));
  for (std::int64_t r = 0; r < rows; ++r) labels[static_cast<std::size_t>(r)] = static_cast<std::int64_t>((i + r) % 10);
  b.targets = Tensor::from_vector(labels, {rows}, Device::cpu);
  b.tokens = rows * 17;
  return b;
}

class TinyVitTrainer {
 public:
  TinyVitTrainer(bool moe, Device device) : rng_(11), model_(tiny_vit_config(moe), rng_), stager_(device) {
    model_.to(device);
    optimizer_ = std::make_unique<AdamW>(model_.named_parameters(), AdamWOptions{});
    params_ = model_.parameters();
    model_.train(true);
  }

  // One step on `host`; returns the loss read back on the host.
  double step(const Batch& host, double lr = 1e-3) {
    optimizer_->zero_grad();
    const Batch b = stager_.stage(host);
    Var loss = cross_entropy(model_.forward(b.inputs), b.targets);
    for (moe::MoeLayer* layer : moe::moe_layers_of(model_.blocks)) {
      const moe::MoeRouting& r = layer->last_routing();
      const std::vector<std::int64_t> c = r.expert_counts.to_vector<std::int64_t>();  // host already
      loss = loss + moe::load_balancing_loss(r.probs, std::vector<double>(c.begin(), c.end()), 0.01) +
             moe::router_z_loss(r.logits, 0.001);
    }
    loss.backward();
    for (moe::MoeLayer* layer : moe::moe_layers_of(model_.blocks)) layer->clear_routing();
    Tensor stats = Tensor::empty({2}, DType::f64, b.inputs.device());
    stats.rows(0, 1).copy_from(loss.value().to(DType::f64));
    stats.rows(1, 2).copy_from(grad_sum_squares_on_device(params_));
    const std::vector<double> s = stats.to_vector<double>();  // the step's one host wait
    optimizer_->step(lr);
    return s[0];
  }

  nn::ViT& model() { return model_; }

 private:
  RngStream rng_;
  nn::ViT model_;
  BatchStager stager_;
  std::unique_ptr<AdamW> optimizer_;
  std::vector<Var> params_;
};

}  // namespace upcycle::testing
