// Auxiliary-loss-free load balancing (DeepSeek-V3): a per-expert selection bias updated from loads.
#include <vector>

#include "router_losses_common.hpp"
#include "upcycle/backend/backend.hpp"
#include "upcycle/moe/router_losses.hpp"

namespace upcycle::moe {

AuxFreeBias::AuxFreeBias(std::int64_t num_experts, double update_rate, DType dtype, Device device)
    : num_experts_(num_experts), update_rate_(update_rate) {
  UPCYCLE_CHECK(num_experts >= 1, "AuxFreeBias: num_experts must be >= 1, got ", num_experts);
  UPCYCLE_CHECK(update_rate >= 0.0, "AuxFreeBias: update_rate must be >= 0, got ", update_rate);
  UPCYCLE_CHECK(dtype == DType::f32 || dtype == DType::f64, "AuxFreeBias: dtype must be f32 or f64");
  bias_ = Tensor::zeros({num_experts}, dtype, device);
}

Tensor AuxFreeBias::selection_scores(const Tensor& scores) const {
  UPCYCLE_CHECK(scores.ndim() == 2 && scores.dim(1) == num_experts_, "AuxFreeBias: scores must be [T, ",
                num_experts_, "], got ", describe(scores));
  const Tensor bias = scores.dtype() == bias_.dtype() ? bias_ : bias_.to(scores.dtype());
  Tensor out = Tensor::empty_like(scores);
  if (scores.numel() > 0) backend_of(scores).binary(BinaryOp::add, scores, bias, out);
  return out;
}

Tensor AuxFreeBias::select(const Tensor& scores, std::int64_t k) const {
  const Tensor s = selection_scores(scores);
  Tensor values = Tensor::empty({s.dim(0), k}, s.dtype(), s.device());
  Tensor idx = Tensor::empty({s.dim(0), k}, DType::i64, s.device());
  if (s.dim(0) > 0) backend_of(s).topk(s, k, values, idx);
  return idx;
}

void AuxFreeBias::update(const std::vector<double>& counts) {
  UPCYCLE_CHECK(static_cast<std::int64_t>(counts.size()) == num_experts_, "AuxFreeBias::update: expected ",
                num_experts_, " counts, got ", counts.size());
  double mean = 0.0;
  for (double c : counts) mean += c;
  mean /= static_cast<double>(num_experts_);
  // The step u sign(mean - c_e) is known on the host (the loads are); it is added to the bias on
  // the bias's device, so the update never reads the bias back.
  std::vector<double> step(counts.size());
  for (std::size_t e = 0; e < counts.size(); ++e) {
    const double d = mean - counts[e];
    step[e] = update_rate_ * static_cast<double>((d > 0.0) - (d < 0.0));
  }
  const Tensor delta = Tensor::from_vector(step, {num_experts_}, bias_.device()).to(bias_.dtype());
  backend_of(bias_).axpy(1.0, delta, bias_);
}

void AuxFreeBias::update(const Tensor& counts) {
  UPCYCLE_CHECK(counts.numel() == num_experts_, "AuxFreeBias::update: counts must have ", num_experts_,
                " elements, got ", describe(counts));
  update(detail::host_doubles(counts));
}

}  // namespace upcycle::moe
