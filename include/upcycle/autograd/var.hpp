#pragma once
// Reverse-mode autograd. A Var is a handle (copies share) to a value tensor and, when it takes
// part in differentiation, a graph Node. Leaves (parameters) have a leaf Node that accumulates
// their gradient across backward calls until zero_grad(). Op outputs have a Node whose backward
// lambda captures exactly the tensors it needs, so nothing else is kept alive by the graph.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "upcycle/core/tensor.hpp"

namespace upcycle {

struct Node;

// Receives the gradients an op's backward produces for its inputs.
class GradSink {
 public:
  explicit GradSink(Node& node) : node_(node) {}
  // Whether input i needs a gradient (skip the work when it does not).
  bool needs(std::size_t i) const;
  // Add g (shaped like input i) to input i's gradient. g may be shared with other tensors: the
  // engine never writes into a tensor it did not allocate.
  void add(std::size_t i, Tensor g);

 private:
  Node& node_;
};

using BackwardFn = std::function<void(const Tensor& grad_out, GradSink& sink)>;

struct Node {
  std::string op;                             // op name, for errors and profiles
  std::vector<std::shared_ptr<Node>> inputs;  // null where that input needs no gradient
  BackwardFn backward;                        // empty for leaves
  Tensor grad;                                // accumulated gradient of this node's output
  bool is_leaf = false;
  bool released = false;  // backward ran and the graph was freed
  bool grad_owned = false;  // `grad` was allocated by the engine (safe to add into in place)
  // Optional hook run on a leaf once its gradient for this backward pass is complete
  // (gradient-reduction buckets hang off this).
  std::function<void()> on_grad_ready;
};

// Adds g into dst (dst may be undefined); allocates only when dst is shared.
void accumulate_grad(Tensor& dst, bool& dst_owned, Tensor g);

class Var {
 public:
  Var() = default;
  // A leaf. requires_grad = true makes it a parameter-like leaf that accumulates gradients.
  explicit Var(Tensor value, bool requires_grad = false);

  bool defined() const { return impl_ != nullptr; }
  const Tensor& value() const;
  Tensor& value();  // in-place updates (optimisers, loading)
  const Shape& shape() const { return value().shape(); }
  std::int64_t dim(int i) const { return value().dim(i); }
  DType dtype() const { return value().dtype(); }
  Device device() const { return value().device(); }
  bool requires_grad() const;
  const std::shared_ptr<Node>& node() const;

  // Gradient of a leaf (undefined until a backward reached it).
  const Tensor& grad() const;
  void zero_grad();
  void set_grad(Tensor g);  // e.g. after a gradient all-reduce

  // Backward from a scalar (seed 1) or with an explicit seed shaped like the value.
  void backward() const;
  void backward(const Tensor& seed) const;

  // Internal: an op output.
  static Var from_node(Tensor value, std::shared_ptr<Node> node);

 private:
  struct Impl {
    Tensor value;
    std::shared_ptr<Node> node;
  };
  std::shared_ptr<Impl> impl_;
};

// Builds an op's output. When gradients are disabled or no input requires one, the result is a
// plain value. An empty `backward` makes an op whose backward throws if a gradient reaches it.
Var make_output(const char* op, Tensor value, std::initializer_list<const Var*> inputs,
                BackwardFn backward);
Var make_output(const char* op, Tensor value, const std::vector<Var>& inputs, BackwardFn backward);

// Whether graphs are being recorded on this thread.
bool grad_enabled();

// Scope in which no graph is recorded (evaluation, optimiser updates, calibration).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

}  // namespace upcycle
