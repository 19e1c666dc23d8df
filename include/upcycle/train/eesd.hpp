#pragma once
// Expert-Ensemble Self-Distillation (docs/methods.md section 5), what the trainer adds to an MoE
// run with eesd.enabled:
//   * the teacher: a second model of the task's model class (Task::make_twin), never trained,
//     set after every optimiser step to the exponential moving average of the student,
//       theta_T <- m theta_T + (1 - m) theta_S        (m = eesd.ema; one fused Backend::ema pass)
//     It is sharded like the student: each rank keeps the average of its own experts and of the
//     replicated parameters. It starts as a copy of the student when the stage starts;
//   * the loss, added to the task's loss after each forward:
//       L = lambda * mean over MoE blocks b and tokens t of w_t ||y_S,b(u_t) - y_T,b(u_t)||^2
//     with u_t the student's input of block b, y_S its sparse top-k output, y_T the teacher's dense
//     ensemble of ALL experts on the same u (moe::dense_ensemble; every token reaches every expert
//     of its expert-parallel group), w_t = 1 (uniform) or H(p_t) / log E (entropy; the student's
//     routing of that block, no gradient through the weight). eesd.target = embedding or logits
//     distils the model's final embedding or its logits against the teacher's (whose MoE layers
//     run as dense ensembles) instead: L = lambda * mean over rows of ||f_S - f_T||^2.
//   * metrics: "moe/blocks/NN/eesd_loss" per block (or "eesd_loss" for the embedding and logits
//     targets), lambda included, averaged since the last line.
// The loss is a per-rank token mean like the task's loss: data-parallel gradient averaging makes
// it the mean over the global batch.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "upcycle/backend/backend.hpp"
#include "upcycle/io/config.hpp"
#include "upcycle/io/metrics.hpp"
#include "upcycle/train/task.hpp"

namespace upcycle {

// Throws UsageError for an [eesd] combination the method does not define: weighting = entropy
// (a token's routing entropy in one MoE block) with an embedding or logits target.
void check_eesd_config(const Config& cfg);

class ExpertEnsembleDistillation {
 public:
  enum class Target { moe_output, embedding, logits };
  struct Options {
    double weight = 0.1;    // lambda
    double momentum = 0.999;  // m
    bool entropy_weighting = false;
    Target target = Target::moe_output;
    static Options from(const Config& cfg);  // the [eesd] keys (check_eesd_config first)
  };

  // The teacher is a copy of task.model() as it is now. Throws UsageError as check_eesd_config,
  // and Error for a model without MoE layers.
  ExpertEnsembleDistillation(const Config& cfg, Task& task);
  // Without a task (benchmarks): `teacher` is a twin of `student` (same class, config and expert
  // sharding) that becomes its copy; the target must be moe_output.
  ExpertEnsembleDistillation(const Options& options, nn::Module& student, std::unique_ptr<nn::Module> teacher);

  struct Loss {
    Var backward;  // lambda-weighted, graph attached to the student
    Tensor value;  // its value, f64 [1] on the model's device
  };
  // The loss of the student's last forward on `batch` (call after Task::loss, before the MoE
  // layers' routing is cleared). Collective over each MoE layer's expert-parallel group for the
  // moe_output target.
  Loss loss(const Batch& batch);
  // After an optimiser step that updated the student: the teacher's EMA update.
  void after_step();
  // "moe/blocks/NN/eesd_loss" (or "eesd_loss") averaged since the last call; resets the averages.
  void add_metrics(JsonObject& o);

  // Sets the teacher to the student as it is now (a resume from a checkpoint without a teacher).
  void copy_student_into_teacher();

  nn::Module& teacher() { return *teacher_; }
  const nn::Module& teacher() const { return *teacher_; }
  double momentum() const { return options_.momentum; }
  Target target() const { return options_.target; }

 private:
  struct Block {
    std::string name;  // "blocks/03/moe"
    moe::MoeLayer* student;
    moe::MoeLayer* teacher;
  };
  Options options_;
  const Task* task_;  // null without a task (moe_output target only)
  std::unique_ptr<nn::Module> teacher_;
  std::vector<EmaTensor> ema_pairs_;  // (teacher, student) parameter values, in registration order
  std::vector<Block> blocks_;
  Tensor loss_sums_;  // f64 [blocks] (one slot for embedding / logits), read at metrics lines only
  std::int64_t loss_count_ = 0;
};

// Checkpoint layout of the teacher: "/teacher/<parameter name>", experts by global id like /model.
inline constexpr const char* kTeacherPrefix = "/teacher/";

}  // namespace upcycle
