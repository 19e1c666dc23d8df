#include "upcycle/train/optimizer.hpp"

#include <cmath>

#include "upcycle/backend/backend.hpp"

namespace upcycle {

AdamW::AdamW(const std::vector<std::pair<std::string, Var>>& named_params, const AdamWOptions& options)
    : options_(options) {
  slots_.reserve(named_params.size());
  for (const auto& [name, p] : named_params) {
    UPCYCLE_CHECK(p.requires_grad(), "AdamW: parameter ", name, " does not require grad");
    slots_.push_back({name, p, p.value().ndim() >= 2, Tensor::zeros_like(p.value()), Tensor::zeros_like(p.value())});
  }
}

void AdamW::step(double lr) {
  ++steps_;
  AdamWStep h;
  h.lr = lr;
  h.beta1 = options_.beta1;
  h.beta2 = options_.beta2;
  h.eps = options_.eps;
  h.step = steps_;
  // One multi-tensor update per device (parameters of one model share a device).
  for (Device device : {Device::cpu, Device::cuda}) {
    batch_.clear();
    for (auto& s : slots_) {
      const Tensor& g = s.param.grad();
      if (!g.defined() || s.param.device() != device) continue;
      batch_.push_back({s.param.value(), g, s.m, s.v, s.decay ? options_.weight_decay : 0.0});
    }
    if (!batch_.empty()) backend_for(device).adamw(batch_, h);
  }
}

void AdamW::zero_grad() {
  for (auto& s : slots_) s.param.zero_grad();
}

double warmup_cosine_lr(std::int64_t step, std::int64_t total, std::int64_t warmup, double lr, double min_lr) {
  if (warmup > 0 && step < warmup) return lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  if (total <= warmup) return lr;
  const double progress = std::min(1.0, static_cast<double>(step - warmup) / static_cast<double>(total - warmup));
  return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(M_PI * progress));
}

}  // namespace upcycle
