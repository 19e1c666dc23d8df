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

// The splits of a task's data. Images: train and validation partition the Fashion-MNIST training
// file (data.val_fraction of it, a fixed draw independent of run.seed, is validation); test is the
// separate test file. Text: the corpus's held-out documents are both validation and test (the
// corpus has no third split).
enum class Split { train, validation, test };
const char* split_name(Split split);

// What a forward pass of the task's model gives besides the loss.
struct ModelOutputs {
  Var features;  // the embedding the head reads: ViT [B, D] (class or mean token), GPT [B, T, D]
  Var logits;    // ViT [B, classes], GPT [B, T, V]
};

class Task {
 public:
  virtual ~Task() = default;
  virtual nn::Module& model() = 0;
  // The device the model lives on (run.device, resolved when the task was made).
  Device device() { return model().device(); }
  // This rank's share of the next global batch, on the host (advances the sampler).
  virtual Batch next_batch() = 0;
  // Mean loss over the batch (on the model's device), graph attached. Keeps the forward's outputs
  // for last_outputs().
  virtual Var loss(const Batch& batch, RngStream* dropout_rng) = 0;
  // The outputs of the last loss() forward (graph attached).
  const ModelOutputs& last_outputs() const { return last_outputs_; }
  // The outputs of `model` (this task's model, or a twin from make_twin) for `inputs` on its device.
  virtual ModelOutputs run_model(const nn::Module& model, const Tensor& inputs, RngStream* dropout_rng) const = 0;
  // A new model of the same class and config as model() (the same MoE layers and expert sharding),
  // on the same device, with the seed's initial values: the caller sets the values it needs.
  virtual std::unique_ptr<nn::Module> make_twin() const = 0;
  // Evaluation over a held-out split, sharded over `comm`'s ranks and summed; the same result on
  // every rank. Keys: "accuracy" (images), "val_loss", "bits_per_byte" (text). The training-time
  // evaluation reads Split::validation; the eval stage reads Split::test.
  virtual std::map<std::string, double> evaluate(Communicator& comm, Split split) = 0;
  std::map<std::string, double> evaluate(Communicator& comm) { return evaluate(comm, Split::validation); }
  // The examples of a split: how many, their labels (classification tasks; empty otherwise), and a
  // host batch of the examples `ids` (0-based within the split; for text, one context window each).
  virtual std::int64_t split_size(Split split) const = 0;
  virtual std::vector<std::int64_t> split_labels(Split /*split*/) const { return {}; }
  virtual Batch split_batch(Split split, const std::vector<std::int64_t>& ids) const = 0;
  // Classes of a classification task, 0 otherwise.
  virtual std::int64_t num_classes() const { return 0; }
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

 protected:
  ModelOutputs last_outputs_;
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
