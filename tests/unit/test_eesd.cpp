// Expert-Ensemble Self-Distillation on one process: the dense ensemble's identity, the entropy
// weights, the teacher's EMA limits (m = 0 copies the student, m = 1 freezes the teacher), the
// per-block loss in metrics.jsonl, the teacher in the checkpoint, bit-exact resume, the embedding
// and logits targets, and the combinations that are refused. PyTorch parity of the loss, the
// gradients and the EMA update: tests/golden/test_golden_eesd.cpp; 1 vs 2 vs 4 ranks and resume
// with another expert-parallel size: tests/mpi/test_moe_training.cpp.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include "error_of.hpp"
#include "tiny_configs.hpp"
#include "upcycle/io/hdf5.hpp"
#include "upcycle/moe/dense_ensemble.hpp"
#include "upcycle/ops/elementwise.hpp"
#include "upcycle/train/trainer.hpp"

using namespace upcycle;
using upcycle::testing::error_of;
namespace fs = std::filesystem;

namespace {

fs::path fresh_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("upcycle_test_eesd_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::vector<ConfigOverride> eesd_on(std::vector<ConfigOverride> more = {}) {
  more.push_back({"eesd.enabled", "true"});
  return more;
}

// A tiny MoE task and its trainer, kept alive so tests can look at the teacher.
struct EesdRun {
  Config cfg;
  std::shared_ptr<SelfCommunicator> world = std::make_shared<SelfCommunicator>();
  std::unique_ptr<Task> task;
  std::unique_ptr<Trainer> trainer;
  EesdRun(int steps, const std::string& dir, const std::vector<ConfigOverride>& overrides)
      : cfg(parse_config(upcycle::testing::tiny_vit_moe_ini(steps, dir), "test", overrides)) {
    TaskOptions options;
    options.moe = true;
    task = make_task(cfg, *world, options);
    trainer = std::make_unique<Trainer>(cfg, world, *task, "moe", dir);
  }
};

std::map<std::string, Tensor> values_of(const nn::Module& m) {
  std::map<std::string, Tensor> out;
  for (const auto& [name, p] : m.named_parameters()) out.emplace(name, p.value().clone());
  return out;
}

// Bitwise equality of two f32 tensors (NaN never equals).
bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) return false;
  const auto x = a.to_vector<float>(), y = b.to_vector<float>();
  for (std::size_t i = 0; i < x.size(); ++i)
    if (!(x[i] == y[i])) return false;
  return true;
}

std::vector<std::map<std::string, double>> train_events(const fs::path& dir) {
  std::vector<std::map<std::string, double>> out;
  std::ifstream in(dir / "metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    if (line.find("\"event\": \"train\"") == std::string::npos) continue;
    std::map<std::string, double> e;
    for (const char* key : {"step", "loss", "moe/blocks/01/eesd_loss", "eesd_loss"}) {
      const std::string k = std::string("\"") + key + "\": ";
      const auto at = line.find(k);
      if (at != std::string::npos) e[key] = std::strtod(line.c_str() + at + k.size(), nullptr);
    }
    out.push_back(e);
  }
  return out;
}

}  // namespace

// The router's weights sum to 1, so identical experts make the ensemble that expert (plus the
// shared one): for every activation (swiglu stacks gate and up rows per expert) and with and
// without biases.
TEST(DenseEnsemble, OfIdenticalExpertsIsThatExpert) {
  for (nn::MlpActivation act : {nn::MlpActivation::gelu_tanh, nn::MlpActivation::swiglu})
    for (bool bias : {true, false}) {
      moe::MoeConfig c;
      c.d_model = 8;
      c.d_ff = 12;
      c.num_experts = 4;
      c.top_k = 2;
      c.shared_expert = true;
      c.activation = act;
      c.bias = bias;
      RngStream rng(3);
      moe::MoeLayer layer(c, nullptr, rng);
      for (Var* w : {&layer.experts.w1, &layer.experts.b1, &layer.experts.w2, &layer.experts.b2}) {
        if (!w->defined()) continue;
        Tensor v = w->value();
        backend_of(v).uniform(v, 11, 0, -0.5, 0.5);
        for (std::int64_t e = 1; e < 4; ++e) {
          Tensor row = v.rows(e, e + 1);
          row.copy_from(v.rows(0, 1));
        }
      }
      Tensor u = Tensor::empty({10, 8}, DType::f32, Device::cpu);
      backend_of(u).normal(u, 5, 0, 0.0, 1.0);
      const Tensor got = moe::dense_ensemble(layer, u);
      NoGradGuard no_grad;
      const Tensor one = layer.local_expert_outputs(Var(u)).value().rows(0, 1).reshape({10, 8});
      const Tensor want = (Var(one) + layer.shared->forward(Var(u))).value();
      const auto g = got.to_vector<float>(), w = want.to_vector<float>();
      ASSERT_EQ(g.size(), w.size());
      for (std::size_t i = 0; i < g.size(); ++i)
        EXPECT_NEAR(g[i], w[i], 1e-5 * (1 + std::abs(w[i]))) << i << (bias ? " with" : " without") << " biases";
    }
}

TEST(DenseEnsemble, EntropyWeightsAreNormalisedRoutingEntropy) {
  // Row 0: uniform (weight 1). Row 1: one logit 30 above the rest (weight ~0). Row 2: by hand.
  const Tensor logits = Tensor::from_vector<float>({0, 0, 0, 0, 30, 0, 0, 0, 1, 2, 3, 4}, {3, 4}, Device::cpu);
  const auto w = moe::entropy_weights(logits).to_vector<float>();
  ASSERT_EQ(w.size(), 3u);
  EXPECT_NEAR(w[0], 1.0, 1e-6);
  EXPECT_NEAR(w[1], 0.0, 1e-9);  // H ~ 3 e^-30 30 / log 4 ~ 6e-12
  double z = 0, h = 0;
  for (int i = 1; i <= 4; ++i) z += std::exp(i);
  for (int i = 1; i <= 4; ++i) h -= std::exp(i) / z * (i - std::log(z));
  EXPECT_NEAR(w[2], h / std::log(4.0), 1e-6);
}

TEST(DenseEnsemble, DistillationLossIsTheWeightedMeanSquaredDistance) {
  const Var s(Tensor::from_vector<float>({1, 2, 3, 4}, {2, 2}, Device::cpu), true);
  const Tensor t = Tensor::from_vector<float>({0, 0, 3, 1}, {2, 2}, Device::cpu);
  const Tensor w = Tensor::from_vector<float>({0.5f, 2.0f}, {2}, Device::cpu);
  // Rows: ||(1,2)||^2 = 5 weighted 0.5; ||(0,3)||^2 = 9 weighted 2: mean (2.5 + 18) / 2.
  EXPECT_NEAR(moe::distillation_loss(s, t).value().item<float>(), 7.0, 1e-6);
  Var l = moe::distillation_loss(s, t, w);
  EXPECT_NEAR(l.value().item<float>(), 10.25, 1e-6);
  l.backward();
  // d/ds = w_t 2 (s - t) / T.
  EXPECT_EQ(s.grad().to_vector<float>(), (std::vector<float>{0.5f, 1.0f, 0.0f, 6.0f}));
}

TEST(Eesd, MomentumZeroMakesTheTeacherTheStudent) {
  EesdRun r(3, "", eesd_on({{"eesd.ema", "0"}}));
  const auto before = values_of(r.task->model());
  r.trainer->run();
  const auto student = values_of(r.task->model()), teacher = values_of(r.trainer->distillation()->teacher());
  ASSERT_EQ(student.size(), teacher.size());
  for (const auto& [name, v] : student) {
    EXPECT_TRUE(same_bits(teacher.at(name), v)) << name;
    if (name.find("experts/w1") != std::string::npos) {
      EXPECT_FALSE(same_bits(before.at(name), v)) << name << " did not train";
    }
  }
}

TEST(Eesd, MomentumOneKeepsTheTeacherFrozen) {
  EesdRun r(3, "", eesd_on({{"eesd.ema", "1"}}));
  const auto before = values_of(r.task->model());
  r.trainer->run();
  const auto student = values_of(r.task->model()), teacher = values_of(r.trainer->distillation()->teacher());
  for (const auto& [name, v] : teacher) {
    EXPECT_TRUE(same_bits(v, before.at(name))) << name;
    if (name.find("experts/w1") != std::string::npos) {
      EXPECT_FALSE(same_bits(student.at(name), v)) << name;
    }
  }
}

TEST(Eesd, LogsTheLossPerBlockAndSavesTheTeacherByGlobalExpertId) {
  const fs::path d = fresh_dir("log");
  EesdRun r(4, d.string(), eesd_on({{"eesd.ema", "0.9"}}));
  const TrainResult res = r.trainer->run();
  const auto events = train_events(d);
  ASSERT_EQ(events.size(), 4u);
  for (const auto& e : events) {
    ASSERT_TRUE(e.count("moe/blocks/01/eesd_loss")) << "step " << e.at("step");
    const double v = e.at("moe/blocks/01/eesd_loss");
    // The teacher is the dense ensemble of all 4 experts, the student uses 2: they differ.
    EXPECT_TRUE(std::isfinite(v) && v > 0) << v;
  }
  const std::string ckpt = latest_checkpoint_path(stage_checkpoint_dir(d.string(), "moe"));
  h5::File f = h5::File::open(ckpt);
  const Tensor w1 = h5::read_tensor(f, "/teacher/blocks/01/moe/experts/w1", DType::f32);
  EXPECT_EQ(w1.shape(), (Shape{4, 32, 16}));
  EXPECT_TRUE(same_bits(w1, r.trainer->distillation()->teacher().parameter("blocks/01/moe/experts/w1").value()));
  EXPECT_TRUE(h5::has_dataset(f, "/teacher/head/weight"));
  EXPECT_EQ(res.losses.size(), 4u);
  fs::remove_all(d);
}

TEST(Eesd, ResumeIsExactBitForBitIncludingTheTeacher) {
  const fs::path a = fresh_dir("resume_a"), b = fresh_dir("resume_b");
  const std::vector<ConfigOverride> o = eesd_on({{"eesd.ema", "0.8"}, {"eesd.weighting", "entropy"}});
  auto with = [&](std::vector<ConfigOverride> v, const ConfigOverride& x) { v.push_back(x); return v; };
  EesdRun full(6, a.string(), with(o, {"checkpoint.every", "3"}));
  const TrainResult rf = full.trainer->run();
  const std::string saved = step_checkpoint_path(stage_checkpoint_dir(a.string(), "moe"), 3);
  EesdRun resumed(6, b.string(), with(o, {"checkpoint.resume", saved}));
  const TrainResult rr = resumed.trainer->run();
  ASSERT_EQ(rf.losses.size(), 6u);
  ASSERT_EQ(rr.losses.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(rr.losses[i], rf.losses[i + 3]) << "step " << i + 4;
  const auto t1 = values_of(full.trainer->distillation()->teacher()), t2 = values_of(resumed.trainer->distillation()->teacher());
  for (const auto& [name, v] : t1) EXPECT_TRUE(same_bits(v, t2.at(name))) << name;
  fs::remove_all(a);
  fs::remove_all(b);
}

TEST(Eesd, WeightZeroLeavesTrainingUnchanged) {
  // lambda = 0: the loss and the gradients are those of a run without EESD, bit for bit.
  EesdRun off(3, "", {});
  EesdRun zero(3, "", eesd_on({{"eesd.weight", "0"}}));
  const TrainResult a = off.trainer->run(), b = zero.trainer->run();
  ASSERT_EQ(a.losses.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(a.losses[i], b.losses[i]) << "step " << i + 1;
  // ... and lambda > 0 changes it.
  EesdRun on(3, "", eesd_on({{"eesd.weight", "1"}}));
  const TrainResult c = on.trainer->run();
  EXPECT_NE(c.losses[0], a.losses[0]);
}

TEST(Eesd, EmbeddingAndLogitsTargetsTrainAndLogOneLoss) {
  for (const char* target : {"embedding", "logits"}) {
    const fs::path d = fresh_dir(std::string("target_") + target);
    EesdRun r(2, d.string(), eesd_on({{"eesd.target", target}, {"eesd.ema", "0.5"}}));
    const TrainResult res = r.trainer->run();
    const auto events = train_events(d);
    ASSERT_EQ(events.size(), 2u) << target;
    // Step 1: the teacher equals the student, but its MoE blocks run as dense ensembles.
    for (const auto& e : events) {
      ASSERT_TRUE(e.count("eesd_loss")) << target;
      EXPECT_FALSE(e.count("moe/blocks/01/eesd_loss")) << target;
      EXPECT_TRUE(std::isfinite(e.at("eesd_loss")) && e.at("eesd_loss") > 0) << target << " " << e.at("eesd_loss");
    }
    for (double l : res.losses) EXPECT_TRUE(std::isfinite(l));
    fs::remove_all(d);
  }
}

TEST(Eesd, EntropyWeightsNeedTheMoeOutputTarget) {
  const std::string msg = error_of([] { EesdRun r(1, "", eesd_on({{"eesd.target", "logits"}, {"eesd.weighting", "entropy"}})); });
  EXPECT_NE(msg.find("eesd.weighting = entropy"), std::string::npos) << msg;
  EXPECT_NE(msg.find("logits"), std::string::npos) << msg;
}
