// MoE training on one process (stage moe, tests/support tiny_vit_moe_ini): the MoE model's
// checkpoint layout, the aux-free bias saved and restored (exact resume), routing statistics in
// metrics.jsonl, the stage itself, and dense checkpoints still loading.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "tiny_configs.hpp"
#include "upcycle/io/hdf5.hpp"
#include "upcycle/train/stages.hpp"
#include "upcycle/train/trainer.hpp"

using namespace upcycle;
namespace fs = std::filesystem;

namespace {
fs::path fresh_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("upcycle_test_moe_training_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

struct MoeRun {
  TrainResult result;
  std::vector<double> bias;  // block 1's aux-free bias after the run
};

MoeRun train_moe(const std::string& ini, const std::vector<ConfigOverride>& overrides = {}) {
  const Config cfg = parse_config(ini, "test", overrides);
  auto world = std::make_shared<SelfCommunicator>();
  TaskOptions options;
  options.moe = true;
  auto task = make_task(cfg, *world, options);
  MoeRun r;
  r.result = Trainer(cfg, world, *task, "moe", cfg.get_string("run.dir")).run();
  const auto& layers = task->moe_layers();
  if (!layers.empty() && layers.front().second->selection_bias().defined())
    r.bias = layers.front().second->selection_bias().to(DType::f64).to_vector<double>();
  return r;
}
}  // namespace

TEST(MoeTraining, BuildsMoeBlocksPerConfig) {
  const Config cfg = parse_config(upcycle::testing::tiny_vit_moe_ini(1), "test");
  auto world = std::make_shared<SelfCommunicator>();
  TaskOptions options;
  options.moe = true;
  auto task = make_task(cfg, *world, options);
  const auto& m = task->model();
  EXPECT_TRUE(m.has_parameter("blocks/00/mlp/fc1/weight"));
  EXPECT_FALSE(m.has_parameter("blocks/01/mlp/fc1/weight"));
  EXPECT_EQ(m.parameter("blocks/01/moe/router/weight").shape(), (Shape{4, 16}));
  EXPECT_EQ(m.parameter("blocks/01/moe/experts/w1").shape(), (Shape{4, 32, 16}));
  ASSERT_EQ(task->moe_layers().size(), 1u);
  EXPECT_EQ(task->moe_layers().front().first, "blocks/01/moe");
  // moe.blocks = all and list.
  auto all = make_task(parse_config(upcycle::testing::tiny_vit_moe_ini(1), "test", {{"moe.blocks", "all"}}), *world,
                       options);
  EXPECT_EQ(all->moe_layers().size(), 2u);
  auto list = make_task(parse_config(upcycle::testing::tiny_vit_moe_ini(1), "test",
                                     {{"moe.blocks", "list"}, {"moe.block_list", "0"}}),
                        *world, options);
  ASSERT_EQ(list->moe_layers().size(), 1u);
  EXPECT_EQ(list->moe_layers().front().first, "blocks/00/moe");
  // Without TaskOptions::moe the same config builds the dense model.
  auto dense = make_task(cfg, *world);
  EXPECT_TRUE(dense->moe_layers().empty());
}

TEST(MoeTraining, AuxFreeBiasIsSavedAndRestoredExactly) {
  const fs::path a = fresh_dir("afb_a"), b = fresh_dir("afb_b");
  const std::vector<ConfigOverride> on = {{"moe.aux_free_rate", "0.01"}, {"checkpoint.every", "3"}};
  const MoeRun full = train_moe(upcycle::testing::tiny_vit_moe_ini(6, a.string()), on);
  ASSERT_EQ(full.result.losses.size(), 6u);
  ASSERT_EQ(full.bias.size(), 4u);
  // Every update moves each expert's bias by exactly +-u or 0 (u = 0.01), so after 6 steps each
  // entry is a multiple of u of size at most 6 u (it may well be back at 0: whether it moved at all
  // is checked on the step-3 checkpoint below).
  for (double x : full.bias) {
    EXPECT_NEAR(x / 0.01, std::round(x / 0.01), 1e-4) << x;
    EXPECT_LE(std::abs(x), 0.06 + 1e-6);
  }

  // The checkpoint holds the bias of step 3 and the experts as [E, ...].
  const std::string saved = step_checkpoint_path(stage_checkpoint_dir(a.string(), "moe"), 3);
  {
    h5::File f = h5::File::open(saved);
    ASSERT_TRUE(h5::has_dataset(f, "/state/moe/blocks/01/aux_free_bias"));
    const auto bias3 = h5::read_tensor(f, "/state/moe/blocks/01/aux_free_bias", DType::f64).to_vector<double>();
    ASSERT_EQ(bias3.size(), 4u);
    double s = 0;
    for (double x : bias3) s += std::abs(x);
    EXPECT_GT(s, 0.0);
    // |bias| grows by at most u per step: 3 steps of 0.01.
    for (double x : bias3) EXPECT_LE(std::abs(x), 0.03 + 1e-6);
    EXPECT_EQ(h5::dataset_shape(f, "/model/blocks/01/moe/experts/w1"), (Shape{4, 32, 16}));
    EXPECT_EQ(h5::dataset_shape(f, "/optimizer/m/blocks/01/moe/experts/w2"), (Shape{4, 16, 32}));
  }
  // Resumed from step 3: the bias is restored, so routing and losses continue bit for bit.
  std::vector<ConfigOverride> resume = on;
  resume.push_back({"checkpoint.resume", saved});
  const MoeRun resumed = train_moe(upcycle::testing::tiny_vit_moe_ini(6, b.string()), resume);
  ASSERT_EQ(resumed.result.losses.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(resumed.result.losses[i], full.result.losses[i + 3]) << "step " << i + 4;
  EXPECT_EQ(resumed.bias, full.bias);
  fs::remove_all(a);
  fs::remove_all(b);
}

TEST(MoeTraining, RoutingStatisticsAreWrittenToMetrics) {
  const fs::path d = fresh_dir("stats");
  train_moe(upcycle::testing::tiny_vit_moe_ini(2, d.string()),
            {{"dpsl.enabled", "true"}, {"dpsl.prior", "group"}, {"moe.capacity_factor", "1.0"}});
  std::ifstream in(d / "metrics.jsonl");
  std::string line, last_train;
  int train_lines = 0;
  while (std::getline(in, line))
    if (line.find("\"event\":\"train\"") != std::string::npos || line.find("\"event\": \"train\"") != std::string::npos) {
      last_train = line;
      ++train_lines;
    }
  EXPECT_EQ(train_lines, 2);
  for (const char* key : {"tokens_per_expert", "cov", "max_over_mean", "dropped_fraction", "entropy",
                          "entropy_norm", "expert_mean_prob", "lb_loss", "z_loss", "dpsl_loss"})
    EXPECT_NE(last_train.find(std::string("\"moe/blocks/01/") + key + "\""), std::string::npos)
        << key << " missing in " << last_train;
  fs::remove_all(d);
}

TEST(MoeTraining, StageMoeWritesAReportAndACheckpoint) {
  const fs::path d = fresh_dir("stage");
  const Config cfg = parse_config(upcycle::testing::tiny_vit_moe_ini(2, d.string()), "test");
  run_stages(cfg, std::make_shared<SelfCommunicator>());
  EXPECT_TRUE(fs::exists(d / "report.json"));
  EXPECT_TRUE(fs::exists(latest_checkpoint_path(stage_checkpoint_dir(d.string(), "moe"))));
  std::ifstream in(d / "report.json");
  const std::string report((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(report.find("\"stage\": \"moe\""), std::string::npos) << report;
  EXPECT_EQ(checkpoint_config_text(latest_checkpoint_path(stage_checkpoint_dir(d.string(), "moe"))).find("stages = moe") != std::string::npos, true);
  fs::remove_all(d);
}

TEST(MoeTraining, DenseCheckpointStillLoads) {
  const fs::path d = fresh_dir("dense");
  const Config cfg = parse_config(upcycle::testing::tiny_vit_ini(1, d.string()), "test");
  auto world = std::make_shared<SelfCommunicator>();
  {
    auto task = make_task(cfg, *world);
    Trainer(cfg, world, *task, "dense", d.string()).run();
  }
  auto task = make_task(cfg, *world);
  AdamW opt(task->model().named_parameters(), AdamWOptions());
  TrainState state;
  CheckpointLoadOptions options;  // the MoE path's options, with nothing sharded or optional present
  options.optional.emplace_back("/state/moe/blocks/01/aux_free_bias", Tensor::zeros({4}, DType::f32, Device::cpu));
  EXPECT_NO_THROW(load_checkpoint(step_checkpoint_path(stage_checkpoint_dir(d.string(), "dense"), 1), task->model(), &opt, &state, &options));
  EXPECT_EQ(state.step, 1);
  fs::remove_all(d);
}
