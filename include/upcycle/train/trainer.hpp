#pragma once
// The training loop shared by every stage: micro-batched forward/backward, data-parallel gradient
// averaging in buckets, a non-finite guard, global-norm clipping, AdamW with warmup + cosine,
// periodic evaluation, metrics, progress and checkpoints, and exact resume.
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "upcycle/dist/communicator.hpp"
#include "upcycle/io/config.hpp"
#include "upcycle/io/metrics.hpp"
#include "upcycle/train/checkpoint.hpp"
#include "upcycle/train/eesd.hpp"
#include "upcycle/train/moe_training.hpp"
#include "upcycle/train/task.hpp"

namespace upcycle {

struct TrainResult {
  std::int64_t steps = 0;                    // optimiser steps completed (including resumed ones)
  std::vector<double> losses;                // mean training loss over all ranks, per step run here
  std::map<std::string, double> final_eval;  // the evaluation after the last step
  std::int64_t skipped_steps = 0;            // non-finite steps skipped (nan_policy = skip)
};

class Trainer {
 public:
  // `run_dir` empty: no files are written (tests).
  Trainer(const Config& cfg, std::shared_ptr<Communicator> world, Task& task, std::string stage, std::string run_dir);
  // An MoE task (Task::moe_layers non-empty) built with groups.expert_parallel: expert gradients
  // are summed over groups.expert_data_parallel and divided by the world size, replicated ones
  // averaged over the world; the global gradient norm counts every expert once; checkpoints store
  // experts by global id. Without an expert_parallel group the layers must hold all experts (P = 1).
  Trainer(const Config& cfg, const ProcessGroups& groups, Task& task, std::string stage, std::string run_dir);
  // Trains until train.steps, resuming first as checkpoint.resume says (train/resume.hpp) or from
  // the path given to resume_from_path. A stop request (train/stop_request.hpp) ends the run after
  // the current step with a checkpoint and StopRequested. A checkpoint at the stage's last step
  // returns at once: the stage is complete.
  TrainResult run();
  // Resume from `path` ("" = start fresh) instead of resolving checkpoint.resume (a caller that had
  // to decide before building the trainer, e.g. whether to load an initialisation).
  void resume_from_path(std::string path) { resume_override_ = std::move(path); }
  // The config recorded as the run directory's config.ini once the run has started, when it is
  // not this stage's own (stage moe trains under train.moe_steps / moe_lr but records the chain's).
  void record_config_as(const Config& run_config) { run_config_ = &run_config; }
  AdamW& optimizer() { return *optimizer_; }
  // The EMA teacher of an MoE run with eesd.enabled (null otherwise).
  const ExpertEnsembleDistillation* distillation() const { return eesd_.get(); }

 private:
  void resume_from(const std::string& path);
  // A fresh start: cuts this stage's events of an earlier attempt from metrics.jsonl.
  void start_fresh();
  // cut_metrics_after on this run's metrics.jsonl for this stage (rank 0, metrics enabled).
  std::int64_t cut_own_metrics_after(std::int64_t step);
  // Logs the stop and throws StopRequested (the checkpoint of this step is written).
  [[noreturn]] void stop_after_checkpoint(int local_signal);
  void log_step(std::int64_t step, double loss, double lr, double grad_norm, double tokens_per_s);
  std::map<std::string, double> evaluate(std::int64_t step);
  void checkpoint();
  // A console line on rank 0 (through the progress display), shown when `level` is enabled.
  void say(const std::string& line, LogLevel level = LogLevel::info);

  const Config& cfg_;
  std::shared_ptr<Communicator> world_;
  ProcessGroups groups_;  // expert_parallel / expert_data_parallel set for an MoE model
  Task& task_;
  std::string stage_, run_dir_;
  std::vector<Var> params_;
  std::vector<Var> replicated_, experts_;  // params_ split by MoeLayer::is_expert_parameter
  std::unique_ptr<MoeTraining> moe_;
  std::unique_ptr<ExpertEnsembleDistillation> eesd_;  // an MoE task with eesd.enabled
  std::unique_ptr<AdamW> optimizer_;
  TrainState state_;
  MetricsWriter metrics_;
  std::unique_ptr<Progress> progress_;
  std::optional<std::string> resume_override_;
  const Config* run_config_ = nullptr;
};


}  // namespace upcycle
