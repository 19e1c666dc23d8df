#include "upcycle/train/trainer.hpp"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>

#include "upcycle/backend/backend.hpp"
#include "upcycle/io/metrics_history.hpp"
#include "upcycle/ops/elementwise.hpp"
#include "upcycle/train/batch_stager.hpp"
#include "upcycle/ops/shape.hpp"
#include "upcycle/train/grad_reducer.hpp"
#include "upcycle/train/resume.hpp"
#include "upcycle/train/run_directory.hpp"
#include "upcycle/train/stop_request.hpp"

namespace upcycle {

namespace fs = std::filesystem;

namespace {
bool is_root(const Communicator& c) { return c.rank() == 0; }

// The stream that drives dropout on this rank: distinct per rank (different examples), fixed by
// the seed, and saved with its offset in checkpoints.
RngStream dropout_stream(const Config& cfg, int rank) {
  return RngStream(static_cast<std::uint64_t>(cfg.get_int("run.seed")) * 1000003ull + 17ull + static_cast<std::uint64_t>(rank));
}
}  // namespace

Trainer::Trainer(const Config& cfg, std::shared_ptr<Communicator> world, Task& task, std::string stage,
                 std::string run_dir)
    : Trainer(cfg, ProcessGroups{std::move(world), nullptr, nullptr}, task, std::move(stage), std::move(run_dir)) {}

Trainer::Trainer(const Config& cfg, const ProcessGroups& groups, Task& task, std::string stage, std::string run_dir)
    : cfg_(cfg), world_(groups.world), groups_(groups), task_(task), stage_(std::move(stage)), run_dir_(std::move(run_dir)) {
  UPCYCLE_CHECK(world_ != nullptr, "Trainer needs a world communicator");
  const auto named = task_.model().named_parameters();
  for (const auto& [name, p] : named) {
    params_.push_back(p);
    (moe::MoeLayer::is_expert_parameter(name) ? experts_ : replicated_).push_back(p);
  }
  moe_ = std::make_unique<MoeTraining>(cfg, world_, task_);
  if (moe_->enabled()) {
    const auto& layer = *task_.moe_layers().front().second;
    if (!groups_.expert_parallel) {
      UPCYCLE_CHECK(layer.ep_size() == 1, "Trainer: the MoE layers are sharded over ", layer.ep_size(),
                    " ranks: pass the ProcessGroups they were built with");
      groups_.expert_parallel = layer.ep_communicator();
      groups_.expert_data_parallel = world_;
    }
    UPCYCLE_CHECK(groups_.expert_parallel->size() == layer.ep_size() && groups_.expert_data_parallel != nullptr &&
                      groups_.expert_parallel->size() * groups_.expert_data_parallel->size() == world_->size(),
                  "Trainer: inconsistent process groups (EP ", groups_.expert_parallel->size(), ", the layers' EP ",
                  layer.ep_size(), ", world ", world_->size(), ")");
    // The teacher starts as the student is now (the upcycled or random initialisation); a resume
    // then loads the saved teacher over it.
    if (cfg.get_bool("eesd.enabled")) eesd_ = std::make_unique<ExpertEnsembleDistillation>(cfg, task_);
  } else {
    moe_.reset();
    replicated_ = params_;
    experts_.clear();
  }
  AdamWOptions o;
  o.beta1 = cfg.get_float("train.beta1");
  o.beta2 = cfg.get_float("train.beta2");
  o.eps = cfg.get_float("train.adam_eps");
  o.weight_decay = cfg.get_float("train.weight_decay");
  optimizer_ = std::make_unique<AdamW>(named, o);
  state_.stage = stage_;
  state_.dropout_rng = dropout_stream(cfg, world_->rank());
  if (!run_dir_.empty() && is_root(*world_)) {
    fs::create_directories(run_dir_);
    metrics_ = MetricsWriter((fs::path(run_dir_) / "metrics.jsonl").string());
  }
}

void Trainer::resume_from(const std::string& path) {
  CheckpointLoadOptions options;
  if (moe_) {
    options.expert_shard = groups_.expert_parallel->rank();
    options.expert_shards = groups_.expert_parallel->size();
    options.optional = moe_->state_tensors();
  }
  // A checkpoint written without EESD (or by the dense-to-MoE path) has no teacher: it then starts
  // as a copy of the resumed student.
  const bool teacher_saved = eesd_ && checkpoint_has_dataset(path, kTeacherPrefix + task_.model().named_parameters().front().first);
  if (teacher_saved) options.modules.emplace_back(kTeacherPrefix, &eesd_->teacher());
  load_checkpoint(path, task_.model(), optimizer_.get(), &state_, &options);
  if (eesd_ && !teacher_saved) {
    eesd_->copy_student_into_teacher();
    say("[" + stage_ + "] " + path + " has no EESD teacher: it starts as a copy of the resumed student", LogLevel::warn);
  }
  task_.sampler().restore(state_.cursor);
  // Dropout streams are per rank: keep this rank's seed, continue from the saved offset.
  state_.dropout_rng = RngStream(dropout_stream(cfg_, world_->rank()).seed(), state_.dropout_rng.offset());
  state_.stage = stage_;
  say("[" + stage_ + "] resumed from " + path + " at step " + std::to_string(state_.step));
  if (!is_root(*world_)) return;
  const std::vector<std::string> changed = changed_trajectory_keys(cfg_, checkpoint_config_text(path));
  if (!changed.empty()) {
    std::string list;
    for (const auto& c : changed) list += (list.empty() ? "" : "; ") + c;
    say("[" + stage_ + "] resuming under a changed config (" + list +
            "): from here the run does not follow the trajectory of the run that wrote the checkpoint",
        LogLevel::warn);
  }
  if (metrics_.enabled()) {
    // The killed run's events after the checkpoint are cut, so each step appears once.
    const std::int64_t dropped = cut_own_metrics_after(state_.step);
    std::string keys = "[";
    for (const auto& c : changed) keys += (keys.size() > 1 ? ", \"" : "\"") + json_escape(c) + "\"";
    metrics_.write(JsonObject()
                       .add("event", "resume")
                       .add("stage", stage_)
                       .add("step", state_.step)
                       .add("checkpoint", path)
                       .add("dropped_events", dropped)
                       .add_raw("changed_keys", keys + "]"));
  }
}

void Trainer::start_fresh() {
  if (!metrics_.enabled()) return;
  // Events of this stage from an earlier attempt that saved no checkpoint (checkpoint.resume = auto
  // found none) would otherwise appear twice.
  const std::int64_t dropped = cut_own_metrics_after(-1);
  if (dropped > 0)
    metrics_.write(
        JsonObject().add("event", "restart").add("stage", stage_).add("step", 0).add("dropped_events", dropped));
}

std::int64_t Trainer::cut_own_metrics_after(std::int64_t step) {
  // The writer is closed around the cut: the cut replaces the file by a rename, and a writer left
  // open would go on appending to the replaced one.
  const std::string path = (fs::path(run_dir_) / "metrics.jsonl").string();
  metrics_ = MetricsWriter();
  const std::int64_t dropped = cut_metrics_after(path, stage_, step);
  metrics_ = MetricsWriter(path);
  return dropped;
}

void Trainer::say(const std::string& line, LogLevel level) {
  if (!is_root(*world_)) return;
  if (progress_)
    progress_->message(line, level);
  else
    log_message(level, line);
}

void Trainer::log_step(std::int64_t step, double loss, double lr, double gnorm, double tokens_per_s) {
  JsonObject o;
  o.add("event", "train")
      .add("stage", stage_)
      .add("step", step)
      .add("loss", loss)
      .add("lr", lr)
      .add("grad_norm", gnorm)
      .add("tokens_per_s", tokens_per_s);
  if (moe_) moe_->add_metrics(o);  // on every rank: it also resets the loss averages
  if (eesd_) eesd_->add_metrics(o);
  if (!is_root(*world_)) return;
  metrics_.write(o);
}

std::map<std::string, double> Trainer::evaluate(std::int64_t step) {
  auto result = task_.evaluate(*world_);
  if (is_root(*world_)) {
    JsonObject o;
    o.add("event", "eval").add("stage", stage_).add("step", step);
    std::string line = "[" + stage_ + "] eval at step " + std::to_string(step) + ":";
    for (const auto& [k, v] : result) {
      o.add(k, v);
      char buf[64];
      std::snprintf(buf, sizeof buf, " %s %.4f", k.c_str(), v);
      line += buf;
    }
    metrics_.write(o);
    say(line);
  }
  return result;
}

void Trainer::stop_after_checkpoint(int local_signal) {
  const std::string by = local_signal != 0 ? signal_name(local_signal) : "a stop signal to another rank";
  say("[" + stage_ + "] stopping after step " + std::to_string(state_.step) + " on " + by +
      ": checkpoint saved; checkpoint.resume = auto continues from it", LogLevel::warn);
  if (is_root(*world_))
    metrics_.write(
        JsonObject().add("event", "stopped").add("stage", stage_).add("step", state_.step).add("signal", by));
  if (progress_) progress_->finish();
  throw StopRequested(local_signal, stage_, state_.step);
}

void Trainer::checkpoint() {
  if (run_dir_.empty()) return;
  state_.cursor = task_.sampler().cursor();
  // Replicated parameters are the same everywhere and rank 0 writes them; expert tensors are first
  // gathered by global expert id over rank 0's expert-parallel group (ranks 0..P-1). The barrier
  // keeps ranks from racing ahead to a resume or a next stage that reads the file.
  CheckpointShards shards;
  if (moe_) {
    if (groups_.expert_data_parallel->rank() == 0) {
      shards.full = gather_expert_tensors(task_.model(), optimizer_.get(), *groups_.expert_parallel);
      if (eesd_) gather_module_experts(eesd_->teacher(), kTeacherPrefix, *groups_.expert_parallel, shards.full);
    }
    shards.extras = moe_->state_tensors();
    if (eesd_) shards.modules.emplace_back(kTeacherPrefix, &eesd_->teacher());
  }
  if (is_root(*world_)) {
    TrainState s = state_;
    s.dropout_rng = state_.dropout_rng;
    save_run_checkpoint(stage_checkpoint_dir(run_dir_, stage_), cfg_.get_int("checkpoint.keep"), cfg_, task_.model(), optimizer_.get(), s,
                        moe_ ? &shards : nullptr);
  }
  world_->barrier();
}

TrainResult Trainer::run() {
  const std::int64_t total = cfg_.get_int("train.steps");
  const std::int64_t micro = cfg_.get_int("train.micro_batches");
  const std::int64_t warmup = cfg_.get_int("train.warmup_steps");
  const double lr_max = cfg_.get_float("train.lr"), lr_min = cfg_.get_float("train.min_lr");
  const std::string& schedule = cfg_.get_string("train.lr_schedule");
  const double clip = cfg_.get_float("train.grad_clip");
  const bool skip_nonfinite = cfg_.get_string("train.nan_policy") == "skip";
  const std::int64_t max_skipped = cfg_.get_int("train.max_skipped_steps");
  const std::int64_t log_every = cfg_.get_int("log.every");
  const std::int64_t eval_every = cfg_.get_int("train.eval_every");
  const std::int64_t ckpt_every = cfg_.get_int("checkpoint.every");
  ResumeChoice resume;
  if (resume_override_)
    resume.path = *resume_override_;
  else
    resume = resolve_resume(cfg_, stage_, *world_);
  for (const auto& r : resume.rejected) say("[" + stage_ + "] skipped a damaged checkpoint: " + r, LogLevel::warn);
  if (!resume.path.empty()) {
    resume_from(resume.path);
    // Continuing from an older checkpoint would overwrite the newer step files of the folder with
    // another trajectory's; damaged ones that auto skipped are set aside.
    set_aside_newer_checkpoints(cfg_, stage_, state_.step, resume, *world_);
  } else {
    start_fresh();
  }
  // The run has started: its inputs (data, model, checkpoint) loaded.
  if (!run_dir_.empty() && is_root(*world_)) record_run_config(run_config_ ? *run_config_ : cfg_);
  TrainResult result;
  if (state_.step >= total && !resume.path.empty()) {
    // The checkpoint is the stage's last one (a requeue after the stage finished): nothing to redo,
    // and its final evaluation is already in metrics.jsonl.
    say("[" + stage_ + "] already complete at step " + std::to_string(state_.step) + " (" + resume.path + ")");
    result.steps = state_.step;
    result.final_eval = task_.evaluate(*world_);
    return result;
  }
  const std::string& progress_mode = cfg_.get_string("log.progress");
  if (is_root(*world_) && progress_mode != "off")
    progress_ = std::make_unique<Progress>(stage_, total, state_.step, progress_redraws(progress_mode));
  const std::size_t bucket_bytes = static_cast<std::size_t>(cfg_.get_int("parallel.grad_bucket_mb")) << 20;
  const bool overlap = cfg_.get_bool("parallel.overlap_grad_reduce");
  GradReducer reducer(replicated_, world_, bucket_bytes, 0.0, overlap);
  // Expert gradients: summed over the expert-data-parallel group, divided by the world size.
  std::unique_ptr<GradReducer> expert_reducer;
  if (moe_)
    expert_reducer = std::make_unique<GradReducer>(experts_, groups_.expert_data_parallel, bucket_bytes,
                                                   static_cast<double>(world_->size()), overlap);
  const Device device = task_.device();
  Backend& be = backend_for(device);
  BatchStager stager(device);
  // What a step reads on the host, gathered on the device first so that the host waits once per
  // step: [loss (this rank's micro-batch mean), tokens, stop requests (ranks that got SIGTERM or
  // SIGUSR1), replicated gradients' sum of squares, expert gradients' sum of squares (summed over
  // the EP group: each expert lives on one rank)]. The first three are summed over the world.
  Tensor step_stats = Tensor::empty({5}, DType::f64, device);
  auto stat_slot = [&](std::int64_t i) { return step_stats.rows(i, i + 1); };

  auto lr_at = [&](std::int64_t step) {
    if (schedule == "constant") return lr_max;
    if (schedule == "linear") {
      if (step < warmup) return lr_max * static_cast<double>(step + 1) / static_cast<double>(warmup);
      const double f = std::min(1.0, static_cast<double>(step - warmup) / std::max<double>(1.0, static_cast<double>(total - warmup)));
      return lr_max + (lr_min - lr_max) * f;
    }
    return warmup_cosine_lr(step, total, warmup, lr_max, lr_min);
  };

  std::int64_t skipped_in_a_row = 0;
  if (cfg_.get_bool("train.eval_at_start") && state_.step == 0) evaluate(0);
  task_.model().train(true);
  auto window_start = std::chrono::steady_clock::now();
  double window_tokens = 0, window_loss = 0;
  std::int64_t window_steps = 0;
  while (state_.step < total) {
    const std::int64_t step = state_.step;
    const double lr = lr_at(step);
    optimizer_->zero_grad();
    const Batch batch = stager.stage(task_.next_batch());
    const std::int64_t rows = batch.inputs.dim(0);
    UPCYCLE_CHECK(rows % micro == 0, "the per-rank batch (", rows, ") is not divisible by train.micro_batches (", micro, ")");
    be.fill(step_stats, 0.0);
    Tensor loss_slot = stat_slot(0);
    const bool log_now = (step + 1) % log_every == 0 || step + 1 == total;
    for (std::int64_t m = 0; m < micro; ++m) {
      Batch part;
      part.inputs = batch.inputs.rows(m * rows / micro, (m + 1) * rows / micro);
      part.targets = batch.targets.rows(m * rows / micro, (m + 1) * rows / micro);
      Var loss = task_.loss(part, &state_.dropout_rng);
      be.axpy(1.0 / static_cast<double>(micro), loss.value().to(DType::f64), loss_slot);
      if (moe_) {
        // Router regularisers of every MoE layer (global ones weighted by W for the backward).
        const MoeTraining::Losses aux = moe_->losses(part);
        if (aux.backward.defined()) loss = loss + reshape(aux.backward, loss.shape());
        if (aux.value.defined()) be.axpy(1.0 / static_cast<double>(micro), aux.value, loss_slot);
        if (eesd_) {
          // Distillation towards the EMA teacher (before the routing is freed below).
          const ExpertEnsembleDistillation::Loss d = eesd_->loss(part);
          loss = loss + reshape(d.backward, loss.shape());
          be.axpy(1.0 / static_cast<double>(micro), d.value, loss_slot);
        }
      }
      if (m + 1 == micro) {  // the last backward of the step: buckets may start as their gradients are final
        reducer.arm();
        if (expert_reducer) expert_reducer->arm();
      }
      mul_scalar(loss, 1.0 / static_cast<double>(micro)).backward();
      // Routing statistics of the last micro-batch of a logged step.
      if (moe_) moe_->after_micro_batch(log_now && m + 1 == micro);
    }
    reducer.reduce();
    if (expert_reducer) expert_reducer->reduce();
    // Global gradient norm: replicated gradients once, expert gradients summed over the EP group.
    stat_slot(3).copy_from(grad_sum_squares_on_device(replicated_));
    if (moe_) {
      Tensor expert_sq = grad_sum_squares_on_device(experts_);
      groups_.expert_parallel->all_reduce(expert_sq);
      stat_slot(4).copy_from(expert_sq);
    }
    // Loss, tokens and stop requests are summed over the world (gradients are already reduced).
    Tensor world_part = step_stats.rows(0, 3);
    const int local_stop = stop_signal();
    step_stats.rows(1, 3).copy_from(Tensor::from_vector<double>(
        {static_cast<double>(batch.tokens), local_stop != 0 ? 1.0 : 0.0}, {2}, device));
    world_->all_reduce(world_part);
    const std::vector<double> sv = step_stats.to_vector<double>();  // the step's one host wait
    const double loss = sv[0] / world_->size();
    const double gnorm = std::sqrt(sv[3] + sv[4]);
    const bool stop_now = sv[2] > 0;
    state_.step = step + 1;
    const bool finite = std::isfinite(loss) && std::isfinite(gnorm);
    if (finite) {
      skipped_in_a_row = 0;
      if (clip > 0 && gnorm > clip) scale_grads(params_, clip / gnorm);
      optimizer_->step(lr);
      if (moe_) moe_->after_step();
      if (eesd_) eesd_->after_step();
      result.losses.push_back(loss);
      window_tokens += sv[1];
      window_loss += loss;
      ++window_steps;
    } else {
      if (!skip_nonfinite)
        UPCYCLE_THROW("non-finite ", std::isfinite(loss) ? "gradient" : "loss", " at step ", step + 1, " of stage ",
                      stage_, " (loss ", loss, ", gradient norm ", gnorm,
                      "); lower train.lr, or set train.nan_policy = skip to skip such steps");
      ++result.skipped_steps;
      ++skipped_in_a_row;
      if (moe_) moe_->after_step(false);
      if (skipped_in_a_row > max_skipped)
        UPCYCLE_THROW("train.nan_policy = skip: ", skipped_in_a_row, " consecutive steps (", step + 2 - skipped_in_a_row,
                      " to ", step + 1, ") of stage ", stage_,
                      " had a non-finite loss or gradient, more than train.max_skipped_steps = ", max_skipped,
                      ": the run diverged; lower train.lr (or raise train.max_skipped_steps)");
      say("[" + stage_ + "] step " + std::to_string(step + 1) + ": non-finite loss or gradient, update skipped",
          LogLevel::warn);
      if (is_root(*world_))
        metrics_.write(JsonObject().add("event", "skipped_step").add("stage", stage_).add("step", step + 1));
    }

    const std::int64_t done = state_.step;
    if ((done % log_every == 0 || done == total) && window_steps > 0) {
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - window_start).count();
      const double tps = secs > 0 ? window_tokens / secs : 0.0;
      log_step(done, window_loss / static_cast<double>(window_steps), lr, gnorm, tps);
      if (progress_) progress_->update(done, window_loss / static_cast<double>(window_steps), lr, tps);
      window_start = std::chrono::steady_clock::now();
      window_tokens = window_loss = 0;
      window_steps = 0;
    }
    const bool eval_now = eval_every > 0 && done % eval_every == 0 && done != total && !stop_now;
    const bool ckpt_now = ckpt_every > 0 && done % ckpt_every == 0 && done != total;
    if (eval_now) evaluate(done);
    if (ckpt_now || (stop_now && done != total)) checkpoint();
    if (stop_now && done != total) stop_after_checkpoint(local_stop);
    // Evaluation and checkpoint time is not training throughput.
    if (eval_now || ckpt_now) window_start = std::chrono::steady_clock::now();
  }
  result.final_eval = evaluate(state_.step);
  checkpoint();
  if (progress_) progress_->finish();
  result.steps = state_.step;
  return result;
}

}  // namespace upcycle
