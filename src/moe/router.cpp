#include "upcycle/moe/router.hpp"

#include "upcycle/backend/backend.hpp"
#include "upcycle/nn/init.hpp"
#include "upcycle/ops/elementwise.hpp"
#include "upcycle/ops/linalg.hpp"
#include "upcycle/ops/reduce.hpp"
#include "upcycle/ops/scale_rows.hpp"
#include "upcycle/ops/softmax.hpp"
#include "upcycle/ops/topk.hpp"

namespace upcycle::moe {

namespace {
const RouterConfig& checked(const RouterConfig& c) {
  UPCYCLE_CHECK(c.d_model > 0 && c.num_experts > 0, "router: d_model and num_experts must be positive, got ",
                c.d_model, " and ", c.num_experts);
  UPCYCLE_CHECK(c.top_k >= 1 && c.top_k <= c.num_experts, "router: top_k must lie in [1, ", c.num_experts,
                "], got ", c.top_k);
  return c;
}
}  // namespace

Router::Router(const RouterConfig& config, RngStream& rng) : config_(checked(config)) {
  weight = nn::normal_parameter({config.num_experts, config.d_model}, config.init_std, rng);
  register_parameter("weight", weight);
}

Routing Router::forward(const Var& x, const Tensor& selection_bias) const {
  UPCYCLE_CHECK(x.shape().ndim() == 2 && x.dim(1) == config_.d_model, "router: input must be [T, ",
                config_.d_model, "], got ", describe(x.value()));
  const std::int64_t E = config_.num_experts, k = config_.top_k, T = x.dim(0);
  Routing r;
  r.logits = linear(x, weight);
  r.probs = softmax(r.logits);
  Tensor scores = r.probs.value();
  if (selection_bias.defined()) {
    check_shape(selection_bias, {E}, "router selection bias");
  }
  // (With T = 0 there is nothing to select; Backend::binary would also refuse [0, E] + [E], as it
  // picks the broadcast operand by element count.)
  if (selection_bias.defined() && T > 0) {
    scores = Tensor::empty_like(r.probs.value());
    backend_of(scores).binary(BinaryOp::add, r.probs.value(), selection_bias.to(scores.dtype()).to(scores.device()),
                              scores);
  }
  Tensor values = Tensor::empty({T, k}, scores.dtype(), scores.device());
  r.indices = Tensor::empty({T, k}, DType::i64, scores.device());
  backend_of(scores).topk(scores, k, values, r.indices);
  r.gates = gather_last(r.probs, r.indices);
  // Softmax probabilities are positive, so the sum over the k selected is too. With k = 1 the
  // renormalised gate is exactly 1 (and carries no gradient); Switch-style k = 1 routers usually
  // leave renormalize off.
  if (config_.renormalize) r.gates = scale_rows(r.gates, unary(UnaryOp::reciprocal, sum(r.gates, 1)));
  return r;
}

}  // namespace upcycle::moe
