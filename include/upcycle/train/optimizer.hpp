#pragma once
// AdamW over named parameters. Tensors of rank < 2 (biases, norm gains) get no weight decay. The
// moments live beside their parameters (same device), and a step is one multi-tensor kernel.
#include <string>
#include <vector>

#include "upcycle/autograd/var.hpp"
#include "upcycle/backend/backend.hpp"

namespace upcycle {

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.05;
};

class AdamW {
 public:
  struct Slot {
    std::string name;
    Var param;
    bool decay;
    Tensor m, v;  // first and second moments, allocated at construction
  };

  AdamW(const std::vector<std::pair<std::string, Var>>& named_params, const AdamWOptions& options);

  // One update from the parameters' current gradients (parameters without one are skipped).
  void step(double lr);
  void zero_grad();
  std::int64_t steps_taken() const { return steps_; }
  void set_steps_taken(std::int64_t s) { steps_ = s; }  // restoring a checkpoint
  std::vector<Slot>& slots() { return slots_; }
  const std::vector<Slot>& slots() const { return slots_; }
  const AdamWOptions& options() const { return options_; }

 private:
  std::vector<Slot> slots_;
  std::vector<AdamWTensor> batch_;  // the step's tensors, kept to reuse its allocation
  AdamWOptions options_;
  std::int64_t steps_ = 0;
};

// Linear warmup from 0 to lr over `warmup` steps, then cosine decay to min_lr at `total`.
double warmup_cosine_lr(std::int64_t step, std::int64_t total, std::int64_t warmup, double lr, double min_lr);

}  // namespace upcycle
