#pragma once
// The expert-parallel Mixture-of-Experts layer (docs/methods.md notation):
//   y(u) = sum_{e in topk(u)} g_e(u) E_e(u)  [+ S(u), an always-active shared expert]
//   E_e(u) = W2_e act(W1_e u + b1_e) + b2_e
// for every token u of x [..., D]. Dropless by default; with capacity_factor > 0 each expert keeps
// at most ceil(cf * T * k / E) of the T * k slots of the rank-local batch, in token order, and the
// dropped slots contribute nothing (counted in last_routing().dropped).
//
// Expert parallelism. The layer is built with the expert-parallel communicator (size P, P | E):
// the rank of EP rank p holds the E / P experts [p E/P, (p+1) E/P). Forward (every step
// differentiable, the graph identical on every rank so the collectives in backward line up):
//   route -> sort the T*k slots by expert (stable) -> capacity -> gather token rows in slot order
//   -> exchange the per-expert counts (one all_to_all_v of int64) -> all_to_all_v the rows to the
//   ranks owning their experts -> regroup expert by expert -> grouped w1,b1 / activation /
//   grouped w2,b2 over all local experts at once -> regroup by source -> all_to_all_v back ->
//   times the gates -> index_add into the token rows -> + shared expert.
// With P = 1 the exchanges and regroupings are skipped (they are the identity).
//
// PARAMETER SHARDING CONVENTION. A parameter whose name has the path component "experts"
// (e.g. "experts/w1", "blocks/03/moe/experts/w2") is sharded over the EP group: its dim 0 indexes
// the local experts, global expert id = first_expert() + i; its gradient is reduced over the
// expert-data-parallel group and a checkpoint stores it gathered by global id as [E, ...].
// Every other parameter (router, shared expert) is replicated on every rank.
// is_expert_parameter(name) implements the test.
//
// Parameters (registration order): "router/weight" [E, D]; "experts/w1" [E/P, F*r, D] (r = 2 for
// swiglu: rows 0..F-1 gate, F..2F-1 up, as nn::Mlp's fc1), "experts/b1" [E/P, F*r],
// "experts/w2" [E/P, D, F], "experts/b2" [E/P, D] (biases only with bias = true; zero-initialised);
// with a shared expert "shared/fc1/weight", ... (an nn::Mlp).
//
// INITIALISATION. The layer draws from the caller's stream in this order: router weight
// (2 E D words), then one block of 2 E F r D words for w1 of ALL E experts and one of 2 E D F words
// for w2, then the shared expert. Each rank fills its shard from the sub-range of its global
// experts, so expert e's weights depend only on (seed, offset, e): the full set of experts is the
// same whatever P is (P = 1 gives exactly normal_parameter({E, F r, D}) etc.) and the stream ends
// at the same offset on every rank.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "upcycle/core/rng.hpp"
#include "upcycle/dist/communicator.hpp"
#include "upcycle/moe/router.hpp"
#include "upcycle/nn/feed_forward.hpp"
#include "upcycle/nn/mlp.hpp"
#include "upcycle/nn/module_list.hpp"
#include "upcycle/nn/transformer_block.hpp"

namespace upcycle::moe {

struct MoeConfig {
  std::int64_t d_model = 0;
  std::int64_t d_ff = 0;         // hidden units per expert
  std::int64_t num_experts = 0;  // E
  std::int64_t top_k = 2;        // k
  bool renormalize = true;       // gates sum to 1 over the k selected experts
  double capacity_factor = 0.0;  // 0 = dropless
  bool shared_expert = false;
  std::int64_t shared_d_ff = 0;  // hidden units of the shared expert; 0 = d_ff
  nn::MlpActivation activation = nn::MlpActivation::gelu_tanh;
  bool bias = true;
  double init_std = 0.02;      // w1 (and the shared fc1)
  double out_init_std = 0.02;  // w2 (and the shared fc2)
  double router_std = 0.02;
};

// Throws naming the field when a config is inconsistent (sizes, k > E, ...); P | E is checked
// at construction.
void validate(const MoeConfig& config);

// The E experts' weights of this rank, stacked. Parameters "w1", "b1", "w2", "b2" as above.
class Experts : public nn::Module {
 public:
  // Experts [first, first + count) of config.num_experts, drawn as documented in MoeLayer.
  Experts(const MoeConfig& config, std::int64_t first, std::int64_t count, RngStream& rng);
  // x [N, D] with the rows of local expert i contiguous, group_sizes[i] of them (any may be 0).
  Var forward(const Var& x, const std::vector<std::int64_t>& group_sizes) const;

  Var w1, b1, w2, b2;  // b1, b2 undefined without bias

 private:
  nn::MlpActivation activation_;
};

// What the last forward routed, kept for losses and statistics computed by the caller.
struct MoeRouting {
  Var input;                   // [T, D]: the layer's input u (graph attached)
  Var output;                  // [T, D]: the layer's output y(u) (graph attached)
  Var logits;                  // [T, E] (part of the graph: losses may backprop through it)
  Var probs;                   // [T, E]
  Tensor indices;              // [T, k] i64
  Var gates;                   // [T, k] (renormalised when configured)
  Tensor expert_counts;        // [E] i64 on the host: slots of this rank's tokens routed to each expert
  Tensor kept_counts;          // [E] i64 on the host: the same after capacity
  Tensor dropped_slots;        // [T, k] i64 (device): 1 where capacity dropped that slot, else 0 (the
                               // `dropped` argument of moe::routing_stats)
  std::int64_t dropped = 0;    // slots dropped by capacity on this rank
  std::int64_t capacity = 0;   // per expert for this batch; 0 = dropless
  std::int64_t tokens = 0;     // T on this rank
};

class MoeLayer : public nn::FeedForward {
 public:
  // ep: the expert-parallel communicator (null = this process alone). Its size P must divide E.
  MoeLayer(const MoeConfig& config, std::shared_ptr<Communicator> ep, RngStream& rng);

  // x [..., D] -> [..., D]. Collective over the EP group (every rank calls it, also with 0 tokens).
  Var forward(const Var& x);
  Var apply(const Var& u) override { return forward(u); }

  // Every local expert on every row of x [N, D]: [L, N, D] with row (i, n) = E_{first + i}(x_n)
  // (no routing, no exchange; the dense ensemble and the evaluation's output similarity use it).
  Var local_expert_outputs(const Var& x) const;

  const MoeConfig& config() const { return config_; }
  const MoeRouting& last_routing() const { return routing_; }
  void clear_routing() { routing_ = MoeRouting(); }  // frees the router graph it holds

  // Dense-ensemble mode (EESD's teacher): forward returns moe::dense_ensemble (every expert weighted
  // by the router's full distribution; dense_ensemble.hpp) and records no routing and no graph.
  void set_dense_ensemble(bool on) { dense_ensemble_ = on; }
  bool dense_ensemble_mode() const { return dense_ensemble_; }

  // The auxiliary-loss-free selection bias [E] (undefined = none). Updated in place by its owner.
  Tensor& selection_bias() { return selection_bias_; }
  const Tensor& selection_bias() const { return selection_bias_; }
  void set_selection_bias(Tensor bias);

  std::int64_t num_experts() const { return config_.num_experts; }
  std::int64_t num_local_experts() const { return local_; }
  std::int64_t first_expert() const { return first_; }  // global id of local expert 0
  int ep_size() const { return comm_->size(); }
  int ep_rank() const { return comm_->rank(); }
  const std::shared_ptr<Communicator>& ep_communicator() const { return comm_; }

  // Whether `name` (a full parameter name) is sharded over the EP group: it has a path
  // component equal to "experts".
  static bool is_expert_parameter(const std::string& name);

  Router router;
  Experts experts;
  std::unique_ptr<nn::Mlp> shared;  // null without a shared expert

 protected:
  void move_state(Device device) override;

 private:
  MoeConfig config_;
  std::shared_ptr<Communicator> comm_;
  std::int64_t first_ = 0, local_ = 0;
  Tensor selection_bias_;
  MoeRouting routing_;
  bool dense_ensemble_ = false;
};

// The factory a TransformerBlockConfig takes as its sparse_ffn: an MoeLayer of `config` with its
// experts sharded over `ep` (null = this process holds all experts).
nn::FeedForwardFactory moe_ffn_factory(const MoeConfig& config, std::shared_ptr<Communicator> ep);

// The MoE layer of a block (null for a dense block, or a sparse FFN of another kind).
MoeLayer* moe_layer_of(const nn::TransformerBlock& block);
// The MoE layers of a stack of blocks and the indices of their blocks, in order.
std::vector<MoeLayer*> moe_layers_of(const nn::ModuleList<nn::TransformerBlock>& blocks);
std::vector<std::int64_t> moe_block_indices_of(const nn::ModuleList<nn::TransformerBlock>& blocks);
// Every MoE layer under `root` with its module path ("blocks/03/moe"), in registration order: the
// same names for a model and its twin.
std::vector<std::pair<std::string, MoeLayer*>> find_moe_layers(const nn::Module& root);

}  // namespace upcycle::moe
