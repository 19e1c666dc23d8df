// The trainer: exact resume, checkpoint errors, the non-finite guard.
#include <gtest/gtest.h>

#include "error_of.hpp"

#include <cmath>
#include <csignal>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <limits>

#include "tiny_configs.hpp"
#include "upcycle/io/hdf5.hpp"
#include "upcycle/ops/elementwise.hpp"
#include "upcycle/io/metrics_history.hpp"
#include "upcycle/train/resume.hpp"
#include "upcycle/train/stop_request.hpp"
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
  // Poisons call `poisoned_call` (1-based), or every call from it on when `from_then_on`.
  PoisonedTask(std::unique_ptr<Task> inner, int poisoned_call, bool from_then_on = false)
      : inner_(std::move(inner)), poisoned_(poisoned_call), from_then_on_(from_then_on) {}
  nn::Module& model() override { return inner_->model(); }
  Batch next_batch() override { return inner_->next_batch(); }
  Var loss(const Batch& b, RngStream* rng) override {
    const Var l = inner_->loss(b, rng);
    ++calls_;
    const bool poison = from_then_on_ ? calls_ >= poisoned_ : calls_ == poisoned_;
    return poison ? mul_scalar(l, std::numeric_limits<double>::quiet_NaN()) : l;
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
  bool from_then_on_;
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

TEST(Trainer, SkipPolicyStopsARunThatKeepsDiverging) {
  auto world = std::make_shared<SelfCommunicator>();
  const Config skip = parse_config(upcycle::testing::tiny_vit_ini(20), "test",
                                   {{"train.nan_policy", "skip"}, {"train.max_skipped_steps", "3"}});
  PoisonedTask task(make_task(skip, *world), 5, /*from_then_on=*/true);
  const std::string msg = error_of([&] { Trainer(skip, world, task, "dense", "").run(); });
  // Steps 5, 6, 7 are skipped; the 4th in a row (step 8) is one too many.
  EXPECT_NE(msg.find("4 consecutive steps (5 to 8)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("train.max_skipped_steps = 3"), std::string::npos) << msg;
}

namespace {
std::vector<std::string> metrics_lines(const fs::path& run_dir) {
  std::ifstream in(run_dir / "metrics.jsonl");
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}
// How many "train" events of `stage` log `step`.
int train_events_at(const std::vector<std::string>& lines, std::int64_t step) {
  int n = 0;
  for (const auto& l : lines)
    n += l.find("\"event\": \"train\"") != std::string::npos &&
         l.find("\"step\": " + std::to_string(step) + ",") != std::string::npos;
  return n;
}
std::string dense_dir(const fs::path& run_dir) { return stage_checkpoint_dir(run_dir.string(), "dense"); }
}  // namespace

TEST(Trainer, AStopRequestSavesTheStepAndAutoResumesExactly) {
  const fs::path a = fresh_dir("stop_a"), b = fresh_dir("stop_b");
  const TrainResult full = train(upcycle::testing::tiny_vit_ini(6, a.string()));
  ASSERT_EQ(full.losses.size(), 6u);
  // As if SIGUSR1 arrived during step 1: the run finishes that step, saves it, and stops.
  request_stop(SIGUSR1);
  const std::string msg = error_of([&] { train(upcycle::testing::tiny_vit_ini(6, b.string())); });
  clear_stop_request();
  EXPECT_NE(msg.find("stopped by SIGUSR1 after step 1 of stage dense"), std::string::npos) << msg;
  EXPECT_TRUE(fs::exists(step_checkpoint_path(dense_dir(b), 1)));
  const auto stopped = metrics_lines(b);
  ASSERT_FALSE(stopped.empty());
  EXPECT_NE(stopped.back().find("\"event\": \"stopped\""), std::string::npos) << stopped.back();
  // The same command line with checkpoint.resume = auto continues from step 1.
  const TrainResult resumed = train(upcycle::testing::tiny_vit_ini(6, b.string()), {{"checkpoint.resume", "auto"}});
  ASSERT_EQ(resumed.losses.size(), 5u);
  for (std::size_t i = 0; i < 5; ++i) EXPECT_EQ(resumed.losses[i], full.losses[i + 1]) << "step " << i + 2;
  EXPECT_EQ(resumed.final_eval.at("accuracy"), full.final_eval.at("accuracy"));
  const auto lines = metrics_lines(b);
  for (std::int64_t step = 1; step <= 6; ++step) EXPECT_EQ(train_events_at(lines, step), 1) << "step " << step;
  fs::remove_all(a);
  fs::remove_all(b);
}

TEST(Trainer, AutoResumeStartsFreshThenFindsTheStageComplete) {
  const fs::path d = fresh_dir("auto");
  const TrainResult first = train(upcycle::testing::tiny_vit_ini(4, d.string()), {{"checkpoint.resume", "auto"}});
  EXPECT_EQ(first.losses.size(), 4u);  // no checkpoint yet: a fresh start
  const fs::path last = step_checkpoint_path(dense_dir(d), 4);
  ASSERT_TRUE(fs::exists(last));
  const auto written = fs::last_write_time(last);
  const auto lines_before = metrics_lines(d);
  // A requeue after the stage finished trains nothing and rewrites nothing.
  const TrainResult again = train(upcycle::testing::tiny_vit_ini(4, d.string()), {{"checkpoint.resume", "auto"}});
  EXPECT_TRUE(again.losses.empty());
  EXPECT_EQ(again.steps, 4);
  EXPECT_EQ(again.final_eval.at("accuracy"), first.final_eval.at("accuracy"));
  EXPECT_EQ(fs::last_write_time(last), written);
  const auto lines_after = metrics_lines(d);
  // Only the resume event was added.
  ASSERT_EQ(lines_after.size(), lines_before.size() + 1);
  EXPECT_NE(lines_after.back().find("\"event\": \"resume\""), std::string::npos) << lines_after.back();
  fs::remove_all(d);
}

TEST(Trainer, AutoResumeSkipsADamagedNewestCheckpointAndCutsTheKilledRunsSteps) {
  const fs::path a = fresh_dir("damaged_a"), b = fresh_dir("damaged_b");
  const TrainResult full = train(upcycle::testing::tiny_vit_ini(6, a.string()));
  // A run that saved steps 2 and 4, then died while step 6's file was cut short (as a full disk
  // or a torn copy would leave it), having logged every step.
  train(upcycle::testing::tiny_vit_ini(6, b.string()), {{"checkpoint.every", "2"}, {"checkpoint.keep", "0"}});
  const fs::path six = step_checkpoint_path(dense_dir(b), 6);
  fs::resize_file(six, fs::file_size(six) / 2);
  const TrainResult resumed = train(upcycle::testing::tiny_vit_ini(6, b.string()), {{"checkpoint.resume", "auto"}});
  ASSERT_EQ(resumed.losses.size(), 2u);  // steps 5 and 6 again, from step 4
  EXPECT_EQ(resumed.losses[0], full.losses[4]);
  EXPECT_EQ(resumed.losses[1], full.losses[5]);
  EXPECT_TRUE(fs::exists(six.string() + ".damaged"));  // kept for a post-mortem, never a candidate
  EXPECT_TRUE(check_checkpoint(six.string()).ok);      // step 6 written again by the resumed run
  const auto lines = metrics_lines(b);
  for (std::int64_t step = 1; step <= 6; ++step) EXPECT_EQ(train_events_at(lines, step), 1) << "step " << step;
  bool resume_event = false;
  for (const auto& l : lines)
    resume_event = resume_event || (l.find("\"event\": \"resume\"") != std::string::npos &&
                                    l.find("\"step\": 4,") != std::string::npos &&
                                    l.find("\"dropped_events\": 3") != std::string::npos);  // steps 5, 6 and the eval
  EXPECT_TRUE(resume_event);
  fs::remove_all(a);
  fs::remove_all(b);
}

TEST(Trainer, ResumingAnOlderCheckpointNeverOverwritesNewerOnesUnlessAsked) {
  const fs::path d = fresh_dir("older");
  train(upcycle::testing::tiny_vit_ini(4, d.string()), {{"checkpoint.every", "2"}, {"checkpoint.keep", "0"}});
  const std::string two = step_checkpoint_path(dense_dir(d), 2);
  const std::string msg =
      error_of([&] { train(upcycle::testing::tiny_vit_ini(4, d.string()), {{"checkpoint.resume", two}}); });
  EXPECT_NE(msg.find("would overwrite its newer checkpoints"), std::string::npos) << msg;
  EXPECT_NE(msg.find("step-0000004.h5"), std::string::npos) << msg;
  EXPECT_TRUE(fs::exists(step_checkpoint_path(dense_dir(d), 4)));
  const TrainResult r = train(upcycle::testing::tiny_vit_ini(4, d.string()),
                              {{"checkpoint.resume", two}, {"run.overwrite", "true"}});
  EXPECT_EQ(r.losses.size(), 2u);
  fs::remove_all(d);
}

TEST(Trainer, ResumingUnderAChangedScheduleRecordsTheChangedKeys) {
  const fs::path d = fresh_dir("changed");
  train(upcycle::testing::tiny_vit_ini(4, d.string()), {{"checkpoint.every", "2"}});
  // The schedule changes (steps 4 -> 6, lr); log.every does not change the trajectory.
  train(upcycle::testing::tiny_vit_ini(6, d.string()),
        {{"checkpoint.resume", "auto"}, {"train.lr", "0.001"}, {"log.every", "2"}});
  const auto lines = metrics_lines(d);
  std::string resume;
  for (const auto& l : lines)
    if (l.find("\"event\": \"resume\"") != std::string::npos) resume = l;
  EXPECT_NE(resume.find("\"changed_keys\": [\"train.steps: 4 -> 6\", \"train.lr: 0.003 -> 0.001\"]"), std::string::npos)
      << resume;
  fs::remove_all(d);
}

TEST(ChangedTrajectoryKeys, ListsWhatChangesTheRunAndNothingElse) {
  const Config saved = parse_config(upcycle::testing::tiny_vit_ini(4), "test");
  const Config same_run = parse_config(upcycle::testing::tiny_vit_ini(4), "test",
                                       {{"log.every", "7"}, {"checkpoint.every", "9"}, {"train.eval_every", "3"}});
  EXPECT_TRUE(changed_trajectory_keys(same_run, saved.to_ini()).empty());
  const Config other = parse_config(upcycle::testing::tiny_vit_ini(4), "test",
                                    {{"run.seed", "8"}, {"train.batch_size", "16"}, {"train.lr_schedule", "linear"}});
  const auto changed = changed_trajectory_keys(other, saved.to_ini());
  ASSERT_EQ(changed.size(), 3u);
  EXPECT_EQ(changed[0], "run.seed: 7 -> 8");
  const auto text = changed_trajectory_keys(other, "[train]\nno_such_key = 1\n");
  ASSERT_EQ(text.size(), 1u);
  EXPECT_NE(text[0].find("cannot be compared"), std::string::npos) << text[0];
}

TEST(MetricsHistory, CutsTheTailFromTheFirstStepPastTheRestartPoint) {
  const fs::path d = fresh_dir("cut");
  const fs::path m = d / "metrics.jsonl";
  {
    std::ofstream out(m);
    out << "{\"event\": \"train\", \"stage\": \"dense\", \"step\": 10, \"loss\": 1}\n"
        << "{\"event\": \"train\", \"stage\": \"dense\", \"step\": 20, \"loss\": 1}\n"
        << "{\"event\": \"upcycle\", \"stage\": \"upcycle\"}\n"
        << "{\"event\": \"train\", \"stage\": \"moe\", \"step\": 10, \"loss\": 1}\n"
        << "{\"event\": \"train\", \"stage\": \"moe\", \"step\": 20, \"loss\": 1}\n"
        << "{\"event\": \"stopped\", \"stage\": \"moe\", \"step\": 25}\n";
  }
  EXPECT_EQ(cut_metrics_after(m.string(), "dense", 20), 0);  // nothing of dense after step 20
  EXPECT_EQ(metrics_lines(d).size(), 6u);
  EXPECT_EQ(cut_metrics_after(m.string(), "moe", 10), 2);  // moe steps 20 and 25
  auto lines = metrics_lines(d);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_NE(lines.back().find("\"stage\": \"moe\", \"step\": 10"), std::string::npos);
  EXPECT_EQ(cut_metrics_after(m.string(), "moe", -1), 1);  // a fresh start drops every moe line
  EXPECT_EQ(metrics_lines(d).size(), 3u);
  EXPECT_EQ(cut_metrics_after((d / "missing.jsonl").string(), "moe", -1), 0);
  fs::remove_all(d);
}
