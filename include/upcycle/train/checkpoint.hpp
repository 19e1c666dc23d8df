#pragma once
// HDF5 training checkpoints (DESIGN.md "Checkpoints"). One self-describing file:
//   /                       attributes format = "upcycle-checkpoint", version, stage, step, config (INI text)
//   /model/<name>           every parameter under its module name (e.g. /model/blocks/03/attn/qkv/weight)
//   /optimizer/m/<name>     AdamW first moments;  /optimizer/v/<name> second moments
//   /optimizer              attribute steps
//   /state/rng/dropout      [seed, offset] (i64)
//   /state/data/cursor      [epoch, position] (i64)
// Files are written atomically: a temporary file in the same directory, flushed and fsynced, then
// renamed over the target, so a crash or kill never leaves a half-written checkpoint under its
// final name.
#include <string>

#include "upcycle/core/rng.hpp"
#include "upcycle/data/sampler.hpp"
#include "upcycle/io/config.hpp"
#include "upcycle/nn/module.hpp"
#include "upcycle/train/optimizer.hpp"

namespace upcycle {

inline constexpr const char* kCheckpointFormat = "upcycle-checkpoint";
inline constexpr std::int64_t kCheckpointVersion = 1;

struct TrainState {
  std::string stage;
  std::int64_t step = 0;  // optimiser steps completed
  RngStream dropout_rng;
  ShardedSampler::Cursor cursor;
};

// Writes the checkpoint at `path` atomically (call on one rank).
void save_checkpoint(const std::string& path, const Config& cfg, const nn::Module& model, const AdamW* optimizer,
                     const TrainState& state);

// Reads a checkpoint into `model` (shapes must match the model built from the config), and into
// `optimizer` and `state` when given. Throws Error naming the file and the dataset for a missing,
// truncated, foreign or mismatched file; nothing is modified unless every tensor was read.
void load_checkpoint(const std::string& path, nn::Module& model, AdamW* optimizer, TrainState* state);

// The INI text of the config a checkpoint was written with.
std::string checkpoint_config_text(const std::string& path);

// <run dir>/checkpoints/step-NNNNNNN.h5, and the latest.h5 pointer next to them.
std::string step_checkpoint_path(const std::string& run_dir, std::int64_t step);
std::string latest_checkpoint_path(const std::string& run_dir);

// Saves step-NNNNNNN.h5, points latest.h5 at it (atomically) and removes all but the newest
// `keep` step files (keep = 0 keeps all).
void save_run_checkpoint(const std::string& run_dir, std::int64_t keep, const Config& cfg, const nn::Module& model,
                         const AdamW* optimizer, const TrainState& state);

}  // namespace upcycle
