#include "upcycle/train/stages.hpp"

#include <filesystem>
#include <fstream>
#include <functional>

#include "upcycle/io/metrics.hpp"
#include "upcycle/train/moe_training.hpp"
#include "upcycle/train/trainer.hpp"

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
  const fs::path path = fs::path(cfg.get_string("run.dir")) / "report.json";
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp);
    out << o.str() << "\n";
    UPCYCLE_CHECK(out.good(), tmp.string(), ": cannot write the report");
  }
  fs::rename(tmp, path);
}

void run_dense(const Config& cfg, std::shared_ptr<Communicator> world) {
  auto task = make_task(cfg, *world);
  Trainer trainer(cfg, world, *task, "dense", cfg.get_string("run.dir"));
  write_report(cfg, *world, "dense", trainer.run());
}

// Trains the MoE model of the config: from checkpoint.resume (an MoE checkpoint, any expert-parallel
// size) or, when none is given, from random initialisation (run.seed).
void run_moe(const Config& cfg, std::shared_ptr<Communicator> world) {
  const int P = expert_parallel_size(cfg, world->size());
  const ProcessGroups groups = make_process_groups(world, P);
  TaskOptions options;
  options.moe = true;
  options.expert_parallel = groups.expert_parallel;
  auto task = make_task(cfg, *world, options);
  Trainer trainer(cfg, groups, *task, "moe", cfg.get_string("run.dir"));
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

using StageFn = void (*)(const Config&, std::shared_ptr<Communicator>);

struct Stage {
  const char* name;
  StageFn run;  // null: not in this build yet
};

// The one table of stages.
constexpr Stage kStages[] = {
    {"dense", &run_dense},
    {"upcycle", nullptr},
    {"moe", &run_moe},
    {"eval", nullptr},
};

}  // namespace

std::vector<std::string> available_stages() {
  std::vector<std::string> out;
  for (const auto& s : kStages)
    if (s.run) out.emplace_back(s.name);
  return out;
}

void run_stages(const Config& cfg, std::shared_ptr<Communicator> world) {
  // Keys whose other values need a GPU build (the CUDA backend and NCCL are not in this version).
  if (cfg.get_string("run.device") == "cuda")
    UPCYCLE_USAGE_ERROR("run.device = cuda: this build has no CUDA backend (use auto or cpu)");
  if (cfg.get_string("parallel.backend") == "nccl")
    UPCYCLE_USAGE_ERROR("parallel.backend = nccl: this build has no NCCL communicator (use mpi)");
  const auto& stages = cfg.get_string_list("run.stages");
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
  for (const auto& name : stages)
    for (const auto& s : kStages)
      if (name == s.name) s.run(cfg, world);
}

}  // namespace upcycle
