#include "upcycle/autograd/var.hpp"

#include "upcycle/backend/backend.hpp"

namespace upcycle {

namespace {
thread_local bool g_grad_enabled = true;
}

bool grad_enabled() { return g_grad_enabled; }
NoGradGuard::NoGradGuard() : previous_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = previous_; }

void accumulate_grad(Tensor& dst, bool& dst_owned, Tensor g) {
  if (!dst.defined()) {
    dst = std::move(g);
    dst_owned = false;  // may alias a tensor the op still holds
    return;
  }
  check_same_shape(dst, g, "gradient accumulation");
  if (dst_owned && dst.storage_unique()) {
    backend_of(dst).axpy(1.0, g, dst);
    return;
  }
  Tensor sum = Tensor::empty_like(dst);
  backend_of(dst).binary(BinaryOp::add, dst, g, sum);
  dst = std::move(sum);
  dst_owned = true;
}

bool GradSink::needs(std::size_t i) const {
  return i < node_.inputs.size() && node_.inputs[i] != nullptr;
}

void GradSink::add(std::size_t i, Tensor g) {
  if (!needs(i)) return;
  Node& in = *node_.inputs[i];
  accumulate_grad(in.grad, in.grad_owned, std::move(g));
}

Var::Var(Tensor value, bool requires_grad) : impl_(std::make_shared<Impl>()) {
  impl_->value = std::move(value);
  if (requires_grad) {
    UPCYCLE_CHECK(is_floating(impl_->value.dtype()), "only floating tensors can require grad, got ",
                  describe(impl_->value));
    impl_->node = std::make_shared<Node>();
    impl_->node->op = "leaf";
    impl_->node->is_leaf = true;
  }
}

Var Var::from_node(Tensor value, std::shared_ptr<Node> node) {
  Var v;
  v.impl_ = std::make_shared<Impl>();
  v.impl_->value = std::move(value);
  v.impl_->node = std::move(node);
  return v;
}

const Tensor& Var::value() const {
  UPCYCLE_CHECK(impl_, "undefined Var");
  return impl_->value;
}

Tensor& Var::value() {
  UPCYCLE_CHECK(impl_, "undefined Var");
  return impl_->value;
}

bool Var::requires_grad() const { return impl_ && impl_->node != nullptr; }

const std::shared_ptr<Node>& Var::node() const {
  UPCYCLE_CHECK(impl_, "undefined Var");
  return impl_->node;
}

const Tensor& Var::grad() const {
  static const Tensor kNone;
  if (!requires_grad()) return kNone;
  return impl_->node->grad;
}

void Var::zero_grad() {
  if (requires_grad()) {
    impl_->node->grad = Tensor();
    impl_->node->grad_owned = false;
  }
}

void Var::set_grad(Tensor g) {
  UPCYCLE_CHECK(requires_grad(), "set_grad on a Var that does not require grad");
  if (g.defined()) check_same_shape(g, value(), "set_grad");
  impl_->node->grad = std::move(g);
  impl_->node->grad_owned = false;
}

namespace {
bool any_requires_grad(std::initializer_list<const Var*> inputs) {
  for (const Var* v : inputs)
    if (v && v->defined() && v->requires_grad()) return true;
  return false;
}

Var make_output_impl(const char* op, Tensor value, std::vector<std::shared_ptr<Node>> in_nodes,
                     bool any, BackwardFn backward) {
  if (!grad_enabled() || !any) return Var(std::move(value), false);
  auto node = std::make_shared<Node>();
  node->op = op;
  node->inputs = std::move(in_nodes);
  if (backward) {
    node->backward = std::move(backward);
  } else {
    const std::string name = op;
    node->backward = [name](const Tensor&, GradSink&) {
      UPCYCLE_THROW("op '", name, "' has no backward, but a gradient reached it");
    };
  }
  return Var::from_node(std::move(value), std::move(node));
}
}  // namespace

Var make_output(const char* op, Tensor value, std::initializer_list<const Var*> inputs,
                BackwardFn backward) {
  const bool any = grad_enabled() && any_requires_grad(inputs);
  std::vector<std::shared_ptr<Node>> nodes;
  if (any) {
    nodes.reserve(inputs.size());
    for (const Var* v : inputs) nodes.push_back(v && v->defined() ? v->node() : nullptr);
  }
  return make_output_impl(op, std::move(value), std::move(nodes), any, std::move(backward));
}

Var make_output(const char* op, Tensor value, const std::vector<Var>& inputs, BackwardFn backward) {
  bool any = false;
  if (grad_enabled())
    for (const Var& v : inputs) any = any || (v.defined() && v.requires_grad());
  std::vector<std::shared_ptr<Node>> nodes;
  if (any) {
    nodes.reserve(inputs.size());
    for (const Var& v : inputs) nodes.push_back(v.defined() ? v.node() : nullptr);
  }
  return make_output_impl(op, std::move(value), std::move(nodes), any, std::move(backward));
}

}  // namespace upcycle
