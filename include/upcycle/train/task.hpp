#pragma once
// A task binds a model to its data and its loss: what a training step draws, how it scores a
// batch, and how it is evaluated. The trainer loop is the same for every task; tasks are made
// from the config through one registry keyed by model.kind.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "upcycle/autograd/var.hpp"
#include "upcycle/core/rng.hpp"
#include "upcycle/data/sampler.hpp"
#include "upcycle/dist/communicator.hpp"
#include "upcycle/io/config.hpp"
#include "upcycle/moe/moe_layer.hpp"
#include "upcycle/nn/module.hpp"
#include "upcycle/nn/module_list.hpp"
#include "upcycle/nn/transformer_block.hpp"

namespace upcycle {

// A batch. Tasks make it on the host (next_batch); the trainer moves it to the model's device
// (BatchStager) before the forward pass.
struct Batch {
  Tensor inputs;   // images [B, C, H, W] f32, or tokens [B, T] i64
  Tensor targets;  // labels [B] i64, or next tokens [B, T] i64
  std::int64_t tokens = 0;  // tokens the model processed (patches + class token, or T per row)
  // The dataset index of every row (the sampler's example ids): a token's global identity is
  // (sample id, position), the same whatever the number of ranks (calibration uses it).
  std::vector<std::int64_t> sample_ids;
};

class Task {
 public:
  virtual ~Task() = default;
  virtual nn::Module& model() = 0;
  // The device the model lives on (run.device, resolved when the task was made).
  Device device() { return model().device(); }
  // This rank's share of the next global batch, on the host (advances the sampler).
  virtual Batch next_batch() = 0;
  // Mean loss over the batch (on the model's device), graph attached.
  virtual Var loss(const Batch& batch, RngStream* dropout_rng) = 0;
  // Evaluation over the held-out split, sharded over `comm`'s ranks and summed; the same result
  // on every rank. Keys: "accuracy" (images), "val_loss", "bits_per_byte" (text).
  virtual std::map<std::string, double> evaluate(Communicator& comm) = 0;
  virtual ShardedSampler& sampler() = 0;
  // Name of the headline evaluation metric (for the progress line and the report).
  virtual std::string headline_metric() const = 0;
  // The model's transformer blocks in order (calibration observes their FFN inputs).
  virtual nn::ModuleList<nn::TransformerBlock>& blocks() = 0;

  // --- Mixture-of-Experts models (empty / defaults for a dense model) ---
  // The MoE layers with their module names ("blocks/03/moe"), in block order.
  virtual std::vector<std::pair<std::string, moe::MoeLayer*>> moe_layers() const { return {}; }
  // Group-conditioned DPSL: the number of token groups G given E experts, and the group id of
  // every token the MoE layers route for `batch` (i64 [T] in the layers' row order), or an
  // undefined tensor when every token is in group 0 (G must then be 1). Made on the host from the
  // labels (an explicit host step) and returned on the batch's device.
  virtual std::int64_t num_token_groups(std::int64_t /*num_experts*/) const { return 1; }
  virtual Tensor token_groups(const Batch& /*batch*/, std::int64_t /*num_groups*/) const { return Tensor(); }
};

// How a task builds its model.
struct TaskOptions {
  // Build the MoE model: the blocks of moe.blocks get an moe::MoeLayer (moe_config_from), with
  // experts sharded over expert_parallel (null = this process holds all experts).
  bool moe = false;
  std::shared_ptr<Communicator> expert_parallel;
};

// Builds the task of cfg's model.kind on this rank. Data problems throw naming the file.
std::unique_ptr<Task> make_task(const Config& cfg, const Communicator& world, const TaskOptions& options = {});

}  // namespace upcycle
