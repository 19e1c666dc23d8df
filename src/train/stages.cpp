#include "upcycle/train/stages.hpp"

#include <filesystem>
#include <fstream>
#include <algorithm>
#include <functional>
#include <iostream>

#include "upcycle/dist/comm_backend.hpp"
#include "upcycle/io/log.hpp"
#include "upcycle/io/metrics.hpp"
#include "upcycle/train/eval_stage.hpp"
#include "upcycle/train/eesd.hpp"
#include "upcycle/train/moe_training.hpp"
#include "upcycle/train/resume.hpp"
#include "upcycle/train/trainer.hpp"
#include "upcycle/train/upcycle_stage.hpp"

namespace upcycle {

namespace fs = std::filesystem;

namespace {

void write_report(const Config& cfg, const Communicator& world, const std::string& stage, const TrainResult& r,
                  const std::function<void(JsonObject&)>& more = {}) {
  if (world.rank() != 0) return;
  JsonObject o;
  o.add("stage", stage).add("steps", r.steps).add("skipped_steps", r.skipped_steps);
  if (more) more(o);
  if (!r.losses.empty()) o.add("final_train_loss", r.losses.back());
  for (const auto& [k, v] : r.final_eval) o.add(k, v);
  o.add("world_size", world.size());
  write_json_file((fs::path(cfg.get_string("run.dir")) / "report.json").string(), o);
}

void run_dense(const Config& cfg, std::shared_ptr<Communicator> world) {
  auto task = make_task(cfg, *world);
  Trainer trainer(cfg, world, *task, "dense", cfg.get_string("run.dir"));
  write_report(cfg, *world, "dense", trainer.run());
}

// The MoE checkpoint stage moe starts from when it does not resume: "" = random initialisation.
std::string moe_init_path(const Config& cfg) {
  const std::string& init = cfg.get_string("moe.init");
  const std::string upcycled = upcycled_checkpoint_path(cfg.get_string("run.dir"));
  if (init == "random") return "";
  if (init == "auto") {
    const auto& stages = cfg.get_string_list("run.stages");
    const auto up = std::find(stages.begin(), stages.end(), "upcycle");
    return up != stages.end() && std::find(up, stages.end(), "moe") != stages.end() ? upcycled : "";
  }
  const std::string path = init == "upcycled" ? upcycled : init;
  if (!fs::exists(path))
    UPCYCLE_USAGE_ERROR("moe.init = ", init, ": the MoE checkpoint ", path,
                        " does not exist; write it with the upcycle stage (run.stages = upcycle,moe) or set moe.init = "
                        "random");
  return path;
}

// Trains the MoE model of the config: from checkpoint.resume (an MoE checkpoint, any expert-parallel
// size), else from moe.init (the upcycled checkpoint: weights only, fresh optimiser, step 0), else
// from random initialisation (run.seed).
void run_moe(const Config& chain_cfg, std::shared_ptr<Communicator> world) {
  // train.moe_steps / train.moe_lr replace train.steps / train.lr for this stage.
  std::vector<ConfigOverride> own;
  if (chain_cfg.get_int("train.moe_steps") > 0) own.push_back({"train.steps", chain_cfg.value_text("train.moe_steps")});
  if (chain_cfg.get_float("train.moe_lr") > 0) own.push_back({"train.lr", chain_cfg.value_text("train.moe_lr")});
  const Config cfg = own.empty() ? chain_cfg : parse_config(chain_cfg.to_ini(), "the resolved config", own);
  const int P = expert_parallel_size(cfg, world->size());
  MoeTask moe_task = make_moe_task(cfg, world);
  const ProcessGroups& groups = moe_task.groups;
  std::unique_ptr<Task>& task = moe_task.task;
  // Resolved before the trainer exists: the initialisation must be in the model when the trainer
  // copies it into the EESD teacher.
  const ResumeChoice resume = resolve_resume(cfg, "moe", *world);
  if (resume.path.empty()) {
    const std::string init = moe_init_path(cfg);
    if (!init.empty()) {
      CheckpointLoadOptions lo;
      lo.expert_shard = groups.expert_parallel->rank();
      lo.expert_shards = groups.expert_parallel->size();
      load_checkpoint(init, task->model(), nullptr, nullptr, &lo);
      if (world->rank() == 0) log_info("[moe] initialised from " + init);
    }
  }
  Trainer trainer(cfg, groups, *task, "moe", cfg.get_string("run.dir"));
  for (const auto& r : resume.rejected)
    if (world->rank() == 0) log_warn("[moe] skipped a damaged checkpoint: " + r);
  trainer.resume_from_path(resume.path);
  trainer.record_config_as(chain_cfg);
  const TrainResult r = trainer.run();
  write_report(cfg, *world, "moe", r, [&](JsonObject& o) {
    o.add("expert_parallel", P);
    o.add("num_experts", cfg.get_int("moe.num_experts"));
    o.add("top_k", cfg.get_int("moe.top_k"));
    std::vector<std::int64_t> blocks;
    for (const auto& [name, layer] : task->moe_layers()) blocks.push_back(std::stoll(name.substr(7, name.size() - 11)));
    o.add("moe_blocks", blocks);
  });
}

// With checkpoint.resume = auto an upcycled checkpoint that verifies is not redone: a requeued chain
// goes on to the MoE stage it was in.
void run_upcycle_unless_done(const Config& cfg, std::shared_ptr<Communicator> world) {
  if (cfg.get_string("checkpoint.resume") == "auto") {
    const std::string path = upcycled_checkpoint_path(cfg.get_string("run.dir"));
    int done = 0;
    if (world->rank() == 0) done = fs::exists(path) && check_checkpoint(path).ok ? 1 : 0;
    Tensor flag = Tensor::from_vector<std::int64_t>({done}, {1}, Device::cpu);
    world->broadcast(flag, 0);
    if (flag.to_vector<std::int64_t>()[0] != 0) {
      if (world->rank() == 0) log_info("[upcycle] " + path + " exists and verifies (checkpoint.resume = auto): not redone");
      return;
    }
  }
  run_upcycle_stage(cfg, std::move(world));
}

using StageFn = void (*)(const Config&, std::shared_ptr<Communicator>);

struct Stage {
  const char* name;
  StageFn run;  // null: not in this build yet
  bool trains;  // a training stage (checkpoint.resume applies to the first of them)
};

// The one table of stages.
constexpr Stage kStages[] = {
    {"dense", &run_dense, true},
    {"upcycle", &run_upcycle_unless_done, false},
    {"moe", &run_moe, true},
    {"eval", &run_eval_stage, false},
};

}  // namespace

std::vector<std::string> available_stages() {
  std::vector<std::string> out;
  for (const auto& s : kStages)
    if (s.run) out.emplace_back(s.name);
  return out;
}

void check_stages_runnable(const Config& cfg) {
  const auto& stages = cfg.get_string_list("run.stages");
  // EESD distils the MoE stage's experts: without that stage the key would do nothing.
  if (cfg.get_bool("eesd.enabled") && std::find(stages.begin(), stages.end(), "moe") == stages.end())
    UPCYCLE_USAGE_ERROR("eesd.enabled = true (", cfg.origin("eesd.enabled"),
                        ") distils the experts of stage moe, but run.stages has no moe stage; add moe to run.stages "
                        "or set eesd.enabled = false");
  if (cfg.get_bool("eesd.enabled")) check_eesd_config(cfg);
  // parallel.backend = nccl with run.device = cpu, or in a build without NCCL. What needs the
  // resolved device (run.device = auto on a machine without a GPU) is refused once it is known
  // (resolve_comm_backend in upcycle_train), also before anything is written.
  check_comm_backend_request(cfg.get_string("parallel.backend"), cfg.get_string("run.device"), nccl_in_build());
  // An eval stage with no training stage before it scores checkpoints that must exist now: refuse
  // before anything is written (eval_checkpoints names the missing paths).
  const bool trains = std::find(stages.begin(), stages.end(), "dense") != stages.end() ||
                      std::find(stages.begin(), stages.end(), "moe") != stages.end();
  if (!trains && std::find(stages.begin(), stages.end(), "eval") != stages.end()) eval_checkpoints(cfg);
  // Check every stage before running any, so a typo does not cost a finished dense run.
  for (const auto& name : stages) {
    bool known = false;
    for (const auto& s : kStages) {
      if (name != s.name) continue;
      known = true;
      if (!s.run) {
        std::string available;
        for (const auto& a : available_stages()) available += (available.empty() ? "" : ", ") + a;
        UPCYCLE_USAGE_ERROR("run.stages: the stage '", name, "' is not available in this version (available: ",
                            available, ")");
      }
    }
    if (!known) UPCYCLE_USAGE_ERROR("run.stages: unknown stage '", name, "'");
  }
}

void run_stages(const Config& cfg, std::shared_ptr<Communicator> world) {
  check_stages_runnable(cfg);
  const auto& stages = cfg.get_string_list("run.stages");
  // checkpoint.resume = latest or a path applies to the first training stage of the chain only: the
  // later ones start from what the earlier ones wrote. auto applies to every stage.
  const bool resume_each = cfg.get_string("checkpoint.resume") == "auto";
  const Config later =
      resume_each ? cfg : parse_config(cfg.to_ini(), "the resolved config", {{"checkpoint.resume", ""}});
  bool trained = false;
  for (const auto& name : stages)
    for (const auto& s : kStages) {
      if (name != s.name) continue;
      s.run(trained ? later : cfg, world);
      trained = trained || s.trains;
    }
}

}  // namespace upcycle
