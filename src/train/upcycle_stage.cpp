#include "upcycle/train/upcycle_stage.hpp"

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "model_config.hpp"
#include "upcycle/io/hdf5.hpp"
#include "upcycle/train/checkpoint.hpp"
#include "upcycle/train/moe_training.hpp"
#include "upcycle/train/run_directory.hpp"

namespace upcycle {

namespace fs = std::filesystem;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void add_seconds(std::vector<std::pair<std::string, double>>& into, const std::string& phase, double s) {
  for (auto& [name, v] : into)
    if (name == phase) {
      v += s;
      return;
    }
  into.emplace_back(phase, s);
}

// The dense FFN of block b, on the host.
init::DenseFfn dense_ffn_of(const nn::TransformerBlock& block) {
  UPCYCLE_CHECK(block.mlp != nullptr, "upcycling: the dense model's block has no dense FFN");
  const nn::Mlp& m = *block.mlp;
  init::DenseFfn d;
  d.w1 = m.fc1.weight.value().to(Device::cpu);
  d.w2 = m.fc2.weight.value().to(Device::cpu);
  if (m.fc1.bias.defined()) d.b1 = m.fc1.bias.value().to(Device::cpu);
  if (m.fc2.bias.defined()) d.b2 = m.fc2.bias.value().to(Device::cpu);
  d.rows_per_unit = nn::fc1_rows_per_unit(m.config().activation);
  return d;
}

// Rows [first, first + count) of `full` into the parameter `p` (its shape [count, ...]).
void assign_rows(Var& p, const Tensor& full, std::int64_t first, const std::string& what) {
  UPCYCLE_CHECK(full.defined() == p.defined(), "upcycling: ", what, " is ", full.defined() ? "" : "not ",
                "produced but the MoE layer ", p.defined() ? "has" : "has no", " such parameter");
  if (!p.defined()) return;
  const std::int64_t count = p.shape().dim(0);
  const Tensor part = full.rows(first, first + count);
  UPCYCLE_CHECK(part.shape() == p.shape(), "upcycling: ", what, " is ", describe(full), " but the layer holds ",
                describe(p.value()), " from expert ", first);
  p.value().copy_from(part.to(p.device()));
}

void check_dense_checkpoint_matches(const std::string& path, const Config& cfg) {
  const Config dense = parse_config(checkpoint_config_text(path), "checkpoint " + path);
  // Keys that shape the dense model (dropout and init do not change its tensors).
  static const char* kShapeKeys[] = {"model.kind",     "model.width",      "model.depth",     "model.heads",
                                     "model.ffn_width", "model.ffn_activation", "model.image_size", "model.channels",
                                     "model.patch_size", "model.num_classes", "model.pool",      "model.context",
                                     "model.vocab_size", "model.tie_embeddings"};
  for (const char* key : kShapeKeys)
    if (dense.value_text(key) != cfg.value_text(key))
      UPCYCLE_USAGE_ERROR("upcycle: the dense checkpoint ", path, " was trained with ", key, " = ", dense.value_text(key),
                          " but the config has ", key, " = ", cfg.value_text(key), " (", cfg.origin(key),
                          "); use the model keys of the dense run");
}

}  // namespace

init::UpcycleOptions upcycle_options_from(const Config& cfg) {
  init::UpcycleOptions o;
  o.method = cfg.get_string("upcycle.method");
  o.num_experts = cfg.get_int("moe.num_experts");
  o.top_k = cfg.get_int("moe.top_k");
  o.seed = static_cast<std::uint64_t>(cfg.get_int("run.seed"));
  o.router_std = cfg.get_float("upcycle.router_std");
  o.noise_std = cfg.get_float("upcycle.noise_std");
  o.drop_ratio = cfg.get_float("upcycle.drop_ratio");
  o.svd_keep_frac = cfg.get_float("upcycle.svd_keep_frac");
  o.granularity = cfg.get_int("upcycle.granularity");
  o.granular_scale = cfg.get_bool("upcycle.granular_scale");
  o.router_scale = cfg.get_float("upcycle.router_scale");
  o.kmeans_iters = cfg.get_int("upcycle.kmeans_iters");
  o.kmeans_init_sample = cfg.get_int("upcycle.kmeans_init_sample");
  o.svd.tau = cfg.get_float("upcycle.tau");
  o.svd.min_rank_frac = cfg.get_float("upcycle.min_rank_frac");
  o.svd.chol_eps = cfg.get_float("upcycle.chol_eps");
  o.random_subspace = cfg.get_string("upcycle.subspace") == "random";
  return o;
}

std::string upcycled_checkpoint_path(const std::string& run_dir) {
  return (fs::path(stage_checkpoint_dir(run_dir, "upcycle")) / "upcycled.h5").string();
}

std::string dense_checkpoint_for_upcycle(const Config& cfg) {
  const std::string& p = cfg.get_string("upcycle.dense_checkpoint");
  return p.empty() ? latest_checkpoint_path(stage_checkpoint_dir(cfg.get_string("run.dir"), "dense")) : p;
}

UpcycleResult upcycle_model(const Config& cfg, Task& dense_task, Task& moe_task, Communicator& world) {
  const init::UpcycleOptions options = upcycle_options_from(cfg);
  const init::UpcycleMethod& method = init::upcycle_method(options.method);
  UpcycleResult result;
  result.blocks = moe_block_indices_from(cfg);

  // Everything but the MoE FFNs is copied unchanged.
  const nn::Module& dense = dense_task.model();
  for (auto& [name, p] : moe_task.model().named_parameters()) {
    if (name.find("/moe/") != std::string::npos) continue;
    Var q = p;
    q.value().copy_from(dense.parameter(name).value().to(q.device()));
  }

  if (method.needs_calibration) {
    CalibrationOptions co;
    co.tokens = cfg.get_int("upcycle.calib_tokens");
    co.token_frac = cfg.get_float("upcycle.calib_token_frac");
    co.seed = init::upcycle_stream(options.seed, -1).seed();
    result.calibration = calibrate(dense_task, result.blocks, co, world);
    add_seconds(result.seconds, "calibration", result.calibration.seconds);
    if (result.calibration.global_tokens < options.num_experts)
      UPCYCLE_USAGE_ERROR("upcycle: calibration kept ", result.calibration.global_tokens,
                          " tokens, fewer than moe.num_experts = ", options.num_experts,
                          " clusters: raise upcycle.calib_tokens (", cfg.origin("upcycle.calib_tokens"),
                          ") or upcycle.calib_token_frac");
  }

  auto& dense_blocks = dense_task.blocks();
  auto& moe_blocks = moe_task.blocks();
  for (std::size_t i = 0; i < result.blocks.size(); ++i) {
    const std::int64_t b = result.blocks[i];
    const auto t0 = std::chrono::steady_clock::now();
    init::BlockContext ctx{options, b, method.needs_calibration ? &result.calibration.blocks[i] : nullptr, &world};
    init::BlockReport report;
    const init::DenseFfn ffn = dense_ffn_of(dense_blocks[static_cast<std::size_t>(b)]);
    init::ExpertSet s = method.run(ctx, ffn, report);
    for (const auto& [phase, secs] : report.seconds) add_seconds(result.seconds, phase, secs);
    add_seconds(result.seconds, "experts", seconds_since(t0));

    moe::MoeLayer& layer = *moe::moe_layer_of(moe_blocks[static_cast<std::size_t>(b)]);
    const std::string prefix = "blocks/" + nn::index_name(static_cast<std::size_t>(b)) + "/moe/";
    UPCYCLE_CHECK(s.router.shape() == layer.router.weight.shape(), "upcycling: the router is ", describe(s.router),
                  ", the layer's ", describe(layer.router.weight.value()));
    layer.router.weight.value().copy_from(s.router.to(layer.router.weight.device()));
    const std::int64_t first = layer.first_expert();
    assign_rows(layer.experts.w1, s.w1, first, prefix + "experts/w1");
    assign_rows(layer.experts.b1, s.b1, first, prefix + "experts/b1");
    assign_rows(layer.experts.w2, s.w2, first, prefix + "experts/w2");
    assign_rows(layer.experts.b2, s.b2, first, prefix + "experts/b2");
    for (const auto& [name, t] : {std::pair<const char*, const Tensor*>{"w1", &s.w1}, {"b1", &s.b1}, {"w2", &s.w2}, {"b2", &s.b2}})
      if (t->defined()) result.full_experts.emplace("/model/" + prefix + "experts/" + name, *t);
    // A shared expert starts as the dense FFN itself when it has the same width.
    if (layer.shared) {
      nn::Mlp& sh = *layer.shared;
      if (sh.fc1.weight.shape() == ffn.w1.shape()) {
        sh.fc1.weight.value().copy_from(ffn.w1.to(sh.fc1.weight.device()));
        sh.fc2.weight.value().copy_from(ffn.w2.to(sh.fc2.weight.device()));
        if (sh.fc1.bias.defined() && ffn.b1.defined()) sh.fc1.bias.value().copy_from(ffn.b1);
        if (sh.fc2.bias.defined() && ffn.b2.defined()) sh.fc2.bias.value().copy_from(ffn.b2);
      }
    }
    result.reports.push_back(std::move(report));
  }
  return result;
}

JsonObject block_report_json(std::int64_t block, const init::BlockReport& r) {
  JsonObject o;
  o.add("block", block);
  if (!r.kmeans.empty()) {
    std::vector<double> objective;
    std::vector<std::int64_t> changed, reseeded;
    for (const auto& it : r.kmeans) {
      objective.push_back(it.objective);
      changed.push_back(it.changed);
      reseeded.push_back(it.reseeded);
    }
    o.add("kmeans_objective", objective).add("kmeans_changed", changed).add("kmeans_reseeded", reseeded);
    std::string sizes = "[";
    for (std::size_t i = 0; i < r.kmeans.size(); ++i) {
      sizes += i ? ",[" : "[";
      for (std::size_t j = 0; j < r.kmeans[i].sizes.size(); ++j)
        sizes += (j ? "," : "") + std::to_string(r.kmeans[i].sizes[j]);
      sizes += "]";
    }
    o.add_raw("kmeans_sizes", sizes + "]");
  }
  if (!r.cluster_sizes.empty()) o.add("cluster_sizes", r.cluster_sizes);
  if (!r.svd_ranks.empty()) o.add("svd_ranks", r.svd_ranks).add("svd_energy_kept", r.energy_kept);
  if (!r.notes.empty()) {
    std::string notes = "[";
    for (std::size_t i = 0; i < r.notes.size(); ++i) notes += (i ? ",\"" : "\"") + json_escape(r.notes[i]) + "\"";
    o.add_raw("notes", notes + "]");
  }
  JsonObject secs;
  for (const auto& [phase, s] : r.seconds) secs.add(phase, s);
  o.add_raw("seconds", secs.str());
  return o;
}

void run_upcycle_stage(const Config& cfg, std::shared_ptr<Communicator> world) {
  const auto t0 = std::chrono::steady_clock::now();
  const bool root = world->rank() == 0;
  const std::string dense_path = dense_checkpoint_for_upcycle(cfg);
  if (!fs::exists(dense_path))
    UPCYCLE_USAGE_ERROR("upcycle: the dense checkpoint ", dense_path,
                        " does not exist: run the dense stage first (run.stages = dense,upcycle,moe) or set "
                        "upcycle.dense_checkpoint to a dense checkpoint");
  {
    const std::string stage = [&] {
      h5::File f = h5::File::open(dense_path);
      return h5::has_attribute(f, "/", "stage") ? h5::read_string_attribute(f, "/", "stage") : std::string();
    }();
    if (stage != "dense")
      UPCYCLE_USAGE_ERROR("upcycle: ", dense_path, " is a checkpoint of stage '", stage,
                          "', not of the dense stage: upcycle.dense_checkpoint must name a dense model");
  }
  check_dense_checkpoint_matches(dense_path, cfg);

  auto dense_task = make_task(cfg, *world);
  load_checkpoint(dense_path, dense_task->model(), nullptr, nullptr);
  if (root) record_run_config(cfg);
  auto moe_task = make_moe_task(cfg, world).task;
  if (root)
    log_info("[upcycle] " + cfg.get_string("upcycle.method") + " upcycling of " + dense_path + " into " +
             std::to_string(cfg.get_int("moe.num_experts")) + " experts per MoE block");

  UpcycleResult r = upcycle_model(cfg, *dense_task, *moe_task, *world);

  const std::string run_dir = cfg.get_string("run.dir");
  const std::string out_path = upcycled_checkpoint_path(run_dir);
  const auto tw = std::chrono::steady_clock::now();
  if (root) {
    CheckpointShards shards;
    shards.full = r.full_experts;
    for (std::size_t i = 0; i < r.blocks.size(); ++i) {
      const std::string p = "/upcycle/blocks/" + nn::index_name(static_cast<std::size_t>(r.blocks[i])) + "/";
      const init::BlockReport& rep = r.reports[i];
      auto i64 = [](const std::vector<std::int64_t>& v) {
        return Tensor::from_vector<std::int64_t>(v, {static_cast<std::int64_t>(v.size())}, Device::cpu);
      };
      if (!rep.cluster_sizes.empty()) shards.extras.emplace_back(p + "cluster_sizes", i64(rep.cluster_sizes));
      if (!rep.svd_ranks.empty()) {
        shards.extras.emplace_back(p + "svd_ranks", i64(rep.svd_ranks));
        shards.extras.emplace_back(p + "svd_energy", Tensor::from_vector<double>(
                                                         rep.energy_kept, {static_cast<std::int64_t>(rep.energy_kept.size())}, Device::cpu));
      }
      if (!rep.kmeans.empty()) {
        std::vector<double> obj;
        for (const auto& it : rep.kmeans) obj.push_back(it.objective);
        shards.extras.emplace_back(p + "kmeans_objective", Tensor::from_vector<double>(obj, {static_cast<std::int64_t>(obj.size())}, Device::cpu));
      }
    }
    TrainState state;
    state.stage = "upcycle";
    save_checkpoint(out_path, cfg, moe_task->model(), nullptr, state, &shards);
  }
  world->barrier();
  add_seconds(r.seconds, "write", seconds_since(tw));
  add_seconds(r.seconds, "total", seconds_since(t0));
  if (!root) return;

  JsonObject report;
  report.add("event", "upcycle").add("stage", "upcycle").add("method", cfg.get_string("upcycle.method"));
  report.add("dense_checkpoint", dense_path).add("checkpoint", out_path);
  report.add("num_experts", cfg.get_int("moe.num_experts")).add("top_k", cfg.get_int("moe.top_k"));
  JsonObject params;
  for (const auto& key : {"router_std", "noise_std", "drop_ratio", "svd_keep_frac", "router_scale", "tau",
                          "min_rank_frac", "chol_eps", "calib_token_frac"})
    params.add(key, cfg.get_float(std::string("upcycle.") + key));
  for (const auto& key : {"granularity", "calib_tokens", "kmeans_iters", "kmeans_init_sample"})
    params.add(key, cfg.get_int(std::string("upcycle.") + key));
  params.add("granular_scale", cfg.get_bool("upcycle.granular_scale") ? "true" : "false");
  params.add("subspace", cfg.get_string("upcycle.subspace"));
  report.add_raw("parameters", params.str());
  if (!r.calibration.blocks.empty()) {
    JsonObject cal;
    cal.add("tokens", r.calibration.global_tokens).add("batches", r.calibration.batches);
    cal.add("bytes_per_rank_max", r.calibration.bytes_max).add("exhausted", r.calibration.exhausted ? "true" : "false");
    report.add_raw("calibration", cal.str());
    char mib[32];
    std::snprintf(mib, sizeof mib, "%.3g", static_cast<double>(r.calibration.bytes_max) / (1 << 20));
    const Device where = r.calibration.blocks.front().points.device();
    log_info("[upcycle] calibration: " + std::to_string(r.calibration.global_tokens) + " tokens per block from " +
             std::to_string(r.calibration.batches) + " batches, " + mib + " MiB per rank at most" +
             (r.calibration.exhausted ? " (one epoch ended first)" : "") +
             (where == Device::cpu ? std::string()
                                   : std::string(", kept on ") + device_name(where) +
                                         " (k-means, second moments and whitened SVDs run there)"));
  }
  std::string blocks = "[";
  for (std::size_t i = 0; i < r.blocks.size(); ++i) {
    const init::BlockReport& rep = r.reports[i];
    blocks += (i ? "," : "") + block_report_json(r.blocks[i], rep).str();
    for (const auto& it : rep.kmeans) {
      std::string l = "[upcycle] block " + std::to_string(r.blocks[i]) + " k-means iteration " + std::to_string(it.iter) +
                      ": objective " + std::to_string(it.objective) + ", changed " + std::to_string(it.changed) +
                      (it.reseeded ? ", re-seeded " + std::to_string(it.reseeded) : std::string()) + ", sizes";
      for (auto s : it.sizes) l += " " + std::to_string(s);
      log_debug(l);  // every Lloyd iteration: detail for log.level = debug
    }
    std::string line = "[upcycle] block " + std::to_string(r.blocks[i]) + ":";
    if (!rep.kmeans.empty())
      line += " k-means " + std::to_string(rep.kmeans.size()) + " iterations, objective " +
              std::to_string(rep.kmeans.back().objective) + ";";
    if (!rep.cluster_sizes.empty()) {
      line += " cluster sizes";
      for (auto s : rep.cluster_sizes) line += " " + std::to_string(s);
      line += ";";
    }
    if (!rep.svd_ranks.empty()) {
      line += " SVD ranks";
      for (auto s : rep.svd_ranks) line += " " + std::to_string(s);
    }
    log_info(line);
    for (const auto& n : rep.notes) log_info("[upcycle] note: " + n);
  }
  report.add_raw("blocks", blocks + "]");
  JsonObject secs;
  for (const auto& [phase, s] : r.seconds) secs.add(phase, s);
  report.add_raw("seconds", secs.str());
  log_info("[upcycle] wrote " + out_path + " in " + std::to_string(seconds_since(t0)) + " s");

  MetricsWriter((fs::path(run_dir) / "metrics.jsonl").string()).write(report);
  write_json_file((fs::path(run_dir) / "upcycle_report.json").string(), report);
}

}  // namespace upcycle
