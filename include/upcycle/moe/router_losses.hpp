#pragma once
// Router regularisers of the MoE layer (docs/methods.md section 3) and routing statistics
// (docs/methods.md section 4). Notation: T tokens (rows) on this rank, E experts, k experts per token;
// z [T, E] the router logits, p = softmax(z) [T, E] the router probabilities, indices [T, k] (i64)
// the experts each token was routed to (top-k selection).
//
// Every loss returns a Var of shape [1] that already includes its weight, and has its backward
// beside its forward (src/moe/*.cpp). Floating inputs may be f32 (training) or f64 (tests); the
// host-side parts compute in double and the gradient comes back in the input's dtype and device.
//
// --- Gradients under a Communicator -----------------------------------------------------------
// The losses that take a Communicator (load balancing, DPSL with DpslScope::global) compute ONE
// global loss from the rows of all ranks: every rank returns the same value, and each rank's
// backward produces the exact partial derivative of that global loss with respect to ITS OWN rows
// of p (the gradient with respect to another rank's rows is that rank's business). Summing these
// per-rank gradients over the ranks therefore gives the gradient of the global loss. No collective
// runs in backward (the gradient is fixed in forward), so backward never needs matching calls.
// Beware: GradReducer AVERAGES parameter gradients over ranks (it divides by the world size), so
// with it each rank back-propagates (1/W) of the global loss's gradient for replicated parameters.
// To get the full gradient of a global loss from an averaging reducer, scale the seed of this
// loss's backward (or the weight used for the gradient) by comm->size(). Losses computed without a
// Communicator are local: value and gradient from this rank's rows alone.
#include <cstdint>
#include <vector>

#include "upcycle/autograd/var.hpp"
#include "upcycle/dist/communicator.hpp"

namespace upcycle::moe {

// ---------------------------------------------------------------------------------------------
// 1. Load balancing (Switch Transformer)
//    L_lb = a * E * sum_e f_e P_e
//    f_e = c_e / (T k): share of the T*k routed slots assigned to e (no gradient; the slots are
//          counted as selected, before any capacity dropping)
//    P_e = (1/T) sum_t p_te: mean router probability of e (differentiable)
//    dL/dp_te = a * E * f_e / T.
// Perfectly balanced routing (f_e = 1/E) gives exactly a, whatever p (sum_e P_e = 1).
// With comm != nullptr, c_e, sum_t p_te and T are summed over the ranks (one all_reduce of 2E+1
// doubles) so f and P are global-batch quantities and T is the global token count; the value is
// the global loss on every rank, and this rank's gradient is a E f_e / T_global on its own rows
// (see "Gradients under a Communicator" above). Ranks may hold different T (also T = 0).
// probs [T, E] f32/f64; indices [T, k] i64 with values in [0, E).
Var load_balancing_loss(const Var& probs, const Tensor& indices, double weight = 0.01,
                        Communicator* comm = nullptr);
// The same from this rank's counts c_e (the routed slots per expert, which the MoE layer's dispatch
// has already brought to the host): the probabilities stay on their device, so on the GPU the
// loss costs no host wait.
Var load_balancing_loss(const Var& probs, const std::vector<double>& expert_counts, double weight = 0.01,
                        Communicator* comm = nullptr);

// ---------------------------------------------------------------------------------------------
// 2. Router z-loss (ST-MoE), local to this rank:
//    L_z = b * (1/T) sum_t (logsumexp_e z_te)^2,   dL/dz_te = (2 b / T) lse_t softmax(z)_te.
// logits [T, E]; T = 0 gives 0.
Var router_z_loss(const Var& logits, double weight = 0.001);

// ---------------------------------------------------------------------------------------------
// 3. Auxiliary-loss-free load balancing (DeepSeek-V3).
// Holds a per-expert bias [E] (a plain tensor, not a parameter: no gradient, not touched by the
// optimiser; save it with the checkpoint through bias()). The bias only changes WHICH experts are
// selected: select top-k on selection_scores(s) = s + bias, and take the gate values from s itself
// (gather s at the selected indices). After each optimiser step call update() with the loads of
// that step summed over all ranks (expert_load(indices, E, comm) gives them):
//    bias_e += u * sign(mean(c) - c_e)       (sign(0) = 0)
// so under-used experts (c_e < mean) become more likely to be selected and over-used less.
class AuxFreeBias {
 public:
  // The bias lives on `device` (the MoE layer's).
  AuxFreeBias(std::int64_t num_experts, double update_rate, DType dtype, Device device);

  std::int64_t num_experts() const { return num_experts_; }
  double update_rate() const { return update_rate_; }
  const Tensor& bias() const { return bias_; }
  Tensor& bias() { return bias_; }  // e.g. restore from a checkpoint

  // scores [T, E] (p or any routing score, in the bias's dtype) + bias [E] broadcast over rows.
  // No gradient: use the result for top-k selection only.
  Tensor selection_scores(const Tensor& scores) const;
  Tensor selection_scores(const Var& scores) const { return selection_scores(scores.value()); }
  // Top-k indices [T, k] (i64) of selection_scores(scores).
  Tensor select(const Tensor& scores, std::int64_t k) const;

  // counts [E] (any numeric dtype, any device): the per-expert loads summed over all ranks, so
  // that every rank applies the same update and the biases stay identical.
  void update(const Tensor& counts);
  void update(const std::vector<double>& counts);

 private:
  std::int64_t num_experts_;
  double update_rate_;
  Tensor bias_;
};

// Number of routed slots per expert: c_e = #{(t, j) : indices[t, j] == e} as f64 [E] on the CPU,
// summed over the ranks of comm when given (one all_reduce).
Tensor expert_load(const Tensor& indices, std::int64_t num_experts, Communicator* comm = nullptr);

// ---------------------------------------------------------------------------------------------
// 4. Dirichlet-Prior Shaping Loss (DPSL).
//
// A prior Dir(alpha) over the E router probabilities has marginals p_k ~ Beta(alpha_k, A - alpha_k),
// A = sum_k alpha_k. Over the B probability rows of the batch, column k is sorted ascending,
// p_(1) <= ... <= p_(B), and
//    L = lambda * sum_k (1/B) sum_{j=1..B} (j/B - F_Beta(p_(j); alpha_k, A - alpha_k))^2.
// The empirical CDF j/B is held constant, so (with the pdf f_Beta clipped at pdf_clip, since for
// alpha_k < 1 it goes to infinity at 0)
//    dL/dp_(j) = (2 lambda / B) (F_Beta(p_(j)) - j/B) min(f_Beta(p_(j)), pdf_clip),
// and the gradient reaches the logits through the softmax by autograd (DPSL is an op on p).
// F_Beta is Boost.Math ibeta, f_Beta ibeta_derivative, evaluated in double. Ties in a column are
// ordered by row (the global row index under DpslScope::global), so the result is deterministic
// and does not depend on how the rows are split over ranks.
//
// Group-conditioned priors: each row t has a group id g(t) in [0, G) and the prior alpha^(g(t));
// the loss is computed separately for each group over that group's B_m rows (with B = B_m in the
// formulas above) and summed over groups: L = sum_m L_m. A group without rows contributes 0. Rows
// with a negative group id are ignored (no loss, zero gradient), e.g. padding tokens.
struct DirichletPrior {
  // alpha[g] is the concentration vector (E entries, all > 0) of group g; one row (G = 1) for an
  // unconditioned prior. Any table may be given directly.
  std::vector<std::vector<double>> alpha;

  std::int64_t num_groups() const { return static_cast<std::int64_t>(alpha.size()); }
  std::int64_t num_experts() const { return alpha.empty() ? 0 : static_cast<std::int64_t>(alpha[0].size()); }
  // Throws unless there is at least one group, E >= 2 for every group and every alpha > 0.
  void validate() const;

  // alpha_k = alpha for every expert (default dpsl.alpha = 1).
  static DirichletPrior symmetric(std::int64_t num_experts, double alpha = 1.0);
  // One given concentration vector (E entries).
  static DirichletPrior asymmetric(std::vector<double> alpha);
  // G groups over E experts: alpha^(m)_e = alpha_b + alpha_s for the experts e "owned" by group m,
  // alpha_b for the others. Ownership, for any G and E:
  //   G == E : group m owns expert m (alpha^(m)_m = alpha_b + alpha_s, the paper's task prior);
  //   G <  E : the experts are split into G contiguous blocks, group m owns every e with
  //            floor(e G / E) == m (block sizes floor(E/G) or ceil(E/G)); e.g. G = 2, E = 4:
  //            group 0 boosts experts {0, 1}, group 1 {2, 3} (the paper's modality prior);
  //   G >  E : the groups are split into E contiguous blocks and group m owns the single expert
  //            floor(m E / G); several groups then boost the same expert.
  // (Both rules reduce to "group m owns expert m" when G == E.) For any other assignment, fill
  // `alpha` directly.
  static DirichletPrior group_conditioned(std::int64_t num_groups, std::int64_t num_experts,
                                          double alpha_b = 0.75, double alpha_s = 0.5);
};

// Which rows one DPSL evaluation sorts.
enum class DpslScope {
  // The rows of ALL ranks of `comm` (the global batch): the ranks' rows (and group ids) are
  // all-gathered, in rank order, before sorting. Ranks may hold different numbers of rows (the
  // counts are gathered first). The loss value is the global loss on every rank, and each rank
  // back-propagates only the gradient of its own rows (see "Gradients under a Communicator").
  // comm == nullptr means a world of one rank (then identical to `rank`).
  global,
  // This rank's rows only: the sort and the loss are per rank; `comm` is not used.
  rank,
};

struct DpslOptions {
  double weight = 0.01;     // lambda
  double pdf_clip = 100.0;  // upper bound on f_Beta in the gradient (> 0)
  DpslScope scope = DpslScope::global;
  Communicator* comm = nullptr;  // used when scope == global
};

// probs [B, E] (f32/f64) with rows that are probability vectors (values in [0, 1]; values outside
// are clamped for the CDF and pdf evaluation). groups: undefined (every row in group 0; the prior
// must then have G = 1) or i64 [B] of group ids (< G; negative = ignored row).
Var dpsl_loss(const Var& probs, const DirichletPrior& prior, const DpslOptions& options = {},
              const Tensor& groups = Tensor());

// Beta(a, b) CDF and pdf as used by DPSL (Boost.Math, double), exposed for tests and logging.
// beta_pdf at the end points: +inf where the density diverges (a < 1 at 0, b < 1 at 1).
double beta_cdf(double a, double b, double x);
double beta_pdf(double a, double b, double x);

// ---------------------------------------------------------------------------------------------
// 5. Routing statistics (no gradient), for logging and the evaluation report.
struct RoutingStats {
  std::int64_t num_tokens = 0;        // T (summed over ranks)
  std::int64_t num_slots = 0;         // routed slots counted in `counts` (T k minus dropped)
  std::vector<double> counts;         // [E] tokens (slots) per expert, dropped slots excluded
  double load_cov = 0.0;              // std/mean of counts (population std over E); 0 when empty
  double load_max_over_mean = 0.0;    // max_e counts / mean(counts); 0 when empty
  double mean_entropy = 0.0;          // mean_t -sum_e p_te log p_te (nats; 0 log 0 = 0)
  double normalized_entropy = 0.0;    // mean_entropy / log E
  std::vector<double> expert_mean_prob;  // [E] mean of p_te over the (non-dropped) slots routed
                                         // to e; 0 for an expert that received none
};

// probs [T, E] f32/f64, indices [T, k] i64. dropped (optional, any numeric dtype, nonzero =
// dropped): [T, k] per slot or [T] per token; dropped slots count neither in the loads nor in
// expert_mean_prob (the entropy runs over all T tokens). With comm, every sum (loads, probability
// sums, entropy sum, token and slot counts) is taken over the ranks (one all_reduce), so every
// rank returns the same global statistics.
RoutingStats routing_stats(const Tensor& probs, const Tensor& indices, const Tensor& dropped = Tensor(),
                           Communicator* comm = nullptr);

}  // namespace upcycle::moe
