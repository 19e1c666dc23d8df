#pragma once
// Module: a node in the tree of layers. Each module registers its own parameters and its direct
// sub-modules under short names; named_parameters() joins them into stable hierarchical names
// ("attn/qkv/weight", "blocks/03/mlp/fc1/bias") in registration order. Those names are the
// contract with checkpoints (/model/<name>) and with the PyTorch golden files, so a layer must
// never rename or reorder what it registers without a checkpoint migration.
//
// Parameters and sub-modules are registered by address (they are members of the derived class),
// not copied: a loader or a gradient check can then replace a parameter's handle through
// parameter(name) and the layer's forward sees it. Consequently modules are neither copyable nor
// movable; hold a variable number of them through std::unique_ptr.
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "upcycle/autograd/var.hpp"

namespace upcycle::nn {

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;
  Module(Module&&) = delete;
  Module& operator=(Module&&) = delete;

  // Own parameters first, then each sub-module's, depth-first, each in registration order.
  std::vector<std::pair<std::string, Var>> named_parameters() const;
  std::vector<Var> parameters() const;
  // The registered handle itself (assigning to it replaces the parameter). Throws, listing the
  // names that exist, when `name` is not a parameter of this module tree.
  Var& parameter(const std::string& name);
  const Var& parameter(const std::string& name) const;
  bool has_parameter(const std::string& name) const;
  // Direct sub-modules in registration order.
  const std::vector<std::pair<std::string, Module*>>& children() const { return children_; }

  std::int64_t num_parameters() const;  // total element count
  void zero_grad();
  // Training mode for this module and all below it (dropout is active only while training).
  void train(bool on = true);
  void eval() { train(false); }
  bool training() const { return training_; }
  // Converts every parameter to `dtype` (f64 for gradient checks); drops accumulated gradients.
  void to(DType dtype);
  // Moves every parameter, and every module's other state (move_state), to `device`; drops
  // accumulated gradients. Models are initialised on the host from the seeded stream (the values do
  // not depend on the device) and moved once, before the optimiser makes its state beside them.
  void to(Device device);
  // The device of the parameters (cpu for a module without any).
  Device device() const;

 protected:
  // Tensors a module keeps besides its parameters (the MoE layer's selection bias); Module::to
  // calls it on every module of the tree.
  virtual void move_state(Device /*device*/) {}

  // `name` must be non-empty, free of '/', and unique within this module.
  void register_parameter(const std::string& name, Var& parameter);
  void register_module(const std::string& name, Module& module);

 private:
  // Depth-first over (full name, registered handle), in named_parameters() order.
  void for_each_parameter(const std::string& prefix,
                          const std::function<void(const std::string&, Var&)>& f) const;
  void check_new_name(const std::string& name) const;
  void move_tree_state(Device device);
  const Var* find(const std::string& name) const;

  std::vector<std::pair<std::string, Var*>> params_;
  std::vector<std::pair<std::string, Module*>> children_;
  bool training_ = true;
};

// Zero-padded name for the i-th of a list of modules ("03"), so that names sort in order.
std::string index_name(std::size_t i, int width = 2);

}  // namespace upcycle::nn
