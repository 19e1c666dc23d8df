#pragma once
// What the trainer adds for a Mixture-of-Experts model (docs/methods.md sections 3 and 4):
//   * the router regularisers of every MoE layer, added to the task's loss after each forward:
//     load balancing (moe.lb_weight, over the global batch of the world), z-loss (moe.z_weight,
//     per rank) and DPSL (dpsl.*; scope global = the world's rows, rank = this rank's rows);
//   * the auxiliary-loss-free selection bias (moe.aux_free_rate > 0), one per MoE layer, updated
//     after each optimiser step from the loads of that step summed over all ranks;
//   * routing statistics per MoE layer for metrics.jsonl ("moe/blocks/03/<name>").
//
// Gradient scaling. The trainer averages replicated gradients over the world (GradReducer), so a
// loss computed globally (LB with the world communicator, DPSL with scope = global; each rank's
// backward gives the derivative w.r.t. its own rows only) is back-propagated with weight W (the
// world size) to get the full gradient of the global loss; its VALUE is counted once.
//
// DPSL groups (dpsl.prior = group): the task says which group each token is in
// (Task::token_groups): images use G = E groups, the image of label y in group y mod E with all
// its tokens (group m boosts expert m: alpha_b = dpsl.alpha, alpha_s = dpsl.group_boost); text
// has one group (G = 1: the prior boosts every expert alike).
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "upcycle/dist/communicator.hpp"
#include "upcycle/io/config.hpp"
#include "upcycle/io/metrics.hpp"
#include "upcycle/moe/router_losses.hpp"
#include "upcycle/train/task.hpp"

namespace upcycle {

// The expert-parallel size of a run: parallel.expert_parallel, or with 0 the largest divisor of
// the world size that also divides moe.num_experts. Throws UsageError when the configured size
// does not divide the world size.
int expert_parallel_size(const Config& cfg, int world_size);

// The MoE task of cfg (TaskOptions::moe) with its experts sharded over the expert-parallel groups
// of `world` (expert_parallel_size). Collective over `world`.
struct MoeTask {
  ProcessGroups groups;
  std::unique_ptr<Task> task;
};
MoeTask make_moe_task(const Config& cfg, std::shared_ptr<Communicator> world);

class MoeTraining {
 public:
  // `world`: the communicator of all data-parallel ranks (global losses, loads, statistics).
  MoeTraining(const Config& cfg, std::shared_ptr<Communicator> world, const Task& task);

  bool enabled() const { return !layers_.empty(); }

  struct Losses {
    Var backward;  // what to back-propagate: global losses weighted by the world size
    Tensor value;  // the regularisers' value (each counted once): f64 [1] on the model's device
  };
  // The router losses of every layer from its last forward (call after Task::loss on every rank;
  // collective over the world when LB or global DPSL is on).
  Losses losses(const Batch& batch);
  // After backward of a micro-batch: adds its loads to the step's, computes the routing statistics
  // when `stats` (collective over the world) and frees the routing graphs.
  void after_micro_batch(bool stats);
  // After the optimiser step (every rank): updates the aux-free biases from the step's loads
  // summed over the world (one all_reduce; not when !updated, a skipped step), and resets the loads.
  void after_step(bool updated = true);
  // Adds "moe/blocks/NN/<stat>" for every layer (the last statistics, and the router losses
  // averaged over the steps since the last call), then resets the loss averages.
  void add_metrics(JsonObject& o);

  // Checkpoint state: ("/state/moe/blocks/NN/aux_free_bias", bias) per layer with the bias on.
  std::vector<std::pair<std::string, Tensor>> state_tensors() const;

 private:
  struct Layer {
    std::string name;  // "blocks/03/moe"
    moe::MoeLayer* layer;
    std::unique_ptr<moe::AuxFreeBias> bias;  // null unless moe.aux_free_rate > 0
    std::vector<double> loads;               // this step's routed slots per expert (this rank)
    // Sums of the LB, z and DPSL values since the last metrics line (f64 [3] on the model's device,
    // read on the host only when a metrics line is written).
    Tensor loss_sums;
    std::int64_t loss_count = 0;
    moe::RoutingStats stats;
    bool has_stats = false;
  };
  std::shared_ptr<Communicator> world_;
  const Task& task_;
  std::vector<Layer> layers_;
  double lb_weight_, z_weight_;
  bool dpsl_ = false;
  moe::DirichletPrior prior_;
  moe::DpslOptions dpsl_options_;
  std::int64_t groups_ = 1;
};

}  // namespace upcycle
