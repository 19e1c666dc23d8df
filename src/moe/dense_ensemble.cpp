#include "upcycle/moe/dense_ensemble.hpp"

#include <algorithm>
#include <cmath>

#include "upcycle/ops/elementwise.hpp"
#include "upcycle/ops/linalg.hpp"
#include "upcycle/ops/reduce.hpp"
#include "upcycle/ops/scale_rows.hpp"
#include "upcycle/ops/shape.hpp"
#include "upcycle/ops/softmax.hpp"

namespace upcycle::moe {

Tensor dense_ensemble(const MoeLayer& layer, const Tensor& u) {
  NoGradGuard no_grad;
  const std::int64_t D = layer.config().d_model, L = layer.num_local_experts();
  UPCYCLE_CHECK(u.ndim() == 2 && u.dim(1) == D, "dense_ensemble: expects tokens [T, ", D, "], got ", describe(u));
  Communicator& ep = *layer.ep_communicator();
  const int P = ep.size();
  const std::int64_t T = u.dim(0);
  // 1. Every token of the group, each rank's block padded to the same row count (all_gather
  //    takes equal shards). Zero rows cost expert work but are dropped by the scatter below.
  Tensor all = u;
  std::int64_t rows_per_rank = T;
  if (P > 1) {
    Tensor mine = Tensor::from_vector<std::int64_t>({T}, {1}, Device::cpu);
    Tensor counts = Tensor::empty({P}, DType::i64, Device::cpu);
    ep.all_gather(mine, counts);
    const auto c = counts.to_vector<std::int64_t>();
    rows_per_rank = *std::max_element(c.begin(), c.end());
    Tensor padded = u;
    if (rows_per_rank != T) {
      padded = Tensor::zeros({rows_per_rank, D}, u.dtype(), u.device());
      if (T > 0) {
        Tensor head = padded.rows(0, T);
        head.copy_from(u);
      }
    }
    all = Tensor::empty({P * rows_per_rank, D}, u.dtype(), u.device());
    ep.all_gather(padded, all);
  }
  const std::int64_t N = all.dim(0);
  Tensor partial = Tensor::zeros({N, D}, u.dtype(), u.device());
  if (N > 0) {
    // 2. The local experts, weighted by their share of the router's full distribution.
    const Var x(all);
    const Var probs = softmax(linear(x, layer.router.weight));  // [N, E]
    const Var outs = layer.local_expert_outputs(x);             // [L, N, D]
    Var y;
    for (std::int64_t i = 0; i < L; ++i) {
      const std::int64_t e = layer.first_expert() + i;
      const Var term = scale_rows(reshape(slice(outs, 0, i, i + 1), {N, D}), reshape(slice(probs, 1, e, e + 1), {N}));
      y = y.defined() ? y + term : term;
    }
    partial = y.value();
  }
  // 3. Back to the ranks that own the rows, summed over the group's experts.
  Tensor out = partial;
  if (P > 1) {
    out = Tensor::empty({rows_per_rank, D}, u.dtype(), u.device());
    ep.reduce_scatter(partial, out);
    out = out.rows(0, T);
  }
  if (layer.shared && T > 0) out = (Var(out) + layer.shared->forward(Var(u))).value();
  return out;
}

Tensor entropy_weights(const Tensor& logits) {
  NoGradGuard no_grad;
  UPCYCLE_CHECK(logits.ndim() == 2, "entropy_weights: expects logits [T, E], got ", describe(logits));
  const std::int64_t E = logits.dim(1);
  if (E == 1) return Tensor::full({logits.dim(0)}, 1.0, logits.dtype(), logits.device());
  // H = -sum_e p_e log p_e with log p from log_softmax: finite even where p underflows to 0.
  const Var l(logits);
  const Var h = sum(mul(softmax(l), log_softmax(l)), 1);  // -H
  return mul_scalar(h, -1.0 / std::log(static_cast<double>(E))).value();
}

Var distillation_loss(const Var& student, const Tensor& target, const Tensor& weights) {
  UPCYCLE_CHECK(student.value().numel() == target.numel() && student.shape().ndim() >= 1,
                "distillation_loss: the student ", describe(student.value()), " and the target ", describe(target),
                " differ in size");
  const std::int64_t C = student.dim(-1), T = student.value().numel() / std::max<std::int64_t>(C, 1);
  const Var diff = reshape(student, {T, C}) - Var(target.reshape({T, C}));
  Var per_token = reshape(sum(mul(diff, diff), 1), {T, 1});  // ||s_t - target_t||^2
  if (weights.defined()) {
    UPCYCLE_CHECK(weights.numel() == T, "distillation_loss: ", weights.numel(), " weights for ", T, " rows");
    per_token = scale_rows(per_token, Var(weights.reshape({T})));
  }
  return mean_all(per_token);
}

}  // namespace upcycle::moe
