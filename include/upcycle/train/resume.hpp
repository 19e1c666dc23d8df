#pragma once
// How checkpoint.resume resolves for a training stage (docs/training.md "Resuming"):
//   ""       start fresh;
//   "auto"   the newest checkpoint of <run.dir>/checkpoints/<stage>/ that verifies (latest.h5
//            first, then the step files newest first; corrupt or truncated ones are reported and
//            skipped), or fresh when the folder has none. Applies to every training stage of a
//            chain, so a first submission and a requeue use the same command line;
//   "latest" <run.dir>/checkpoints/<stage>/latest.h5, which must exist (first training stage);
//   a path  that checkpoint (first training stage).
#include <string>
#include <vector>

#include "upcycle/dist/communicator.hpp"
#include "upcycle/io/config.hpp"

namespace upcycle {

struct ResumeChoice {
  std::string path;                   // "" = start fresh
  std::vector<std::string> rejected;  // auto: "<file>: <problem>" for each checkpoint skipped as corrupt
};

// Collective over `world`: rank 0 decides (auto reads the candidates through, verifying their
// checksums) and broadcasts the choice, so every rank resumes from the same file. Throws Error
// when checkpoint.resume = latest or a path names no file.
ResumeChoice resolve_resume(const Config& cfg, const std::string& stage, Communicator& world);

// The keys that change a run's trajectory (learning-rate schedule, steps, batch, seed, optimiser,
// losses, data) whose value in `cfg` differs from the config a checkpoint was written with, as
// "key: old -> new". Keys that change shapes fail the load itself; keys that change neither
// (logging, checkpoint cadence, evaluation, communication) are not listed. A checkpoint config
// this build cannot parse gives one entry saying so.
std::vector<std::string> changed_trajectory_keys(const Config& cfg, const std::string& checkpoint_config_text);

// Step checkpoints of `checkpoint_dir` with a step greater than `step`, newest first: what a run
// resumed from `step` in that folder would overwrite.
std::vector<std::string> step_checkpoints_after(const std::string& checkpoint_dir, std::int64_t step);

// Collective over `world`, after resuming `stage` from choice.path at `step`: the step files of the
// stage folder newer than `step` are what continuing would overwrite with another trajectory.
// Those that checkpoint.resume = auto skipped as damaged are renamed to <file>.damaged (kept for a
// post-mortem, never a candidate again); valid newer ones (an explicit older path) are deleted
// with run.overwrite = true and are otherwise an Error naming them, on every rank.
void set_aside_newer_checkpoints(const Config& cfg, const std::string& stage, std::int64_t step,
                                 const ResumeChoice& choice, Communicator& world);

}  // namespace upcycle
