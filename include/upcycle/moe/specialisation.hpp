#pragma once
// Expert specialisation measures of one MoE block (docs/methods.md section 6), computed by the eval
// stage on the test split. Host math in double; the collective helpers say over which group.
//   * expert weight cosine: mean over expert pairs i < j of cos(v_i, v_j), v_e the flattened
//     [W1_e, W2_e] (biases excluded);
//   * expert output cosine: mean over tokens n and pairs i < j of cos(E_i(u_n), E_j(u_n));
//   * relative compactness: with the tokens grouped by their top-1 expert, the mean within-expert
//     variance of the block outputs y divided by the variance of the per-expert means (the
//     variance of a set of vectors is the mean squared Euclidean distance to their mean).
// The routing entropy, load CoV and expert-level mean probability come from moe::routing_stats.
// cos(a, b) = <a, b> / (|a| |b|), taken as 0 when either vector is zero (it has no direction).
#include <cstdint>
#include <utility>
#include <vector>

#include "upcycle/core/tensor.hpp"
#include "upcycle/dist/communicator.hpp"
#include "upcycle/moe/moe_layer.hpp"

namespace upcycle::moe {

// Mean of cos(rows i, j) over the pairs i < j of `rows` [E, n] (f32/f64, any device); NaN for E < 2.
double mean_pairwise_cosine(const Tensor& rows);

// w1 [E, F r, D], w2 [E, D, F] (f32/f64): mean pairwise cosine of the E vectors [w1_e, w2_e].
double expert_weight_cosine(const Tensor& w1, const Tensor& w2);

// outputs [E, N, D]: (1/N) sum_n mean_{i<j} cos(outputs[i, n], outputs[j, n]); NaN for N = 0 or
// E < 2. Also as the sum over the N tokens (for accumulating over chunks of tokens).
double expert_output_cosine(const Tensor& outputs);
double expert_output_cosine_sum(const Tensor& outputs);

// Collective over the layer's EP group: w1 [E, F r, D] and w2 [E, D, F] of all E experts on the
// host in global expert order (the EP ranks hold contiguous blocks of experts in rank order).
std::pair<Tensor, Tensor> gather_expert_weights(const MoeLayer& layer);

// Collective over the layer's EP group (every EP rank passes the same rows): every expert's output
// on the rows of x [N, D], [E, N, D] on the host, in global expert order. No gradient.
Tensor all_expert_outputs(const MoeLayer& layer, const Tensor& x);

// Sufficient statistics of relative compactness, accumulated in double: per expert e, the count
// n_e of tokens whose top-1 expert is e, the sum of their outputs s_e [D] and the sum of their
// squared norms q_e. Then mu_e = s_e / n_e, within V_e = q_e / n_e - |mu_e|^2, and over the experts
// A with n_e >= 2: RC = mean_{e in A} V_e / ((1/|A|) sum_{e in A} |mu_e - mean_{A} mu|^2).
class CompactnessStats {
 public:
  CompactnessStats(std::int64_t num_experts, std::int64_t dim);
  // outputs [T, D] (f32/f64, any device), top1 [T] i64 (or indices [T, k]: column 0 is the top-1).
  void add(const Tensor& outputs, const Tensor& top1);
  // Sums the statistics over the ranks of comm (one all_reduce), so that the result is that of
  // all tokens whatever their split over ranks.
  void all_reduce(Communicator& comm);
  // NaN when fewer than two experts have >= 2 tokens, or when their means coincide.
  double relative_compactness() const;
  const std::vector<double>& counts() const { return counts_; }

 private:
  std::int64_t experts_, dim_;
  std::vector<double> counts_, sums_, squares_;  // [E], [E * D], [E]
};

}  // namespace upcycle::moe
