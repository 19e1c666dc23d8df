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
#include "upcycle/nn/module.hpp"

namespace upcycle {

struct Batch {
  Tensor inputs;   // images [B, C, H, W] f32, or tokens [B, T] i64
  Tensor targets;  // labels [B] i64, or next tokens [B, T] i64
  std::int64_t tokens = 0;  // tokens the model processed (patches + class token, or T per row)
};

class Task {
 public:
  virtual ~Task() = default;
  virtual nn::Module& model() = 0;
  // This rank's share of the next global batch (advances the sampler).
  virtual Batch next_batch() = 0;
  // Mean loss over the batch, graph attached.
  virtual Var loss(const Batch& batch, RngStream* dropout_rng) = 0;
  // Evaluation over the held-out split, sharded over `comm`'s ranks and summed; the same result
  // on every rank. Keys: "accuracy" (images), "val_loss", "bits_per_byte" (text).
  virtual std::map<std::string, double> evaluate(Communicator& comm) = 0;
  virtual ShardedSampler& sampler() = 0;
  // Name of the headline evaluation metric (for the progress line and the report).
  virtual std::string headline_metric() const = 0;
};

// Builds the task of cfg's model.kind on this rank. Data problems throw naming the file.
std::unique_ptr<Task> make_task(const Config& cfg, const Communicator& world);

}  // namespace upcycle
