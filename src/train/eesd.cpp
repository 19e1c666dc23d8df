#include "upcycle/train/eesd.hpp"

#include "upcycle/moe/dense_ensemble.hpp"
#include "upcycle/ops/elementwise.hpp"

namespace upcycle {

namespace {
ExpertEnsembleDistillation::Target target_of(const std::string& name) {
  if (name == "embedding") return ExpertEnsembleDistillation::Target::embedding;
  if (name == "logits") return ExpertEnsembleDistillation::Target::logits;
  return ExpertEnsembleDistillation::Target::moe_output;
}
}  // namespace

void check_eesd_config(const Config& cfg) {
  if (cfg.get_string("eesd.weighting") == "entropy" && cfg.get_string("eesd.target") != "moe_output")
    UPCYCLE_USAGE_ERROR("eesd.weighting = entropy weights each token by its routing entropy in one MoE block; it is "
                        "defined for eesd.target = moe_output only, not ",
                        cfg.get_string("eesd.target"), " (use eesd.weighting = uniform)");
}

ExpertEnsembleDistillation::Options ExpertEnsembleDistillation::Options::from(const Config& cfg) {
  check_eesd_config(cfg);
  Options o;
  o.weight = cfg.get_float("eesd.weight");
  o.momentum = cfg.get_float("eesd.ema");
  o.entropy_weighting = cfg.get_string("eesd.weighting") == "entropy";
  o.target = target_of(cfg.get_string("eesd.target"));
  return o;
}

ExpertEnsembleDistillation::ExpertEnsembleDistillation(const Config& cfg, Task& task)
    : ExpertEnsembleDistillation(Options::from(cfg), task.model(), task.make_twin()) {
  task_ = &task;
}

ExpertEnsembleDistillation::ExpertEnsembleDistillation(const Options& options, nn::Module& student,
                                                       std::unique_ptr<nn::Module> teacher)
    : options_(options), task_(nullptr), teacher_(std::move(teacher)) {
  UPCYCLE_CHECK(teacher_ != nullptr, "EESD needs a teacher model");
  teacher_->eval();  // no dropout: the target is a deterministic function of the student's input
  const auto s = student.named_parameters(), t = teacher_->named_parameters();
  UPCYCLE_CHECK(s.size() == t.size(), "EESD: the teacher has ", t.size(), " parameters, the student ", s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    UPCYCLE_CHECK(s[i].first == t[i].first && s[i].second.shape() == t[i].second.shape(),
                  "EESD: teacher parameter ", t[i].first, " does not match the student's ", s[i].first);
    ema_pairs_.push_back({t[i].second.value(), s[i].second.value()});
  }
  copy_student_into_teacher();
  const auto students = moe::find_moe_layers(student), teachers = moe::find_moe_layers(*teacher_);
  UPCYCLE_CHECK(!students.empty(), "EESD needs a model with MoE layers");
  UPCYCLE_CHECK(students.size() == teachers.size(), "EESD: the teacher has ", teachers.size(), " MoE layers, the student ",
                students.size());
  for (std::size_t i = 0; i < students.size(); ++i) {
    blocks_.push_back({students[i].first, students[i].second, teachers[i].second});
    // For the embedding and logits targets the teacher's whole forward runs its MoE layers densely.
    if (options_.target != Target::moe_output) teachers[i].second->set_dense_ensemble(true);
  }
  const std::int64_t slots = options_.target == Target::moe_output ? static_cast<std::int64_t>(blocks_.size()) : 1;
  loss_sums_ = Tensor::zeros({slots}, DType::f64, student.device());
}

ExpertEnsembleDistillation::Loss ExpertEnsembleDistillation::loss(const Batch& batch) {
  Loss out;
  Backend& be = backend_of(loss_sums_);
  auto account = [&](const Var& term, std::int64_t slot) {
    const Var weighted = mul_scalar(term, options_.weight);
    out.backward = out.backward.defined() ? out.backward + weighted : weighted;
    Tensor sum_slot = loss_sums_.rows(slot, slot + 1);
    be.axpy(1.0, weighted.value().to(DType::f64), sum_slot);
  };
  if (options_.target == Target::moe_output) {
    const double per_block = 1.0 / static_cast<double>(blocks_.size());
    for (std::size_t b = 0; b < blocks_.size(); ++b) {
      const moe::MoeRouting& r = blocks_[b].student->last_routing();
      UPCYCLE_CHECK(r.output.defined(), "EESD: MoE layer ", blocks_[b].name, " has no forward to distil");
      const Tensor target = moe::dense_ensemble(*blocks_[b].teacher, r.input.value());
      const Tensor w = options_.entropy_weighting ? moe::entropy_weights(r.logits.value()) : Tensor();
      // Slot b logs the block's own lambda-weighted loss; the blocks' mean is what trains.
      const Var block = moe::distillation_loss(r.output, target, w);
      account(mul_scalar(block, per_block), static_cast<std::int64_t>(b));
    }
  } else {
    UPCYCLE_CHECK(task_ != nullptr, "EESD: the embedding and logits targets need the task's model outputs");
    const bool embedding = options_.target == Target::embedding;
    const ModelOutputs& s = task_->last_outputs();
    Tensor target;
    {
      NoGradGuard no_grad;
      const ModelOutputs t = task_->run_model(*teacher_, batch.inputs, nullptr);
      target = (embedding ? t.features : t.logits).value();
    }
    account(moe::distillation_loss(embedding ? s.features : s.logits, target), 0);
  }
  out.value = Tensor::zeros({1}, DType::f64, loss_sums_.device());
  be.axpy(1.0, out.backward.value().to(DType::f64), out.value);
  ++loss_count_;
  return out;
}

void ExpertEnsembleDistillation::copy_student_into_teacher() {
  for (EmaTensor& pair : ema_pairs_) pair.average.copy_from(pair.value);
}

void ExpertEnsembleDistillation::after_step() { backend_of(loss_sums_).ema(ema_pairs_, options_.momentum); }

void ExpertEnsembleDistillation::add_metrics(JsonObject& o) {
  if (loss_count_ == 0) return;
  const std::vector<double> sums = loss_sums_.to_vector<double>();  // a metrics line: read now
  const double n = static_cast<double>(loss_count_);
  if (options_.target == Target::moe_output) {
    // The per-block value is the block's own term, lambda * mean_t w_t ||..||^2 (before the 1/B of
    // the mean over blocks), so blocks compare directly.
    for (std::size_t b = 0; b < blocks_.size(); ++b) {
      const std::string& name = blocks_[b].name;
      o.add("moe/" + name.substr(0, name.size() - 4) + "/eesd_loss",
            sums[b] * static_cast<double>(blocks_.size()) / n);
    }
  } else {
    o.add("eesd_loss", sums[0] / n);
  }
  backend_of(loss_sums_).fill(loss_sums_, 0.0);
  loss_count_ = 0;
}

}  // namespace upcycle
