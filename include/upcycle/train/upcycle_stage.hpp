#pragma once
// Stage `upcycle` (docs/upcycling.md, docs/methods.md): reads a dense checkpoint, turns the FFN of every block of
// moe.blocks into an MoE layer with the initialiser of upcycle.method, copies every other parameter
// unchanged, and writes an MoE checkpoint (experts by global id, no optimiser state, step 0) that
// stage `moe` starts from. Layout of what it writes besides /model/...:
//   /upcycle/blocks/NN/cluster_sizes [E] i64, svd_ranks [E] i64, svd_energy [E] f64,
//   /upcycle/blocks/NN/kmeans_objective [iters] f64       (cluster only)
// and <run dir>/upcycle_report.json (method, its parameters, calibration, per block the k-means
// history, cluster sizes, SVD ranks, the time of each phase), also an "upcycle" event in
// metrics.jsonl.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "upcycle/dist/communicator.hpp"
#include "upcycle/init/ffn_upcycling.hpp"
#include "upcycle/io/config.hpp"
#include "upcycle/io/metrics.hpp"
#include "upcycle/train/calibration.hpp"
#include "upcycle/train/task.hpp"

namespace upcycle {

// [upcycle] and [moe] keys -> the initialisers' options.
init::UpcycleOptions upcycle_options_from(const Config& cfg);

// Where stage upcycle writes its checkpoint: <run dir>/checkpoints/upcycle/upcycled.h5.
std::string upcycled_checkpoint_path(const std::string& run_dir);
// The dense checkpoint stage upcycle reads: upcycle.dense_checkpoint, or the dense stage's
// <run dir>/checkpoints/dense/latest.h5.
std::string dense_checkpoint_for_upcycle(const Config& cfg);

struct UpcycleResult {
  std::vector<std::int64_t> blocks;             // MoE block indices
  std::vector<init::BlockReport> reports;       // one per MoE block
  std::map<std::string, Tensor> full_experts;   // "/model/blocks/NN/moe/experts/w1" -> [E, ...]
  Calibration calibration;                      // empty unless the method calibrates
  std::vector<std::pair<std::string, double>> seconds;  // phase -> seconds (all blocks)
};

// The core of the stage, without files: fills `moe_task`'s model (built with options.moe and the
// expert-parallel group it shards over) from `dense_task`'s model (already loaded). Collective over
// `world` for methods that calibrate. Throws UsageError for configs the method cannot serve
// (e.g. fewer calibration tokens than experts).
UpcycleResult upcycle_model(const Config& cfg, Task& dense_task, Task& moe_task, Communicator& world);

// The per-block report as JSON (for the report file and metrics.jsonl).
JsonObject block_report_json(std::int64_t block, const init::BlockReport& report);

// The whole stage: dense checkpoint in, <run dir>/checkpoints/upcycle/upcycled.h5 out.
void run_upcycle_stage(const Config& cfg, std::shared_ptr<Communicator> world);

}  // namespace upcycle
