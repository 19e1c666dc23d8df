// Cluster-aware upcycling (and drop_svd, whose experts also spread over the ranks) over 1, 2 and 4
// ranks gives the experts and router of one process that
// sees the same global batches: calibration keeps the same tokens (chosen by global token id), the
// k-means ends with the same clusters, and every expert's SVD is computed once and received by all.
// Each rank also runs the single-process pipeline itself (SelfCommunicator) as the reference.
#include <gtest/gtest.h>

#include <cmath>

#include "tiny_configs.hpp"
#include "upcycle/dist/world.hpp"
#include "upcycle/train/moe_training.hpp"
#include "upcycle/moe/moe_layer.hpp"
#include "upcycle/train/upcycle_stage.hpp"

using namespace upcycle;

namespace {

struct UpcycleRun {
  std::unique_ptr<Task> dense, moe;
  UpcycleResult result;
};

UpcycleRun upcycle_on(const Config& cfg, const std::shared_ptr<Communicator>& world) {
  UpcycleRun r;
  r.dense = make_task(cfg, *world);
  const ProcessGroups groups = make_process_groups(world, expert_parallel_size(cfg, world->size()));
  TaskOptions o;
  o.moe = true;
  o.expert_parallel = groups.expert_parallel;
  r.moe = make_task(cfg, *world, o);
  r.result = upcycle_model(cfg, *r.dense, *r.moe, *world);
  return r;
}

double max_rel_diff(const Tensor& a, const Tensor& b) {
  const auto x = a.to_vector<float>(), y = b.to_vector<float>();
  EXPECT_EQ(x.size(), y.size());
  double m = 0, scale = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    m = std::max(m, std::abs(static_cast<double>(x[i]) - y[i]));
    scale = std::max(scale, std::abs(static_cast<double>(y[i])));
  }
  return scale > 0 ? m / scale : m;  // all-zero references (biases at init): absolute
}

}  // namespace

TEST(UpcyclingMpi, ClusterUpcyclingDoesNotDependOnTheNumberOfRanks) {
  auto world = make_world_communicator();
  const Config cfg = parse_config(upcycle::testing::tiny_vit_moe_ini(1), "test_upcycling_mpi",
                                  {{"upcycle.method", "cluster"}, {"upcycle.calib_tokens", "2000"},
                                   {"upcycle.kmeans_init_sample", "512"}, {"model.init_std", "0.2"}});
  const UpcycleRun dist = upcycle_on(cfg, world);
  const UpcycleRun self = upcycle_on(cfg, std::make_shared<SelfCommunicator>());

  ASSERT_EQ(dist.result.reports.size(), 1u);
  const auto& a = dist.result.reports[0];
  const auto& b = self.result.reports[0];
  EXPECT_EQ(dist.result.calibration.global_tokens, self.result.calibration.global_tokens);
  EXPECT_EQ(a.cluster_sizes, b.cluster_sizes) << "the same tokens end in the same clusters";
  EXPECT_EQ(a.svd_ranks, b.svd_ranks);
  EXPECT_EQ(a.kmeans.size(), b.kmeans.size());
  // Only the float summation order differs (per-rank partial sums of the centroids and of the
  // float64 second moments): the router (unit centroids) agrees to a few float32 ulps, and W1 of
  // every expert, which goes through the Cholesky factor and SVD of the second moment, to 1e-5
  // relative (measured ~1e-7).
  const auto& dl = *moe::moe_layer_of(dist.moe->blocks()[1]);
  EXPECT_LT(max_rel_diff(dl.router.weight.value(), moe::moe_layer_of(self.moe->blocks()[1])->router.weight.value()), 1e-5);
  for (const char* name : {"w1", "b1", "w2", "b2"}) {
    const std::string key = std::string("/model/blocks/01/moe/experts/") + name;
    EXPECT_LT(max_rel_diff(dist.result.full_experts.at(key), self.result.full_experts.at(key)), 1e-5) << name;
  }
  // This rank's shard of the layer is its rows of the full set.
  const Tensor& full = dist.result.full_experts.at("/model/blocks/01/moe/experts/w1");
  const Tensor mine = full.rows(dl.first_expert(), dl.first_expert() + dl.num_local_experts());
  EXPECT_EQ(mine.to_vector<float>(), dl.experts.w1.value().to_vector<float>());
}

TEST(UpcyclingMpi, DropSvdExpertsAreTheSameBitsOnAnyNumberOfRanks) {
  // Expert e is computed on world rank e mod W from its own range of the block's stream and the
  // others add zeros: every rank count gives the single-process experts exactly.
  auto world = make_world_communicator();
  const Config cfg = parse_config(upcycle::testing::tiny_vit_moe_ini(1), "test_upcycling_mpi",
                                  {{"upcycle.method", "drop_svd"}, {"model.init_std", "0.2"}});
  const UpcycleRun dist = upcycle_on(cfg, world);
  const UpcycleRun self = upcycle_on(cfg, std::make_shared<SelfCommunicator>());
  for (const auto& [key, t] : self.result.full_experts)
    EXPECT_EQ(dist.result.full_experts.at(key).to_vector<float>(), t.to_vector<float>()) << key;
  EXPECT_EQ(moe::moe_layer_of(dist.moe->blocks()[1])->router.weight.value().to_vector<float>(),
            moe::moe_layer_of(self.moe->blocks()[1])->router.weight.value().to_vector<float>());
}
