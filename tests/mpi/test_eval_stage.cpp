// The eval stage (include/upcycle/train/eval_stage.hpp) on a tiny dense ViT and a tiny MoE ViT
// trained for a few steps (tests/support tiny_vit_moe_ini, stages dense,moe with the aux-free bias
// on, so that the checkpoint carries selection biases):
//   (a) the report does not depend on the number of ranks: groups of the first 1, 2 and 4 ranks
//       (inside one mpirun) score the same checkpoints, the 1-rank group is the reference;
//   (b) the test accuracy of the whole test split equals Task::evaluate on Split::test (an
//       independent loop), and the report and metrics files are written as documented;
//   (c) a missing checkpoint is a usage error naming the path or the key.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tiny_configs.hpp"
#include "upcycle/core/error.hpp"
#include "upcycle/dist/world.hpp"
#include "upcycle/train/checkpoint.hpp"
#include "upcycle/train/eval_stage.hpp"
#include "upcycle/train/stages.hpp"
#include "upcycle/train/task.hpp"

using namespace upcycle;
namespace fs = std::filesystem;

namespace {

// Sums are ordered differently with the rank count (per-rank partial sums, all-reduces, the expert
// exchange); every measure is accumulated in double from f32 model outputs, so the differences
// are at the f32 rounding of the forward passes, far below this bound.
constexpr double kRelTol = 1e-6;

// A directory name every rank agrees on (rank 0's pid).
fs::path agreed_dir(Communicator& world, const std::string& name) {
  Tensor pid = Tensor::from_vector<std::int64_t>({static_cast<std::int64_t>(::getpid())}, {1}, Device::cpu);
  world.broadcast(pid, 0);
  return fs::temp_directory_path() /
         ("upcycle_test_eval_stage_" + name + "_" + std::to_string(pid.to_vector<std::int64_t>()[0]));
}

std::string ini_with_stages(const std::string& stages, const std::string& run_dir) {
  std::string ini = upcycle::testing::tiny_vit_moe_ini(4, run_dir);
  ini.replace(ini.find("stages = moe"), 12, "stages = " + stages);
  return ini;
}

// The dense and MoE checkpoints every test scores, trained once by the whole world.
struct Trained {
  fs::path dir;
  std::string dense, moe;
};
const Trained& trained(const std::shared_ptr<Communicator>& world) {
  static Trained t = [&] {
    Trained r;
    r.dir = agreed_dir(*world, "train");
    if (world->rank() == 0) fs::remove_all(r.dir);
    world->barrier();
    const Config cfg = parse_config(ini_with_stages("dense,moe", r.dir.string()), "test_eval_stage",
                                    {{"moe.aux_free_rate", "0.05"}});
    run_stages(cfg, world);
    r.dense = latest_checkpoint_path(stage_checkpoint_dir(r.dir.string(), "dense"));
    r.moe = latest_checkpoint_path(stage_checkpoint_dir(r.dir.string(), "moe"));
    return r;
  }();
  return t;
}

Config eval_config(const std::string& run_dir, const std::vector<ConfigOverride>& extra) {
  return parse_config(ini_with_stages("eval", run_dir), "test_eval_stage", extra);
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void expect_close(double got, double ref, const std::string& what) {
  EXPECT_NEAR(got, ref, kRelTol * std::max(std::abs(ref), 1e-3)) << what;
}

void expect_same_model(const ModelEvaluation& got, const ModelEvaluation& ref, int size) {
  const std::string at = " with " + std::to_string(size) + " rank(s)";
  EXPECT_EQ(got.step, ref.step);
  EXPECT_EQ(got.test_examples, ref.test_examples);
  ASSERT_EQ(got.test.size(), ref.test.size());
  for (const auto& [k, v] : ref.test) {
    ASSERT_TRUE(got.test.count(k)) << k;
    if (k == "accuracy")
      EXPECT_EQ(got.test.at(k), v) << "test accuracy" << at;
    else
      expect_close(got.test.at(k), v, "test " + k + at);
  }
  ASSERT_EQ(got.few_shot.size(), ref.few_shot.size());
  for (std::size_t i = 0; i < ref.few_shot.size(); ++i) {
    EXPECT_EQ(got.few_shot[i].k, ref.few_shot[i].k);
    EXPECT_EQ(got.few_shot[i].draws, ref.few_shot[i].draws) << "few-shot k = " << ref.few_shot[i].k << at;
  }
  ASSERT_EQ(got.blocks.size(), ref.blocks.size());
  for (std::size_t i = 0; i < ref.blocks.size(); ++i) {
    const BlockSpecialisation &g = got.blocks[i], &r = ref.blocks[i];
    const std::string b = r.name + at + ": ";
    EXPECT_EQ(g.name, r.name);
    EXPECT_EQ(g.tokens, r.tokens) << b;
    EXPECT_EQ(g.output_tokens, r.output_tokens) << b;
    expect_close(g.weight_cosine, r.weight_cosine, b + "weight cosine");
    expect_close(g.output_cosine, r.output_cosine, b + "output cosine");
    expect_close(g.weight_cosine_w1w2, r.weight_cosine_w1w2, b + "weight cosine of [W1, W2]");
    expect_close(g.prob_std, r.prob_std, b + "router probability std");
    EXPECT_EQ(g.prob_histogram, r.prob_histogram) << b;
    expect_close(g.entropy, r.entropy, b + "entropy");
    expect_close(g.entropy_norm, r.entropy_norm, b + "entropy_norm");
    expect_close(g.load_cov, r.load_cov, b + "load CoV");
    expect_close(g.expert_mean_prob_mean, r.expert_mean_prob_mean, b + "expert mean prob");
    ASSERT_EQ(g.expert_mean_prob.size(), r.expert_mean_prob.size());
    for (std::size_t e = 0; e < r.expert_mean_prob.size(); ++e)
      expect_close(g.expert_mean_prob[e], r.expert_mean_prob[e], b + "expert mean prob " + std::to_string(e));
    expect_close(g.relative_compactness, r.relative_compactness, b + "relative compactness");
    std::printf("[ eval %d ranks ] %s: relative differences to 1 rank: weight cos %.2g, output cos %.2g, entropy %.2g, "
                "load CoV %.2g, compactness %.2g\n",
                size, r.name.c_str(), std::abs(g.weight_cosine / r.weight_cosine - 1),
                std::abs(g.output_cosine / r.output_cosine - 1), std::abs(g.entropy / r.entropy - 1),
                std::abs(g.load_cov / r.load_cov - 1), std::abs(g.relative_compactness / r.relative_compactness - 1));
  }
}

}  // namespace

TEST(EvalStage, ReportDoesNotDependOnTheNumberOfRanks) {
  auto world = make_world_communicator();
  const Trained& t = trained(world);
  // 300 test images: one rank takes two chunks (256 + 44), 2 and 4 ranks 150 and 75 each; the
  // output-similarity sample of 3000 tokens (17 per image) spans the shards of several ranks.
  const std::vector<ConfigOverride> keys = {{"eval.test_limit", "300"},       {"eval.tokens", "3000"},
                                            {"eval.few_shot_k", "1,3"},        {"eval.few_shot_draws", "3"},
                                            {"eval.dense_checkpoint", t.dense}, {"eval.moe_checkpoint", t.moe}};
  EvalReport reference;
  for (int size : {1, 2, 4}) {
    if (size > world->size()) break;
    const bool member = world->rank() < size;
    auto group = world->split(member ? 0 : 1, world->rank());
    const fs::path dir = agreed_dir(*world, "np" + std::to_string(size));
    if (member) {
      const EvalReport r = evaluate_checkpoints(eval_config(dir.string(), keys), group);
      if (world->rank() == 0) {
        ASSERT_TRUE(r.dense && r.moe);
        EXPECT_EQ(r.world_size, size);
        if (size == 1) {
          reference = r;
          // What the report holds at all: 300 images, 10 classes, one MoE block of 4 experts.
          EXPECT_EQ(r.dense->test_examples, 300);
          ASSERT_EQ(r.dense->few_shot.size(), 2u);
          EXPECT_EQ(r.dense->few_shot[1].k, 3);
          EXPECT_EQ(r.dense->few_shot[1].draws.size(), 3u);
          EXPECT_TRUE(r.dense->blocks.empty());
          ASSERT_EQ(r.moe->blocks.size(), 1u);
          const BlockSpecialisation& b = r.moe->blocks[0];
          EXPECT_EQ(b.name, "blocks/01/moe");
          EXPECT_EQ(b.tokens, 300 * 17);
          EXPECT_EQ(b.output_tokens, 3000);
          EXPECT_EQ(b.expert_mean_prob.size(), 4u);
          EXPECT_GT(b.entropy, 0.0);
          EXPECT_LE(b.entropy_norm, 1.0 + 1e-12);
          EXPECT_GT(b.relative_compactness, 0.0);
          // Every probability of every token is counted once in the histogram.
          std::int64_t counted = 0;
          for (std::int64_t c : b.prob_histogram) counted += c;
          EXPECT_EQ(counted, b.tokens * 4);
          EXPECT_GT(b.prob_std, 0.0);
          EXPECT_GT(b.weight_cosine, -1.0);
          EXPECT_LT(b.weight_cosine, 1.0);
          for (const ModelEvaluation* m : {&*r.dense, &*r.moe}) {
            EXPECT_GT(m->test.at("accuracy"), 0.0);
            EXPECT_LE(m->test.at("accuracy"), 1.0);
            for (const auto& f : m->few_shot) {
              double mean = 0;
              for (double a : f.draws) mean += a / static_cast<double>(f.draws.size());
              EXPECT_NEAR(f.mean, mean, 1e-15);
              EXPECT_GE(f.std, 0.0);
            }
          }
          std::printf("[ eval ] dense test accuracy %.4f loss %.6f; moe %.4f loss %.6f; block 01: weight cos %.6f, "
                      "output cos %.6f, entropy %.6f (norm %.6f), load CoV %.6f, compactness %.6f; 3-shot %.4f +- %.4f\n",
                      r.dense->test.at("accuracy"), r.dense->test.at("loss"), r.moe->test.at("accuracy"),
                      r.moe->test.at("loss"), b.weight_cosine, b.output_cosine, b.entropy, b.entropy_norm, b.load_cov,
                      b.relative_compactness, r.dense->few_shot[1].mean, r.dense->few_shot[1].std);
        } else {
          expect_same_model(*r.dense, *reference.dense, size);
          expect_same_model(*r.moe, *reference.moe, size);
        }
      }
    }
    world->barrier();
  }
}

TEST(EvalStage, WholeTestSplitMatchesTaskEvaluateAndFilesAreWritten) {
  auto world = make_world_communicator();
  const Trained& t = trained(world);
  const fs::path dir = agreed_dir(*world, "files");
  if (world->rank() == 0) {
    fs::remove_all(dir);
    fs::create_directories(dir);
    std::ofstream(dir / "metrics.jsonl") << "{\"event\": \"train\", \"stage\": \"dense\", \"step\": 1}\n";
  }
  world->barrier();
  // Only the dense model (this run dir has no checkpoints of its own), the whole test split.
  const Config cfg = eval_config(dir.string(), {{"eval.dense_checkpoint", t.dense}, {"eval.few_shot_k", "2"},
                                                {"eval.few_shot_draws", "2"}});
  run_eval_stage(cfg, world);
  const EvalReport r = evaluate_checkpoints(cfg, world);
  auto task = make_task(cfg, *world);
  load_checkpoint(t.dense, task->model(), nullptr, nullptr);
  const auto independent = task->evaluate(*world, Split::test);
  ASSERT_TRUE(r.dense.has_value());
  EXPECT_FALSE(r.moe.has_value());
  EXPECT_EQ(r.dense->test_examples, 10000);
  EXPECT_EQ(r.dense->test.at("accuracy"), independent.at("accuracy"));
  // Task::evaluate averages f32 per-chunk losses; the stage sums per-example losses in double.
  EXPECT_NEAR(r.dense->test.at("loss"), independent.at("val_loss"), 1e-5 * independent.at("val_loss"));
  if (world->rank() == 0) {
    const std::string report = read_file(dir / "eval_report.json");
    for (const char* needle : {"\"world_size\": ", "\"dense\": {", "\"checkpoint\": ", "\"test\": {\"accuracy\": ",
                               "\"few_shot\": {\"2\": {\"mean\": ", "\"draws\": ["})
      EXPECT_NE(report.find(needle), std::string::npos) << needle << " not in " << report;
    EXPECT_EQ(report.find("\"moe\""), std::string::npos) << report;
    // The training event stays, one eval_stage event is appended.
    const std::string metrics = read_file(dir / "metrics.jsonl");
    EXPECT_EQ(metrics.rfind("{\"event\": \"train\", \"stage\": \"dense\", \"step\": 1}\n", 0), 0u) << metrics;
    EXPECT_NE(metrics.find("{\"event\": \"eval_stage\", \"world_size\": " + std::to_string(world->size()) +
                           ", \"dense/test_accuracy\": "),
              std::string::npos)
        << metrics;
    EXPECT_EQ(std::count(metrics.begin(), metrics.end(), '\n'), 2) << metrics;
    fs::remove_all(dir);
  }
  world->barrier();
}

TEST(EvalStage, MissingCheckpointsAreUsageErrors) {
  auto world = make_world_communicator();
  const fs::path dir = agreed_dir(*world, "empty");
  const std::string dense_default = latest_checkpoint_path(stage_checkpoint_dir(dir.string(), "dense"));
  const std::string moe_default = latest_checkpoint_path(stage_checkpoint_dir(dir.string(), "moe"));
  try {
    run_eval_stage(eval_config(dir.string(), {}), world);
    ADD_FAILURE() << "no UsageError without checkpoints";
  } catch (const UsageError& e) {
    EXPECT_NE(e.message().find(dense_default), std::string::npos) << e.message();
    EXPECT_NE(e.message().find(moe_default), std::string::npos) << e.message();
  }
  const std::string absent = (dir / "nope.h5").string();
  try {
    run_eval_stage(eval_config(dir.string(), {{"eval.moe_checkpoint", absent}}), world);
    ADD_FAILURE() << "no UsageError for an absent eval.moe_checkpoint";
  } catch (const UsageError& e) {
    EXPECT_NE(e.message().find("eval.moe_checkpoint"), std::string::npos) << e.message();
    EXPECT_NE(e.message().find(absent), std::string::npos) << e.message();
  }
  // A checkpoint of the wrong stage for its key.
  const Trained& t = trained(world);
  EXPECT_THROW(run_eval_stage(eval_config(dir.string(), {{"eval.dense_checkpoint", t.moe}}), world), UsageError);
  world->barrier();  // every rank has read the checkpoints before they go
  if (world->rank() == 0) fs::remove_all(t.dir);
  world->barrier();
}
