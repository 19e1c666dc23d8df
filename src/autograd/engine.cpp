// The backward pass: nodes are processed in reverse topological order (a node runs once every
// consumer has added its gradient), then each non-leaf node drops its lambda and gradient so the
// graph is freed as the pass goes.
#include <unordered_map>
#include <vector>

#include "upcycle/autograd/var.hpp"
#include "upcycle/backend/backend.hpp"
#include "upcycle/backend/profiling.hpp"

namespace upcycle {

namespace {

void run_backward(const std::shared_ptr<Node>& root, Tensor seed) {
  UPCYCLE_CHECK(!root->released, "backward through a graph that was already released (op '",
                root->op, "'); build the graph again");
  // Count, for every reachable node, how many consumers will send it a gradient.
  std::unordered_map<Node*, int> pending;
  std::vector<Node*> stack{root.get()};
  pending[root.get()] = 0;
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const auto& in : n->inputs) {
      if (!in) continue;
      auto it = pending.find(in.get());
      if (it == pending.end()) {
        pending.emplace(in.get(), 1);
        stack.push_back(in.get());
      } else {
        ++it->second;
      }
    }
  }

  NoGradGuard no_grad;  // backward lambdas use ops; they must not record graphs themselves
  accumulate_grad(root->grad, root->grad_owned, std::move(seed));
  // shared_ptr so a node stays alive after its last consumer released its inputs.
  std::vector<std::shared_ptr<Node>> ready{root};
  while (!ready.empty()) {
    std::shared_ptr<Node> n = std::move(ready.back());
    ready.pop_back();
    if (n->is_leaf) {
      if (n->on_grad_ready) n->on_grad_ready();
      continue;
    }
    if (n->grad.defined()) {
      profile::Region region(n->op.c_str(), profile::RegionKind::backward_op);  // one branch when off
      GradSink sink(*n);
      n->backward(n->grad, sink);
    }
    n->backward = nullptr;
    n->grad = Tensor();
    n->released = true;
    std::vector<std::shared_ptr<Node>> inputs = std::move(n->inputs);
    n->inputs.clear();
    for (auto& in : inputs) {
      if (in && --pending[in.get()] == 0) ready.push_back(std::move(in));
    }
  }
}

void backward_from(const std::shared_ptr<Node>& root, const Tensor& value, Tensor seed) {
  UPCYCLE_CHECK(root != nullptr, "backward() on a value that does not require grad");
  check_same_shape(seed, value, "backward seed");
  run_backward(root, std::move(seed));
}

}  // namespace

void Var::backward() const {
  UPCYCLE_CHECK(value().numel() == 1, "backward() without a seed needs a scalar, got ",
                describe(value()));
  backward(Tensor::full(value().shape(), 1.0, value().dtype(), value().device()));
}

void Var::backward(const Tensor& seed) const { backward_from(node(), value(), seed); }

}  // namespace upcycle
