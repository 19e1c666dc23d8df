// The trainer: exact resume, checkpoint errors, the non-finite guard.
#include <gtest/gtest.h>

#include "error_of.hpp"

#include <cmath>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <limits>

#include "tiny_configs.hpp"
#include "upcycle/io/hdf5.hpp"
#include "upcycle/ops/elementwise.hpp"
#include "upcycle/train/trainer.hpp"

using namespace upcycle;
using upcycle::testing::error_of;
namespace fs = std::filesystem;

namespace {
fs::path fresh_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("upcycle_test_trainer_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

TrainResult train(const std::string& ini, const std::vector<ConfigOverride>& overrides = {}) {
  const Config cfg = parse_config(ini, "test", overrides);
  auto world = std::make_shared<SelfCommunicator>();
  auto task = make_task(cfg, *world);
  return Trainer(cfg, world, *task, "dense", cfg.get_string("run.dir")).run();
}

}  // namespace

TEST(Trainer, ResumeIsExactBitForBit) {
  const fs::path a = fresh_dir("resume_a"), b = fresh_dir("resume_b");
  // 6 steps in one go, saving at step 3; then a second run resumed from step 3.
  const TrainResult full = train(upcycle::testing::tiny_vit_ini(6, a.string()), {{"checkpoint.every", "3"}});
  ASSERT_EQ(full.losses.size(), 6u);
  ASSERT_TRUE(fs::exists(step_checkpoint_path(stage_checkpoint_dir(a.string(), "dense"), 3)));
  ASSERT_TRUE(fs::exists(latest_checkpoint_path(stage_checkpoint_dir(a.string(), "dense"))));
  const TrainResult resumed = train(upcycle::testing::tiny_vit_ini(6, b.string()),
                                    {{"checkpoint.resume", step_checkpoint_path(stage_checkpoint_dir(a.string(), "dense"), 3)}});
  ASSERT_EQ(resumed.losses.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(resumed.losses[static_cast<std::size_t>(i)], full.losses[static_cast<std::size_t>(i + 3)]) << "step " << i + 4;
  EXPECT_EQ(resumed.steps, 6);
  EXPECT_EQ(resumed.final_eval.at("accuracy"), full.final_eval.at("accuracy"));
  fs::remove_all(a);
  fs::remove_all(b);
}

TEST(Trainer, KeepsTheNewestCheckpointsAndALatestPointer) {
  const fs::path d = fresh_dir("keep");
  train(upcycle::testing::tiny_vit_ini(4, d.string()), {{"checkpoint.every", "1"}, {"checkpoint.keep", "2"}});
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(d / "checkpoints" / "dense")) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"latest.h5", "step-0000003.h5", "step-0000004.h5"}));
  EXPECT_EQ(fs::read_symlink(d / "checkpoints" / "dense" / "latest.h5").string(), "step-0000004.h5");
  // The run-wide pointer names the newest checkpoint of any stage.
  EXPECT_EQ(fs::read_symlink(d / "checkpoints" / "latest.h5").string(), "dense/step-0000004.h5");
  EXPECT_TRUE(fs::exists(d / "metrics.jsonl"));
  fs::remove_all(d);
}

TEST(Checkpoint, BadFilesGiveClearErrorsAndChangeNothing) {
  const fs::path d = fresh_dir("bad");
  train(upcycle::testing::tiny_vit_ini(1, d.string()));
  const std::string good = step_checkpoint_path(stage_checkpoint_dir(d.string(), "dense"), 1);
  const Config cfg = parse_config(upcycle::testing::tiny_vit_ini(1), "test");
  auto world = std::make_shared<SelfCommunicator>();
  auto task = make_task(cfg, *world);
  const auto before = task->model().named_parameters().front().second.value().clone();
  auto unchanged = [&] {
    const auto now = task->model().named_parameters().front().second.value();
    return now.to_vector<float>() == before.to_vector<float>();
  };

  // Truncated: the first half of a real checkpoint.
  const std::string truncated = (d / "truncated.h5").string();
  {
    std::ifstream in(good, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(truncated, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  }
  std::string msg = error_of([&] { load_checkpoint(truncated, task->model(), nullptr, nullptr); });
  EXPECT_NE(msg.find(truncated), std::string::npos) << msg;
  EXPECT_TRUE(unchanged());

  // Not HDF5 at all.
  const std::string text = (d / "text.h5").string();
  std::ofstream(text) << "hello";
  msg = error_of([&] { load_checkpoint(text, task->model(), nullptr, nullptr); });
  EXPECT_NE(msg.find(text), std::string::npos) << msg;

  // HDF5, but not ours.
  const std::string foreign = (d / "foreign.h5").string();
  {
    h5::File f = h5::File::create(foreign);
    h5::write_tensor(f, "/x", Tensor::zeros({2}, DType::f32, Device::cpu));
  }
  msg = error_of([&] { load_checkpoint(foreign, task->model(), nullptr, nullptr); });
  EXPECT_NE(msg.find("not an upcycle checkpoint"), std::string::npos) << msg;

  // Ours, but a different model: the message names the dataset and both shapes.
  const Config wide = parse_config(upcycle::testing::tiny_vit_ini(1), "test", {{"model.width", "32"}, {"model.heads", "2"}});
  auto wide_task = make_task(wide, *world);
  msg = error_of([&] { load_checkpoint(good, wide_task->model(), nullptr, nullptr); });
  EXPECT_NE(msg.find("/model/"), std::string::npos) << msg;
  EXPECT_NE(msg.find(good), std::string::npos) << msg;

  // The missing file.
  msg = error_of([&] { load_checkpoint((d / "missing.h5").string(), task->model(), nullptr, nullptr); });
  EXPECT_NE(msg.find("missing.h5"), std::string::npos) << msg;
  EXPECT_TRUE(unchanged());
  fs::remove_all(d);
}

namespace {
// Wraps a task and poisons the loss of one training step.
class PoisonedTask : public Task {
 public:
  PoisonedTask(std::unique_ptr<Task> inner, int poisoned_call) : inner_(std::move(inner)), poisoned_(poisoned_call) {}
  nn::Module& model() override { return inner_->model(); }
  Batch next_batch() override { return inner_->next_batch(); }
  Var loss(const Batch& b, RngStream* rng) override {
    const Var l = inner_->loss(b, rng);
    return ++calls_ == poisoned_ ? mul_scalar(l, std::numeric_limits<double>::quiet_NaN()) : l;
  }
  std::map<std::string, double> evaluate(Communicator& c, Split s) override { return inner_->evaluate(c, s); }
  ModelOutputs run_model(const nn::Module& m, const Tensor& x, RngStream* rng) const override {
    return inner_->run_model(m, x, rng);
  }
  std::unique_ptr<nn::Module> make_twin() const override { return inner_->make_twin(); }
  std::int64_t split_size(Split s) const override { return inner_->split_size(s); }
  Batch split_batch(Split s, const std::vector<std::int64_t>& ids) const override { return inner_->split_batch(s, ids); }
  ShardedSampler& sampler() override { return inner_->sampler(); }
  std::string headline_metric() const override { return inner_->headline_metric(); }
  nn::ModuleList<nn::TransformerBlock>& blocks() override { return inner_->blocks(); }

 private:
  std::unique_ptr<Task> inner_;
  int poisoned_, calls_ = 0;
};
}  // namespace

TEST(Trainer, NonFiniteLossStopsOrSkipsByPolicy) {
  auto world = std::make_shared<SelfCommunicator>();
  const Config stop = parse_config(upcycle::testing::tiny_vit_ini(4), "test");
  PoisonedTask t1(make_task(stop, *world), 2);
  const std::string msg = error_of([&] { Trainer(stop, world, t1, "dense", "").run(); });
  EXPECT_NE(msg.find("non-finite loss at step 2"), std::string::npos) << msg;

  const Config skip = parse_config(upcycle::testing::tiny_vit_ini(4), "test", {{"train.nan_policy", "skip"}});
  PoisonedTask t2(make_task(skip, *world), 2);
  const TrainResult r = Trainer(skip, world, t2, "dense", "").run();
  EXPECT_EQ(r.skipped_steps, 1);
  EXPECT_EQ(r.losses.size(), 3u);
  for (double l : r.losses) EXPECT_TRUE(std::isfinite(l));
}
