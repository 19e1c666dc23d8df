// The eval stage (include/upcycle/train/eval_stage.hpp, docs/methods.md section 6).
#include "upcycle/train/eval_stage.hpp"

#include "upcycle/io/log.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "sharded_eval.hpp"
#include "upcycle/io/hdf5.hpp"
#include "upcycle/moe/router_losses.hpp"
#include "upcycle/moe/specialisation.hpp"
#include "upcycle/train/checkpoint.hpp"
#include "upcycle/train/few_shot_probe.hpp"
#include "upcycle/train/moe_training.hpp"
#include "upcycle/train/run_directory.hpp"
#include "upcycle/train/task.hpp"

namespace upcycle {

namespace fs = std::filesystem;

namespace {

// Examples per forward of the sharded passes: bounds the memory of one forward only (every row's
// result is the same whatever the chunk it is computed in, so the numbers do not depend on it).
std::int64_t chunk_of(const Task& task) { return task.num_classes() > 0 ? 256 : 16; }

// Rows of the expert output similarity run through the experts at once (bounds [E, rows, D]).
constexpr std::int64_t kOutputRowsPerPass = 512;

// The rows [m_r, D] of every rank concatenated in rank order, on every rank: all_gather needs
// equal shards, so the counts are gathered first and each rank pads its rows to the largest.
Tensor gather_rows_in_rank_order(Communicator& comm, const Tensor& local) {
  UPCYCLE_CHECK(local.ndim() == 2, "gather_rows_in_rank_order: expected [m, D], got ", describe(local));
  const std::int64_t D = local.dim(1);
  Tensor count = Tensor::from_vector<std::int64_t>({local.dim(0)}, {1}, Device::cpu);
  Tensor counts = Tensor::empty({comm.size()}, DType::i64, Device::cpu);
  comm.all_gather(count, counts);
  const std::vector<std::int64_t> c = counts.to_vector<std::int64_t>();
  const std::int64_t M = *std::max_element(c.begin(), c.end());
  std::int64_t total = 0;
  for (std::int64_t v : c) total += v;
  Tensor out = Tensor::empty({total, D}, local.dtype(), Device::cpu);
  if (M == 0) return out;
  Tensor padded = Tensor::zeros({M, D}, local.dtype(), Device::cpu);
  if (local.dim(0) > 0) padded.rows(0, local.dim(0)).copy_from(local.to(Device::cpu));
  Tensor all = Tensor::empty({comm.size() * M, D}, local.dtype(), Device::cpu);
  comm.all_gather(padded, all);
  std::int64_t at = 0;
  for (int p = 0; p < comm.size(); ++p) {
    const std::int64_t n = c[static_cast<std::size_t>(p)];
    if (n > 0) out.rows(at, at + n).copy_from(all.rows(p * M, p * M + n));
    at += n;
  }
  return out;
}

// Sum over the rows of logits [R, V] of -log softmax(logits)[target], in double, and the number of
// rows whose argmax (ties: the lowest class) is the target.
struct LossSums {
  double loss = 0.0, correct = 0.0, rows = 0.0;
};
LossSums score_logits(const Tensor& logits, const Tensor& targets) {
  const Tensor l = logits.to(Device::cpu).flatten_to_2d().to(DType::f64);
  const std::vector<std::int64_t> y = targets.to(Device::cpu).to_vector<std::int64_t>();
  const std::int64_t R = l.dim(0), V = l.dim(1);
  UPCYCLE_CHECK(static_cast<std::int64_t>(y.size()) == R, "eval: ", y.size(), " targets for ", R, " logit rows");
  const double* p = l.data<double>();
  LossSums s;
  for (std::int64_t r = 0; r < R; ++r) {
    const double* row = p + r * V;
    std::int64_t best = 0;
    double mx = row[0];
    for (std::int64_t v = 1; v < V; ++v)
      if (row[v] > mx) mx = row[v], best = v;
    double z = 0.0;
    for (std::int64_t v = 0; v < V; ++v) z += std::exp(row[v] - mx);
    const std::int64_t t = y[static_cast<std::size_t>(r)];
    UPCYCLE_CHECK(t >= 0 && t < V, "eval: target ", t, " outside [0, ", V, ")");
    s.loss += mx + std::log(z) - row[t];
    s.correct += best == t ? 1.0 : 0.0;
  }
  s.rows = static_cast<double>(R);
  return s;
}

// What the test pass keeps of one MoE block on this rank.
struct BlockPass {
  std::string name;
  moe::MoeLayer* layer = nullptr;
  std::vector<float> probs;            // [T_r, E]
  std::vector<std::int64_t> indices;   // [T_r, k]
  std::vector<std::int64_t> dropped;   // [T_r, k]
  moe::CompactnessStats compact;
  std::vector<float> sample;           // block inputs u of this rank's tokens among the first eval.tokens
  std::int64_t sample_rows = 0;
  BlockPass(std::string n, moe::MoeLayer* l)
      : name(std::move(n)), layer(l), compact(l->num_experts(), l->config().d_model) {}
};

template <class T>
void append(std::vector<T>& to, const Tensor& t) {
  const std::vector<T> v = t.to(Device::cpu).to_vector<T>();
  to.insert(to.end(), v.begin(), v.end());
}

// Reads the block's routing of the last forward (the chunk of test examples `idx`, contiguous).
void observe_block(BlockPass& b, const std::vector<std::int64_t>& idx, std::int64_t sample_tokens) {
  const moe::MoeRouting& r = b.layer->last_routing();
  const std::int64_t T = r.tokens;
  UPCYCLE_CHECK(!idx.empty() && T % static_cast<std::int64_t>(idx.size()) == 0, "eval: ", b.name, " routed ", T,
                " tokens for ", idx.size(), " examples");
  append<float>(b.probs, r.probs.value().to(DType::f32));
  append<std::int64_t>(b.indices, r.indices);
  append<std::int64_t>(b.dropped, r.dropped_slots.to(DType::i64));
  b.compact.add(r.output.value(), r.indices);
  // Token t of the chunk is test token idx[0] * per + t (examples are contiguous, tokens in order).
  const std::int64_t per = T / static_cast<std::int64_t>(idx.size()), first = idx.front() * per;
  const std::int64_t keep = std::clamp<std::int64_t>(sample_tokens - first, 0, T);
  if (keep > 0) {
    append<float>(b.sample, r.input.value().rows(0, keep).to(DType::f32));
    b.sample_rows += keep;
  }
}

BlockSpecialisation finish_block(BlockPass& b, Communicator& world) {
  BlockSpecialisation s;
  s.name = b.name;
  const std::int64_t E = b.layer->num_experts(), k = b.layer->config().top_k, D = b.layer->config().d_model;
  const std::int64_t T = static_cast<std::int64_t>(b.indices.size()) / k;
  const moe::RoutingStats st =
      moe::routing_stats(Tensor::from_vector(b.probs, {T, E}, Device::cpu),
                         Tensor::from_vector(b.indices, {T, k}, Device::cpu),
                         Tensor::from_vector(b.dropped, {T, k}, Device::cpu), &world);
  s.tokens = st.num_tokens;
  s.entropy = st.mean_entropy;
  s.entropy_norm = st.normalized_entropy;
  s.load_cov = st.load_cov;
  s.expert_mean_prob = st.expert_mean_prob;
  s.expert_mean_prob_mean = 0.0;
  for (double p : st.expert_mean_prob) s.expert_mean_prob_mean += p / static_cast<double>(E);
  b.compact.all_reduce(world);
  s.relative_compactness = b.compact.relative_compactness();

  const auto [w1, w2] = moe::gather_expert_weights(*b.layer);
  s.weight_cosine = moe::mean_pairwise_cosine(w1.reshape({E, -1}));
  s.weight_cosine_w1w2 = moe::expert_weight_cosine(w1, w2);

  // The spread of the router probabilities: sums of p and p^2 and the histogram, over all ranks.
  {
    std::vector<double> acc(2 + kProbBins, 0.0);
    for (float p : b.probs) {
      acc[0] += p;
      acc[1] += static_cast<double>(p) * p;
      acc[2 + std::min(kProbBins - 1, static_cast<int>(p * kProbBins))] += 1.0;
    }
    Tensor t = Tensor::from_vector<double>(acc, {2 + kProbBins}, Device::cpu);
    world.all_reduce(t);
    const auto v = t.to_vector<double>();
    const double n = static_cast<double>(st.num_tokens * E);
    const double mean = n > 0 ? v[0] / n : 0.0;
    s.prob_std = n > 0 ? std::sqrt(std::max(0.0, v[1] / n - mean * mean)) : 0.0;
    for (int i = 0; i < kProbBins; ++i) s.prob_histogram.push_back(static_cast<std::int64_t>(v[2 + i]));
  }

  // The same sample on every rank (in test order), then every expert on it, pass by pass: every
  // EP rank makes the same number of passes since it holds the same rows.
  const Tensor sample =
      gather_rows_in_rank_order(world, Tensor::from_vector(b.sample, {b.sample_rows, D}, Device::cpu));
  s.output_tokens = sample.dim(0);
  double sum = 0.0;
  for (std::int64_t at = 0; at < sample.dim(0); at += kOutputRowsPerPass)
    sum += moe::expert_output_cosine_sum(
        moe::all_expert_outputs(*b.layer, sample.rows(at, std::min(sample.dim(0), at + kOutputRowsPerPass))));
  s.output_cosine = s.output_tokens > 0 ? sum / static_cast<double>(s.output_tokens) : std::nan("");
  b.layer->clear_routing();
  return s;
}

// Features of the split's examples `ids` (in that order), on every rank: sharded forwards, then
// gathered in rank order.
init::Matrix split_features(Task& task, Communicator& world, Split split, const std::vector<std::int64_t>& ids) {
  nn::Module& model = task.model();
  const Device dev = task.device();
  std::vector<moe::MoeLayer*> layers;
  for (const auto& [name, layer] : task.moe_layers()) layers.push_back(layer);
  std::vector<double> local;
  std::int64_t D = 0, rows = 0;
  run_sharded_eval(
      model, layers, world, static_cast<std::int64_t>(ids.size()), chunk_of(task),
      [&](const std::vector<std::int64_t>& idx) {
        std::vector<std::int64_t> examples;
        for (std::int64_t i : idx) examples.push_back(ids[static_cast<std::size_t>(i)]);
        const Batch b = task.split_batch(split, examples);
        const Tensor f = task.run_model(model, b.inputs.to(dev), nullptr).features.value();
        D = f.dim(1);
        rows += f.dim(0);
        append<double>(local, f.to(Device::cpu).to(DType::f64));
      },
      [&] { task.run_model(model, task.split_batch(split, {0}).inputs.to(dev), nullptr); });
  // A rank without examples does not know D: the ranks agree on the largest.
  Tensor d = Tensor::from_vector<std::int64_t>({D}, {1}, Device::cpu);
  world.all_reduce(d, CommReduce::max);
  D = d.to_vector<std::int64_t>()[0];
  return init::to_matrix(gather_rows_in_rank_order(world, Tensor::from_vector(local, {rows, D}, Device::cpu)));
}

std::int64_t test_examples_of(const Config& cfg, const Task& task) {
  const std::int64_t n = task.split_size(Split::test), limit = cfg.get_int("eval.test_limit");
  return limit > 0 ? std::min(limit, n) : n;
}

// Test metrics, test features (classification) and the MoE blocks' measures, in one sharded pass.
void test_pass(const Config& cfg, Task& task, Communicator& world, ModelEvaluation& out, init::Matrix* features) {
  nn::Module& model = task.model();
  const Device dev = task.device();
  const std::int64_t n = test_examples_of(cfg, task), sample_tokens = cfg.get_int("eval.tokens");
  const bool classify = task.num_classes() > 0;
  std::vector<BlockPass> blocks;
  std::vector<moe::MoeLayer*> layers;
  for (const auto& [name, layer] : task.moe_layers()) {
    blocks.emplace_back(name, layer);
    layers.push_back(layer);
  }
  LossSums sums;
  std::vector<double> local;
  std::int64_t D = 0, rows = 0;
  run_sharded_eval(
      model, layers, world, n, chunk_of(task),
      [&](const std::vector<std::int64_t>& idx) {
        const Batch b = task.split_batch(Split::test, idx);
        const ModelOutputs o = task.run_model(model, b.inputs.to(dev), nullptr);
        const LossSums s = score_logits(o.logits.value(), b.targets);
        sums.loss += s.loss, sums.correct += s.correct, sums.rows += s.rows;
        if (classify) {
          const Tensor f = o.features.value();
          D = f.dim(1);
          rows += f.dim(0);
          append<double>(local, f.to(Device::cpu).to(DType::f64));
        }
        for (auto& blk : blocks) observe_block(blk, idx, sample_tokens);
      },
      [&] { task.run_model(model, task.split_batch(Split::test, {0}).inputs.to(dev), nullptr); });

  Tensor t = Tensor::from_vector<double>({sums.loss, sums.correct, sums.rows}, {3}, Device::cpu);
  world.all_reduce(t);
  const std::vector<double> v = t.to_vector<double>();
  out.test_examples = n;
  out.test["loss"] = v[2] > 0 ? v[0] / v[2] : std::nan("");
  if (classify)
    out.test["accuracy"] = v[2] > 0 ? v[1] / v[2] : std::nan("");
  else
    out.test["bits_per_byte"] = out.test["loss"] / std::log(2.0);
  if (classify && features) {
    Tensor d = Tensor::from_vector<std::int64_t>({D}, {1}, Device::cpu);
    world.all_reduce(d, CommReduce::max);
    D = d.to_vector<std::int64_t>()[0];
    *features = init::to_matrix(gather_rows_in_rank_order(world, Tensor::from_vector(local, {rows, D}, Device::cpu)));
  }
  for (auto& blk : blocks) out.blocks.push_back(finish_block(blk, world));
}

// Few-shot probes (classification): the support images of every (k, draw) are featurised in one
// sharded pass over their union, and the probes are fitted and scored on rank 0.
std::vector<FewShotScores> few_shot(const Config& cfg, Task& task, Communicator& world, const init::Matrix& test) {
  const std::int64_t C = task.num_classes(), draws = cfg.get_int("eval.few_shot_draws");
  const std::uint64_t seed = static_cast<std::uint64_t>(cfg.get_int("run.seed"));
  const std::vector<std::int64_t> train_labels = task.split_labels(Split::train);
  std::vector<std::int64_t> test_labels = task.split_labels(Split::test);
  test_labels.resize(static_cast<std::size_t>(test.rows));

  std::vector<std::pair<std::int64_t, std::vector<std::vector<std::int64_t>>>> sets;  // k -> support ids per draw
  std::vector<std::int64_t> all;
  for (std::int64_t k : cfg.get_int_list("eval.few_shot_k")) {
    std::vector<std::vector<std::int64_t>> per_draw;
    for (std::int64_t d = 0; d < draws; ++d) {
      per_draw.push_back(draw_few_shot(train_labels, C, k, seed, d));
      all.insert(all.end(), per_draw.back().begin(), per_draw.back().end());
    }
    sets.emplace_back(k, std::move(per_draw));
  }
  std::sort(all.begin(), all.end());
  all.erase(std::unique(all.begin(), all.end()), all.end());
  const init::Matrix support = split_features(task, world, Split::train, all);
  if (world.rank() != 0) return {};

  const double ridge = cfg.get_float("eval.few_shot_ridge");
  std::vector<FewShotScores> out;
  for (const auto& [k, per_draw] : sets) {
    FewShotScores s;
    s.k = k;
    for (const auto& ids : per_draw) {
      init::Matrix x(static_cast<std::int64_t>(ids.size()), support.cols);
      std::vector<std::int64_t> y;
      for (std::size_t i = 0; i < ids.size(); ++i) {
        const auto row = std::lower_bound(all.begin(), all.end(), ids[i]) - all.begin();
        std::copy(support.data.begin() + row * support.cols, support.data.begin() + (row + 1) * support.cols,
                  x.data.begin() + static_cast<std::int64_t>(i) * support.cols);
        y.push_back(train_labels[static_cast<std::size_t>(ids[i])]);
      }
      const RidgeClassifier probe = fit_ridge_classifier(x, y, C, ridge);
      s.draws.push_back(accuracy(probe.predict(test), test_labels));
    }
    const MeanStd ms = mean_and_sample_std(s.draws);
    s.mean = ms.mean;
    s.std = ms.std;
    out.push_back(std::move(s));
  }
  return out;
}

// The checkpoint's stage and step (root attributes), and a UsageError when the stage is not one
// `key` accepts.
void read_checkpoint_header(const std::string& path, const std::string& key, const std::vector<std::string>& stages,
                            ModelEvaluation& out) {
  h5::File f = h5::File::open(path);
  out.checkpoint = path;
  out.stage = h5::has_attribute(f, "/", "stage") ? h5::read_string_attribute(f, "/", "stage") : std::string();
  out.step = h5::has_attribute(f, "/", "step") ? h5::read_int_attribute(f, "/", "step") : 0;
  if (std::find(stages.begin(), stages.end(), out.stage) == stages.end()) {
    std::string allowed;
    for (const auto& s : stages) allowed += (allowed.empty() ? "'" : " or '") + s + "'";
    UPCYCLE_USAGE_ERROR(key, ": ", path, " is a checkpoint of stage '", out.stage, "', not of stage ", allowed);
  }
}

// The aux-free selection biases the MoE checkpoint holds (trained with moe.aux_free_rate > 0)
// route the test tokens as in training: loaded into tensors that become the layers' biases.
std::vector<std::pair<moe::MoeLayer*, Tensor>> selection_biases(const std::string& path, const Task& task,
                                                                 CheckpointLoadOptions& lo) {
  std::vector<std::pair<moe::MoeLayer*, Tensor>> out;
  h5::File f = h5::File::open(path);
  for (const auto& [name, layer] : task.moe_layers()) {
    const std::string dataset = "/state/moe/" + name.substr(0, name.size() - 4) + "/aux_free_bias";
    if (!h5::has_dataset(f, dataset)) continue;
    Tensor bias = Tensor::zeros({layer->num_experts()}, DType::f32, layer->device());
    lo.optional.emplace_back(dataset, bias);
    out.emplace_back(layer, bias);
  }
  return out;
}

ModelEvaluation evaluate_model(const Config& cfg, Task& task, Communicator& world, const std::string& path,
                               bool moe, const ProcessGroups* groups) {
  ModelEvaluation out;
  read_checkpoint_header(path, moe ? "eval.moe_checkpoint" : "eval.dense_checkpoint",
                         moe ? std::vector<std::string>{"moe", "upcycle"} : std::vector<std::string>{"dense"}, out);
  CheckpointLoadOptions lo;
  if (groups) {
    lo.expert_shard = groups->expert_parallel->rank();
    lo.expert_shards = groups->expert_parallel->size();
  }
  const auto biases = selection_biases(path, task, lo);
  load_checkpoint(path, task.model(), nullptr, nullptr, &lo);
  for (const auto& [layer, bias] : biases) layer->set_selection_bias(bias);

  init::Matrix test_features;
  test_pass(cfg, task, world, out, &test_features);
  if (task.num_classes() > 0) out.few_shot = few_shot(cfg, task, world, test_features);
  return out;
}

std::string fmt(double v, int digits = 4) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

JsonObject model_json(const ModelEvaluation& m) {
  JsonObject o;
  o.add("checkpoint", m.checkpoint).add("stage", m.stage).add("step", m.step).add("test_examples", m.test_examples);
  JsonObject test;
  for (const auto& [k, v] : m.test) test.add(k, v);
  o.add_raw("test", test.str());
  if (!m.few_shot.empty()) {
    JsonObject fs;
    for (const auto& s : m.few_shot) {
      JsonObject one;
      one.add("mean", s.mean).add("std", s.std).add("draws", s.draws);
      fs.add_raw(std::to_string(s.k), one.str());
    }
    o.add_raw("few_shot", fs.str());
  }
  if (!m.blocks.empty()) {
    JsonObject blocks;
    for (const auto& b : m.blocks) {
      JsonObject one;
      one.add("weight_cosine", b.weight_cosine).add("weight_cosine_w1w2", b.weight_cosine_w1w2);
      one.add("output_cosine", b.output_cosine).add("entropy", b.entropy);
      one.add("prob_std", b.prob_std).add("prob_histogram", b.prob_histogram);
      one.add("entropy_norm", b.entropy_norm).add("load_cov", b.load_cov).add("expert_mean_prob", b.expert_mean_prob);
      one.add("expert_mean_prob_mean", b.expert_mean_prob_mean).add("relative_compactness", b.relative_compactness);
      one.add("tokens", b.tokens).add("output_tokens", b.output_tokens);
      blocks.add_raw(b.name, one.str());
    }
    o.add_raw("blocks", blocks.str());
  }
  return o;
}

// The headline numbers as flat keys for metrics.jsonl ("dense/test_accuracy", "moe/blocks/01/moe/entropy").
void add_flat(JsonObject& o, const std::string& prefix, const ModelEvaluation& m) {
  for (const auto& [k, v] : m.test) o.add(prefix + "/test_" + k, v);
  for (const auto& s : m.few_shot) {
    o.add(prefix + "/few_shot_" + std::to_string(s.k) + "_mean", s.mean);
    o.add(prefix + "/few_shot_" + std::to_string(s.k) + "_std", s.std);
  }
  for (const auto& b : m.blocks) {
    const std::string p = prefix + "/" + b.name + "/";
    o.add(p + "weight_cosine", b.weight_cosine).add(p + "output_cosine", b.output_cosine).add(p + "prob_std", b.prob_std);
    o.add(p + "entropy", b.entropy).add(p + "entropy_norm", b.entropy_norm).add(p + "load_cov", b.load_cov);
    o.add(p + "expert_mean_prob_mean", b.expert_mean_prob_mean).add(p + "relative_compactness", b.relative_compactness);
  }
}

void print_summary(const std::string& what, const ModelEvaluation& m) {
  std::ostringstream s;
  s << "[eval] " << what << " (" << m.checkpoint << ", step " << m.step << "): ";
  if (m.test.count("accuracy"))
    s << "test accuracy " << fmt(m.test.at("accuracy")) << ", loss " << fmt(m.test.at("loss")) << " on "
      << m.test_examples << " test images";
  else
    s << "test bits per byte " << fmt(m.test.at("bits_per_byte")) << " on " << m.test_examples << " windows";
  if (!m.few_shot.empty()) {  // the last k of eval.few_shot_k (the largest by default)
    const FewShotScores& f = m.few_shot.back();
    s << "; " << f.k << "-shot " << fmt(f.mean) << " +- " << fmt(f.std) << " (" << f.draws.size() << " draws)";
  }
  log_info(s.str());
  for (const auto& b : m.blocks) {
    std::ostringstream l;
    l << "[eval]   " << b.name << ": entropy " << fmt(b.entropy) << " nats (" << fmt(b.entropy_norm)
      << " of log E), load CoV " << fmt(b.load_cov) << ", relative compactness " << fmt(b.relative_compactness)
      << ", weight cos " << fmt(b.weight_cosine) << ", output cos " << fmt(b.output_cosine);
    log_info(l.str());
  }
}

}  // namespace

EvalCheckpoints eval_checkpoints(const Config& cfg) {
  const std::string& run_dir = cfg.get_string("run.dir");
  EvalCheckpoints out;
  std::string considered[2];
  const char* stages[2] = {"dense", "moe"};
  std::string* target[2] = {&out.dense, &out.moe};
  for (int i = 0; i < 2; ++i) {
    const std::string key = std::string("eval.") + stages[i] + "_checkpoint";
    const std::string& given = cfg.get_string(key);
    if (!given.empty()) {
      if (!fs::exists(given))
        UPCYCLE_USAGE_ERROR(key, " = ", given, " (", cfg.origin(key), "): the checkpoint does not exist");
      *target[i] = given;
      considered[i] = given;
      continue;
    }
    if (run_dir.empty()) {
      considered[i] = "(none: run.dir is empty)";
      continue;
    }
    considered[i] = latest_checkpoint_path(stage_checkpoint_dir(run_dir, stages[i]));
    if (fs::exists(considered[i])) *target[i] = considered[i];
  }
  if (out.dense.empty() && out.moe.empty())
    UPCYCLE_USAGE_ERROR("eval: no checkpoint to evaluate: neither the dense checkpoint ", considered[0],
                        " nor the MoE checkpoint ", considered[1],
                        " exists; train first (run.stages = dense,upcycle,moe,eval) or set eval.dense_checkpoint / "
                        "eval.moe_checkpoint");
  return out;
}

EvalReport evaluate_checkpoints(const Config& run_cfg, std::shared_ptr<Communicator> world) {
  const EvalCheckpoints paths = eval_checkpoints(run_cfg);
  // A task's training sampler needs a global batch that the ranks (and the micro-batches) divide.
  // The stage draws no training batch, so a model scored on another number of ranks than it was
  // trained on gets the batch rounded up instead of a refusal that would not change any number.
  const std::int64_t step = static_cast<std::int64_t>(world->size()) * run_cfg.get_int("train.micro_batches");
  const std::int64_t batch = run_cfg.get_int("train.batch_size");
  const Config cfg = batch % step == 0 ? run_cfg
                                       : parse_config(run_cfg.to_ini(), "the resolved config",
                                                      {{"train.batch_size", std::to_string((batch + step - 1) / step * step)}});
  EvalReport r;
  r.world_size = world->size();
  if (!paths.dense.empty()) {
    auto task = make_task(cfg, *world);
    r.dense = evaluate_model(cfg, *task, *world, paths.dense, false, nullptr);
  }
  if (!paths.moe.empty()) {
    MoeTask m = make_moe_task(cfg, world);
    r.moe = evaluate_model(cfg, *m.task, *world, paths.moe, true, &m.groups);
  }
  return r;
}

JsonObject eval_report_json(const EvalReport& report) {
  JsonObject o;
  o.add("world_size", report.world_size);
  if (report.dense) o.add_raw("dense", model_json(*report.dense).str());
  if (report.moe) o.add_raw("moe", model_json(*report.moe).str());
  return o;
}

void run_eval_stage(const Config& cfg, std::shared_ptr<Communicator> world) {
  const EvalReport r = evaluate_checkpoints(cfg, world);
  if (world->rank() != 0) return;
  if (r.dense) print_summary("dense", *r.dense);
  if (r.moe) print_summary("moe", *r.moe);
  const std::string& run_dir = cfg.get_string("run.dir");
  if (run_dir.empty()) return;
  const fs::path dir(run_dir);
  // The checkpoints loaded. A run of stage eval alone in a training run's directory scores that
  // run's checkpoints: the config.ini that describes them stays.
  if (!fs::exists(dir / "config.ini")) record_run_config(cfg);
  fs::create_directories(dir);
  write_json_file((dir / "eval_report.json").string(), eval_report_json(r));
  JsonObject event;
  event.add("event", "eval_stage").add("world_size", r.world_size);
  if (r.dense) add_flat(event, "dense", *r.dense);
  if (r.moe) add_flat(event, "moe", *r.moe);
  MetricsWriter((dir / "metrics.jsonl").string()).write(event);  // appends: the training events stay
  log_info("[eval] wrote " + (dir / "eval_report.json").string());
}

}  // namespace upcycle
