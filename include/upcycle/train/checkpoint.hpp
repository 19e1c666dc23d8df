#pragma once
// HDF5 training checkpoints (docs/training.md "Checkpoints"). One self-describing file:
//   /                       attributes format = "upcycle-checkpoint", version, stage, step, config (INI text)
//   /model/<name>           every parameter under its module name (e.g. /model/blocks/03/attn/qkv/weight)
//   /optimizer/m/<name>     AdamW first moments;  /optimizer/v/<name> second moments
//   /optimizer              attribute steps
//   /state/rng/dropout      [seed, offset] (i64)
//   /state/data/cursor      [epoch, position] (i64)
//   /state/moe/<block>/aux_free_bias   [E] f32, per MoE block with the aux-free bias on
//                                       (e.g. /state/moe/blocks/03/aux_free_bias)
//   /teacher/<name>         with eesd.enabled: the EMA teacher's parameters, named and stored
//                           like /model (experts by global id)
// Expert parameters (moe::MoeLayer::is_expert_parameter: a path component "experts") and their
// AdamW moments are stored by global expert id as [E, ...], whatever the expert-parallel size P
// of the run that wrote them: the ranks all-gather them over the EP group
// (gather_expert_tensors) and rank 0 writes; a loader with EP rank p of P keeps rows
// [p E/P, (p+1) E/P). So a run saved with P = 4 resumes with P = 2 or 1. Replicated tensors are
// written as they are (identical on every rank).
// Files are written atomically: a temporary file in the same directory, flushed and fsynced, then
// renamed over the target, so a crash or kill never leaves a half-written checkpoint under its
// final name.
// Integrity (version 2): every dataset, the HDF5 metadata and the string attributes carry
// checksums (upcycle/io/hdf5.hpp), verified on every read; a mismatch throws h5::CorruptDataError.
// Version-1 files (written before checksums) still load, unverified.
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "upcycle/core/rng.hpp"
#include "upcycle/data/sampler.hpp"
#include "upcycle/dist/communicator.hpp"
#include "upcycle/io/config.hpp"
#include "upcycle/nn/module.hpp"
#include "upcycle/train/optimizer.hpp"

namespace upcycle {

inline constexpr const char* kCheckpointFormat = "upcycle-checkpoint";
// The version this build writes, and the oldest it reads (1: the same layout without checksums).
inline constexpr std::int64_t kCheckpointVersion = 2;
inline constexpr std::int64_t kOldestCheckpointVersion = 1;

struct TrainState {
  std::string stage;
  std::int64_t step = 0;  // optimiser steps completed
  RngStream dropout_rng;
  ShardedSampler::Cursor cursor;
};

// What a sharded (MoE) run writes besides the local tensors.
struct CheckpointShards {
  // Dataset path ("/model/<name>", "/optimizer/m/<name>", ...) -> the tensor written in place of
  // this rank's local one: the gathered [E, ...] expert tensors.
  std::map<std::string, Tensor> full;
  // Extra datasets (path, tensor) written as they are, e.g. the aux-free biases.
  std::vector<std::pair<std::string, Tensor>> extras;
  // Extra modules written like the model under their prefix ("/teacher/"): every parameter at
  // prefix + name, an expert one replaced by full[prefix + name] (gather_module_experts).
  std::vector<std::pair<std::string, const nn::Module*>> modules;
};

// Collective over `ep`: adds to `full` the [E, ...] gather of every expert parameter of `module`
// under prefix + name (gather_expert_tensors does this for the model and its moments).
void gather_module_experts(const nn::Module& module, const std::string& prefix, Communicator& ep,
                           std::map<std::string, Tensor>& full);

// Collective over `ep` (every rank of the EP group calls it): the [E, ...] tensors of every expert
// parameter of `model` and of its AdamW moments, gathered in global expert order and keyed by
// their dataset paths. With ep of size 1 the local tensors themselves.
std::map<std::string, Tensor> gather_expert_tensors(const nn::Module& model, const AdamW* optimizer, Communicator& ep);

// Writes the checkpoint at `path` atomically (call on one rank).
void save_checkpoint(const std::string& path, const Config& cfg, const nn::Module& model, const AdamW* optimizer,
                     const TrainState& state, const CheckpointShards* shards = nullptr);

struct CheckpointLoadOptions {
  // This rank's expert shard: expert tensors are read as [E, ...] = [shards * local, ...] and rows
  // [shard * local, (shard + 1) * local) are kept (local = the model's dim 0).
  int expert_shard = 0, expert_shards = 1;
  // Tensors filled from these datasets when the file has them (left as they are otherwise), e.g.
  // the aux-free biases; shapes must match.
  std::vector<std::pair<std::string, Tensor>> optional;
  // Extra modules read like the model from prefix + name (experts sliced to this rank's shard);
  // every parameter must be in the file.
  std::vector<std::pair<std::string, nn::Module*>> modules;
};

// Whether the checkpoint at `path` has the dataset (e.g. "/teacher/router/weight").
bool checkpoint_has_dataset(const std::string& path, const std::string& dataset);

// Reads a checkpoint into `model` (shapes must match the model built from the config), and into
// `optimizer` and `state` when given. Throws Error naming the file and the dataset for a missing,
// truncated, foreign or mismatched file; nothing is modified unless every tensor was read. A
// checksum mismatch or a truncated file throws h5::CorruptDataError naming the dataset (or the
// file) and the newest earlier step checkpoint of the same folder that passes check_checkpoint,
// the one checkpoint.resume = auto falls back to (or that there is none).
void load_checkpoint(const std::string& path, nn::Module& model, AdamW* optimizer, TrainState* state,
                     const CheckpointLoadOptions* options = nullptr);

// What check_checkpoint found: ok when every dataset read back intact and the structure is an
// upcycle checkpoint's; otherwise `problems` names each failing attribute or dataset. `notes` are
// facts that are not problems (a version-1 file has no checksums to verify).
struct CheckpointCheck {
  bool ok = true;
  std::vector<std::string> problems;
  std::vector<std::string> notes;
  std::int64_t datasets_checked = 0;
};

// Checks the file at `path`: the root attributes format, version (kOldestCheckpointVersion ..
// kCheckpointVersion), stage, step (>= 0) and config; the datasets every checkpoint has
// (/state/rng/dropout and /state/data/cursor as [2] i64, at least one /model dataset); with an
// /optimizer group, its attribute steps and an /optimizer/m and /optimizer/v dataset of the shape of
// each /model/<name> and none without one; each /teacher/<name> shaped like /model/<name>. Then
// reads every dataset in full, verifying its checksum (version 2: each dataset must have one).
// Never throws for a bad file: reports it, each problem naming the dataset or attribute.
CheckpointCheck check_checkpoint(const std::string& path);

// The step checkpoints of a stage folder (step-NNNNNNN.h5), newest first. Temporary files of an
// unfinished write (".step-NNNNNNN.h5.tmp-<pid>") and anything else are not listed; a missing
// folder has none.
std::vector<std::string> step_checkpoints(const std::string& checkpoint_dir);
// The newest checkpoint of the folder that passes check_checkpoint: latest.h5's target first,
// then the step files newest first; "" when none does. Each rejected file is added to `rejected`
// as "<path>: <first problem>" when given.
std::string newest_valid_checkpoint(const std::string& checkpoint_dir, std::vector<std::string>* rejected = nullptr);

// The INI text of the config a checkpoint was written with.
std::string checkpoint_config_text(const std::string& path);

// Each stage of a run keeps its checkpoints in its own folder, <run dir>/checkpoints/<stage>/, so
// the stages of a chain (dense,upcycle,moe) never overwrite or prune each other's step files.
std::string stage_checkpoint_dir(const std::string& run_dir, const std::string& stage);
// <checkpoint dir>/step-NNNNNNN.h5, and the latest.h5 pointer next to them.
std::string step_checkpoint_path(const std::string& checkpoint_dir, std::int64_t step);
std::string latest_checkpoint_path(const std::string& checkpoint_dir);

// Saves <checkpoint dir>/step-NNNNNNN.h5, points <checkpoint dir>/latest.h5 and the run-wide
// <checkpoint dir>/../latest.h5 (the newest checkpoint of any stage) at it, atomically, and
// removes all but the newest `keep` step files of the folder (keep = 0 keeps all).
void save_run_checkpoint(const std::string& checkpoint_dir, std::int64_t keep, const Config& cfg,
                         const nn::Module& model, const AdamW* optimizer, const TrainState& state,
                         const CheckpointShards* shards = nullptr);

}  // namespace upcycle
