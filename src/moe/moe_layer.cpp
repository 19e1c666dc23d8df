#include "upcycle/moe/moe_layer.hpp"

#include "upcycle/backend/backend.hpp"
#include "upcycle/dist/all_to_all.hpp"
#include "upcycle/moe/dense_ensemble.hpp"
#include "upcycle/moe/dispatch.hpp"
#include "upcycle/nn/init.hpp"
#include "upcycle/ops/elementwise.hpp"
#include "upcycle/ops/grouped_linear.hpp"
#include "upcycle/ops/index.hpp"
#include "upcycle/ops/scale_rows.hpp"
#include "upcycle/ops/shape.hpp"

namespace upcycle::moe {

void validate(const MoeConfig& c) {
  UPCYCLE_CHECK(c.d_model > 0, "moe: d_model must be positive, got ", c.d_model);
  UPCYCLE_CHECK(c.d_ff > 0, "moe: d_ff must be positive, got ", c.d_ff);
  UPCYCLE_CHECK(c.num_experts > 0, "moe: num_experts must be positive, got ", c.num_experts);
  UPCYCLE_CHECK(c.top_k >= 1 && c.top_k <= c.num_experts, "moe: top_k must lie in [1, num_experts = ",
                c.num_experts, "], got ", c.top_k);
  UPCYCLE_CHECK(c.capacity_factor >= 0.0, "moe: capacity_factor must be >= 0 (0 = dropless), got ",
                c.capacity_factor);
  UPCYCLE_CHECK(c.shared_d_ff >= 0, "moe: shared_d_ff must be >= 0 (0 = d_ff), got ", c.shared_d_ff);
  UPCYCLE_CHECK(c.init_std >= 0 && c.out_init_std >= 0 && c.router_std >= 0, "moe: init stds must be >= 0");
}

namespace {

std::shared_ptr<Communicator> or_self(std::shared_ptr<Communicator> ep) {
  return ep ? std::move(ep) : std::make_shared<SelfCommunicator>();
}

// Validates config and the EP size, returns the router's config (first thing the layer builds).
RouterConfig router_config(const MoeConfig& c, const Communicator* ep) {
  validate(c);
  const int P = ep ? ep->size() : 1;
  UPCYCLE_CHECK(c.num_experts % P == 0, "moe: the expert-parallel size ", P, " must divide num_experts = ",
                c.num_experts);
  RouterConfig r;
  r.d_model = c.d_model;
  r.num_experts = c.num_experts;
  r.top_k = c.top_k;
  r.renormalize = c.renormalize;
  r.init_std = c.router_std;
  return r;
}

std::int64_t local_count(const MoeConfig& c, const Communicator* ep) { return c.num_experts / (ep ? ep->size() : 1); }
std::int64_t first_of(const MoeConfig& c, const Communicator* ep) { return (ep ? ep->rank() : 0) * local_count(c, ep); }

// A [count, rows, cols] shard of the normal tensor [E, rows, cols] whose stream block starts at
// `block`: global element (first * rows * cols + i) reads words block + 2 (first * rows * cols + i).
Var normal_shard(std::int64_t first, std::int64_t count, std::int64_t rows, std::int64_t cols, double std,
                 std::uint64_t seed, std::uint64_t block) {
  Tensor t = Tensor::empty({count, rows, cols}, DType::f32, Device::cpu);  // as nn::normal_parameter
  const auto skip = static_cast<std::uint64_t>(first * rows * cols);
  backend_of(t).normal(t, seed, block + 2 * skip, 0.0, std);
  return Var(t, true);
}

nn::MlpConfig shared_config(const MoeConfig& c) {
  nn::MlpConfig m;
  m.d_model = c.d_model;
  m.d_ff = c.shared_d_ff > 0 ? c.shared_d_ff : c.d_ff;
  m.activation = c.activation;
  m.bias = c.bias;
  m.init_std = c.init_std;
  m.out_init_std = c.out_init_std;
  return m;
}

Tensor index_tensor(const std::vector<std::int64_t>& v, Device device) {
  return Tensor::from_vector(v, {static_cast<std::int64_t>(v.size())}, device);
}

}  // namespace

Experts::Experts(const MoeConfig& c, std::int64_t first, std::int64_t count, RngStream& rng)
    : activation_(c.activation) {
  const std::int64_t E = c.num_experts, D = c.d_model, F = c.d_ff, F1 = F * nn::fc1_rows_per_unit(c.activation);
  UPCYCLE_CHECK(first >= 0 && count >= 1 && first + count <= E, "experts: shard [", first, ", ", first + count,
                ") of ", E, " experts");
  // Both blocks are reserved for all E experts, whatever this rank holds.
  const std::uint64_t w1_block = rng.advance(2 * static_cast<std::uint64_t>(E * F1 * D));
  const std::uint64_t w2_block = rng.advance(2 * static_cast<std::uint64_t>(E * D * F));
  w1 = normal_shard(first, count, F1, D, c.init_std, rng.seed(), w1_block);
  register_parameter("w1", w1);
  if (c.bias) {
    b1 = nn::constant_parameter({count, F1}, 0.0);
    register_parameter("b1", b1);
  }
  w2 = normal_shard(first, count, D, F, c.out_init_std, rng.seed(), w2_block);
  register_parameter("w2", w2);
  if (c.bias) {
    b2 = nn::constant_parameter({count, D}, 0.0);
    register_parameter("b2", b2);
  }
}

Var Experts::forward(const Var& x, const std::vector<std::int64_t>& group_sizes) const {
  const Var h = nn::apply_activation(activation_, grouped_linear(x, w1, b1, group_sizes));
  return grouped_linear(h, w2, b2, group_sizes);
}

MoeLayer::MoeLayer(const MoeConfig& config, std::shared_ptr<Communicator> ep, RngStream& rng)
    : router(router_config(config, ep.get()), rng),
      experts(config, first_of(config, ep.get()), local_count(config, ep.get()), rng),
      config_(config),
      comm_(or_self(std::move(ep))) {
  first_ = first_of(config_, comm_.get());
  local_ = local_count(config_, comm_.get());
  register_module("router", router);
  register_module("experts", experts);
  if (config_.shared_expert) {
    shared = std::make_unique<nn::Mlp>(shared_config(config_), rng);
    register_module("shared", *shared);
  }
}

void MoeLayer::set_selection_bias(Tensor bias) {
  if (bias.defined()) check_shape(bias, {config_.num_experts}, "moe selection bias");
  selection_bias_ = std::move(bias);
}

void MoeLayer::move_state(Device device) {
  if (selection_bias_.defined()) selection_bias_ = selection_bias_.to(device);
  routing_ = MoeRouting();  // the last routing belongs to the old device's graph
}

bool MoeLayer::is_expert_parameter(const std::string& name) {
  std::size_t begin = 0;
  while (begin <= name.size()) {
    const std::size_t end = std::min(name.find('/', begin), name.size());
    if (name.compare(begin, end - begin, "experts") == 0 && end - begin == 7) return true;
    begin = end + 1;
  }
  return false;
}

Var MoeLayer::forward(const Var& x) {
  const std::int64_t D = config_.d_model, E = config_.num_experts, k = config_.top_k;
  UPCYCLE_CHECK(x.shape().ndim() >= 1 && x.dim(-1) == D, "moe: input must be [..., ", D, "], got ",
                describe(x.value()));
  const Shape in_shape = x.shape();
  const std::int64_t T = x.value().numel() / D;
  const Device dev = x.device();
  const Var x2 = reshape(x, {T, D});
  if (dense_ensemble_) return reshape(Var(dense_ensemble(*this, x2.value())), in_shape);

  // 1. Route, and plan the dispatch on the device (only the counts come to the host: they size
  //    the exchange and the expert GEMMs).
  Routing r = router.forward(x2, selection_bias_);
  const std::int64_t capacity = expert_capacity(config_.capacity_factor, T, k, E);
  const DispatchPlan plan = plan_dispatch(r.indices, E, capacity);
  const Tensor& slot_tokens = plan.slot_tokens;

  // 2. Token rows in dispatch order (expert by expert), [S, D].
  const Var rows = gather_rows(x2, slot_tokens);

  // 3. To the experts' ranks and back. Ranks call the same ops whatever their counts (zero rows
  //    included), so the backward exchanges of all ranks line up.
  Var back;
  const int P = comm_->size();
  if (P == 1) {
    back = experts.forward(rows, plan.kept_counts);
  } else {
    const std::int64_t L = local_;
    // Rank p receives the kept counts of its own experts from every rank.
    Tensor send_ec = Tensor::from_vector(plan.kept_counts, {E}, Device::cpu);
    Tensor recv_ec = Tensor::empty({E}, DType::i64, Device::cpu);
    comm_->all_to_all_v(send_ec, std::vector<std::int64_t>(static_cast<std::size_t>(P), L), recv_ec,
                        std::vector<std::int64_t>(static_cast<std::size_t>(P), L));
    const ExchangePlan xp = plan_exchange(plan.kept_counts, P, comm_->rank(), recv_ec.to_vector<std::int64_t>());
    const Var received = all_to_all_v(*comm_, rows, xp.send_counts, xp.recv_counts);
    const Var grouped = gather_rows(received, index_tensor(xp.to_expert_order, dev));
    const Var out = experts.forward(grouped, xp.expert_rows);
    const Var by_source = gather_rows(out, index_tensor(xp.to_source_order, dev));
    back = all_to_all_v(*comm_, by_source, xp.recv_counts, xp.send_counts);
  }

  // 4. Combine: gate each returned row and add it into its token's row (dropped slots: nothing).
  const Var slot_gates = reshape(gather_rows(reshape(r.gates, {T * k, 1}), plan.slots), {plan.slots.numel()});
  Var y = index_add_rows(T, slot_tokens, scale_rows(back, slot_gates));
  if (shared) y = add(y, shared->forward(x2));

  routing_.input = x2;
  routing_.output = y;
  routing_.logits = r.logits;
  routing_.probs = r.probs;
  routing_.indices = r.indices;
  routing_.gates = r.gates;
  routing_.expert_counts = Tensor::from_vector(plan.routed_counts, {E}, Device::cpu);
  routing_.kept_counts = Tensor::from_vector(plan.kept_counts, {E}, Device::cpu);
  routing_.dropped_slots = plan.slot_dropped;
  routing_.dropped = plan.dropped;
  routing_.capacity = capacity;
  routing_.tokens = T;
  return reshape(y, in_shape);
}

Var MoeLayer::local_expert_outputs(const Var& x) const {
  UPCYCLE_CHECK(x.shape().ndim() == 2 && x.dim(1) == config_.d_model, "moe: local_expert_outputs expects [N, ",
                config_.d_model, "], got ", describe(x.value()));
  const std::int64_t N = x.dim(0);
  const Var copies = local_ == 1 ? x : concat(std::vector<Var>(static_cast<std::size_t>(local_), x), 0);
  const Var out = experts.forward(copies, std::vector<std::int64_t>(static_cast<std::size_t>(local_), N));
  return reshape(out, {local_, N, config_.d_model});
}

nn::FeedForwardFactory moe_ffn_factory(const MoeConfig& config, std::shared_ptr<Communicator> ep) {
  validate(config);
  return [config, ep](RngStream& rng) -> std::unique_ptr<nn::FeedForward> {
    return std::make_unique<MoeLayer>(config, ep, rng);
  };
}

MoeLayer* moe_layer_of(const nn::TransformerBlock& block) { return dynamic_cast<MoeLayer*>(block.sparse.get()); }

std::vector<MoeLayer*> moe_layers_of(const nn::ModuleList<nn::TransformerBlock>& blocks) {
  std::vector<MoeLayer*> out;
  for (std::size_t i = 0; i < blocks.size(); ++i)
    if (MoeLayer* m = moe_layer_of(blocks[i])) out.push_back(m);
  return out;
}

namespace {
void collect_moe_layers(const nn::Module& m, const std::string& path, std::vector<std::pair<std::string, MoeLayer*>>& out) {
  for (const auto& [name, child] : m.children()) {
    const std::string p = path.empty() ? name : path + "/" + name;
    if (auto* layer = dynamic_cast<MoeLayer*>(child)) out.emplace_back(p, layer);
    else collect_moe_layers(*child, p, out);
  }
}
}  // namespace

std::vector<std::pair<std::string, MoeLayer*>> find_moe_layers(const nn::Module& root) {
  std::vector<std::pair<std::string, MoeLayer*>> out;
  collect_moe_layers(root, "", out);
  return out;
}

std::vector<std::int64_t> moe_block_indices_of(const nn::ModuleList<nn::TransformerBlock>& blocks) {
  std::vector<std::int64_t> out;
  for (std::size_t i = 0; i < blocks.size(); ++i)
    if (moe_layer_of(blocks[i]) != nullptr) out.push_back(static_cast<std::int64_t>(i));
  return out;
}

}  // namespace upcycle::moe
