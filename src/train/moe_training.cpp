#include "upcycle/train/moe_training.hpp"

#include <cmath>

#include "upcycle/backend/backend.hpp"
#include "upcycle/ops/elementwise.hpp"

namespace upcycle {

int expert_parallel_size(const Config& cfg, int world_size) {
  const std::int64_t experts = cfg.get_int("moe.num_experts");
  const std::int64_t p = cfg.get_int("parallel.expert_parallel");
  if (p == 0) {
    int best = 1;
    for (int d = 1; d <= world_size; ++d)
      if (world_size % d == 0 && experts % d == 0) best = d;
    return best;
  }
  if (world_size % p != 0)
    UPCYCLE_USAGE_ERROR("parallel.expert_parallel = ", p, " does not divide the number of ranks (", world_size,
                        "); use a divisor of it, or 0 for automatic");
  return static_cast<int>(p);
}

MoeTask make_moe_task(const Config& cfg, std::shared_ptr<Communicator> world) {
  MoeTask m;
  m.groups = make_process_groups(world, expert_parallel_size(cfg, world->size()));
  TaskOptions options;
  options.moe = true;
  options.expert_parallel = m.groups.expert_parallel;
  m.task = make_task(cfg, *world, options);
  return m;
}

MoeTraining::MoeTraining(const Config& cfg, std::shared_ptr<Communicator> world, const Task& task)
    : world_(std::move(world)),
      task_(task),
      lb_weight_(cfg.get_float("moe.lb_weight")),
      z_weight_(cfg.get_float("moe.z_weight")) {
  const double rate = cfg.get_float("moe.aux_free_rate");
  for (const auto& [name, layer] : task.moe_layers()) {
    Layer l;
    l.name = name;
    l.layer = layer;
    l.loads.assign(static_cast<std::size_t>(layer->num_experts()), 0.0);
    if (rate > 0) {
      l.bias = std::make_unique<moe::AuxFreeBias>(layer->num_experts(), rate, DType::f32, layer->device());
      layer->set_selection_bias(l.bias->bias());  // shares storage: updates are seen by the router
    }
    layers_.push_back(std::move(l));
  }
  if (layers_.empty()) return;
  dpsl_ = cfg.get_bool("dpsl.enabled");
  if (!dpsl_) return;
  const std::int64_t E = layers_.front().layer->num_experts();
  const std::string& prior = cfg.get_string("dpsl.prior");
  if (prior == "symmetric") {
    prior_ = moe::DirichletPrior::symmetric(E, cfg.get_float("dpsl.alpha"));
  } else if (prior == "asymmetric") {
    prior_ = moe::DirichletPrior::asymmetric(cfg.get_float_list("dpsl.alphas"));
  } else {
    groups_ = task.num_token_groups(E);
    prior_ = moe::DirichletPrior::group_conditioned(groups_, E, cfg.get_float("dpsl.alpha"),
                                                    cfg.get_float("dpsl.group_boost"));
  }
  prior_.validate();
  dpsl_options_.weight = cfg.get_float("dpsl.weight");
  dpsl_options_.pdf_clip = cfg.get_float("dpsl.pdf_clip");
  dpsl_options_.scope = cfg.get_string("dpsl.scope") == "rank" ? moe::DpslScope::rank : moe::DpslScope::global;
  dpsl_options_.comm = world_.get();
}

MoeTraining::Losses MoeTraining::losses(const Batch& batch) {
  Losses out;
  const double W = static_cast<double>(world_->size());
  const Tensor groups = dpsl_ && groups_ > 1 ? task_.token_groups(batch, groups_) : Tensor();
  for (Layer& l : layers_) {
    const moe::MoeRouting& r = l.layer->last_routing();
    UPCYCLE_CHECK(r.probs.defined(), "MoE layer ", l.name, " has no routing: run the forward first");
    const Device dev = r.probs.device();
    Backend& be = backend_for(dev);
    if (!out.value.defined()) out.value = Tensor::zeros({1}, DType::f64, dev);
    if (!l.loss_sums.defined()) l.loss_sums = Tensor::zeros({3}, DType::f64, dev);
    // Slot i of the layer's sums gets the loss's value; the value also joins the step's total.
    // Both stay on the device: nothing here waits for it.
    auto add = [&](const Var& term, double scale, std::int64_t slot) {
      out.backward = out.backward.defined() ? out.backward + mul_scalar(term, scale) : mul_scalar(term, scale);
      const Tensor v = term.value().to(DType::f64);
      be.axpy(1.0, v, out.value);
      Tensor sum_slot = l.loss_sums.rows(slot, slot + 1);
      be.axpy(1.0, v, sum_slot);
    };
    if (lb_weight_ > 0) {
      // The routed counts are on the host already (the dispatch brought them there).
      const std::vector<std::int64_t> c = r.expert_counts.to_vector<std::int64_t>();
      add(moe::load_balancing_loss(r.probs, std::vector<double>(c.begin(), c.end()), lb_weight_, world_.get()), W, 0);
    }
    if (z_weight_ > 0) add(moe::router_z_loss(r.logits, z_weight_), 1.0, 1);
    if (dpsl_) {
      if (groups.defined())
        UPCYCLE_CHECK(groups.numel() == r.tokens, "DPSL groups: the task gave ", groups.numel(),
                      " group ids for ", r.tokens, " tokens of ", l.name);
      add(moe::dpsl_loss(r.probs, prior_, dpsl_options_, groups), dpsl_options_.scope == moe::DpslScope::global ? W : 1.0,
          2);
    }
    ++l.loss_count;
  }
  return out;
}

void MoeTraining::after_micro_batch(bool stats) {
  for (Layer& l : layers_) {
    const moe::MoeRouting& r = l.layer->last_routing();
    if (r.expert_counts.defined()) {
      const auto c = r.expert_counts.to_vector<std::int64_t>();
      for (std::size_t e = 0; e < c.size(); ++e) l.loads[e] += static_cast<double>(c[e]);
    }
    if (stats) {
      l.stats = moe::routing_stats(r.probs.value(), r.indices, r.dropped_slots, world_.get());
      l.has_stats = true;
    }
    l.layer->clear_routing();
  }
}

void MoeTraining::after_step(bool updated) {
  bool any = false;
  for (const Layer& l : layers_) any = any || l.bias;
  if (any && updated) {
    std::vector<double> all;
    for (const Layer& l : layers_)
      if (l.bias) all.insert(all.end(), l.loads.begin(), l.loads.end());
    Tensor t = Tensor::from_vector<double>(all, {static_cast<std::int64_t>(all.size())}, Device::cpu);
    world_->all_reduce(t);
    const auto sums = t.to_vector<double>();
    std::size_t at = 0;
    for (Layer& l : layers_) {
      if (!l.bias) continue;
      const std::vector<double> c(sums.begin() + static_cast<std::ptrdiff_t>(at),
                                  sums.begin() + static_cast<std::ptrdiff_t>(at + l.loads.size()));
      l.bias->update(c);
      at += l.loads.size();
    }
  }
  for (Layer& l : layers_) std::fill(l.loads.begin(), l.loads.end(), 0.0);
}

void MoeTraining::add_metrics(JsonObject& o) {
  for (Layer& l : layers_) {
    const std::string p = "moe/" + l.name.substr(0, l.name.size() - 4) + "/";  // "moe/blocks/03/"
    if (l.has_stats) {
      const moe::RoutingStats& s = l.stats;
      o.add(p + "tokens_per_expert", s.counts);
      o.add(p + "cov", s.load_cov);
      o.add(p + "max_over_mean", s.load_max_over_mean);
      const double slots = static_cast<double>(s.num_slots);
      const double routed = static_cast<double>(s.num_tokens * l.layer->config().top_k);
      o.add(p + "dropped_fraction", routed > 0 ? (routed - slots) / routed : 0.0);
      o.add(p + "entropy", s.mean_entropy);
      o.add(p + "entropy_norm", s.normalized_entropy);
      o.add(p + "expert_mean_prob", s.expert_mean_prob);
    }
    if (l.loss_count > 0) {
      const double n = static_cast<double>(l.loss_count);
      const std::vector<double> sums = l.loss_sums.to_vector<double>();  // a metrics line: read now
      o.add(p + "lb_loss", sums[0] / n);
      o.add(p + "z_loss", sums[1] / n);
      o.add(p + "dpsl_loss", sums[2] / n);
      backend_of(l.loss_sums).fill(l.loss_sums, 0.0);
    }
    if (l.bias) o.add(p + "aux_free_bias", l.bias->bias().to(DType::f64).to_vector<double>());
    l.loss_count = 0;
  }
}

std::vector<std::pair<std::string, Tensor>> MoeTraining::state_tensors() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const Layer& l : layers_)
    if (l.bias) out.emplace_back("/state/moe/" + l.name.substr(0, l.name.size() - 4) + "/aux_free_bias", l.bias->bias());
  return out;
}

}  // namespace upcycle
