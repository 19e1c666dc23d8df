// GradReducer with overlap (all-reduces started from the gradient hooks during backward) against
// the synchronous reducer (all buckets after backward) on gradients of real backward passes: the
// tiny ViT, dense and MoE, with one and three micro-batches; parameters that get no gradient on
// some ranks; the trainer with parallel.overlap_grad_reduce on and off. With 1 and 2 ranks the
// results are bit-identical (a sum of two floats is exact in either order); with 4, MPI's
// non-blocking all-reduce may add in another order, so they agree to rounding.
// Assertions that stop a test (ASSERT_*) come only after a test's last collective.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "tiny_configs.hpp"
#include "tiny_vit_step.hpp"
#include "upcycle/dist/world.hpp"
#include "upcycle/ops/reduce.hpp"
#include "upcycle/train/trainer.hpp"

namespace upcycle {
namespace {

// Small buckets so that the tiny ViT's gradients fill many of them and backward can launch the
// first ones long before it ends.
constexpr std::size_t kBucketBytes = 2048;

class OverlapTest : public ::testing::Test {
 protected:
  std::shared_ptr<Communicator> world = make_world_communicator();
  const int W = world->size();
  const int r = world->rank();
};

// A tiny ViT whose parameters start alike on every rank and in every replica (same seed).
struct Replica {
  explicit Replica(bool moe) : rng(11), model(testing::tiny_vit_config(moe), rng), params(model.parameters()) {
    model.train(true);
  }
  // Back-propagates the mean cross-entropy of `b` times `scale` (accumulating into the gradients).
  void backward(const Batch& b, double scale) {
    mul_scalar(cross_entropy(model.forward(b.inputs), b.targets), scale).backward();
    for (moe::MoeLayer* layer : moe::moe_layers_of(model.blocks)) layer->clear_routing();
  }
  void zero_grad() {
    for (Var& p : params) p.zero_grad();
  }
  RngStream rng;
  nn::ViT model;
  std::vector<Var> params;
};

std::vector<float> grad_of(const Var& p) {
  if (!p.grad().defined()) return {};
  return p.grad().to_vector<float>();
}

// Bit-identical with 1 and 2 ranks, to rounding (relative to the parameter's largest gradient)
// with more. Neither comparison passes a NaN.
void expect_same_gradients(const std::vector<Var>& got, const std::vector<Var>& want, int world_size,
                           const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    const std::vector<float> a = grad_of(got[i]), b = grad_of(want[i]);
    ASSERT_EQ(a.size(), b.size()) << what << ", parameter " << i;
    ASSERT_FALSE(a.empty()) << what << ": parameter " << i << " has no gradient after reduce()";
    if (world_size <= 2) {
      EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0)
          << what << ": parameter " << i << " differs bit for bit";
      continue;
    }
    float scale = 0;
    for (float v : b) scale = std::max(scale, std::abs(v));
    for (std::size_t k = 0; k < a.size(); ++k)
      EXPECT_LE(std::abs(a[k] - b[k]), 1e-5f * scale + 1e-12f) << what << ": parameter " << i << " element " << k;
  }
}

// The same micro-batches through a synchronous and an overlapped reducer. Before the last
// backward nothing may launch; during it the overlapped reducer must launch buckets (with more
// than one rank and more than one bucket).
void compare_reducers(const std::shared_ptr<Communicator>& world, bool moe, int micro) {
  const int W = world->size(), r = world->rank();
  Replica sync_model(moe), overlap_model(moe), local(moe);
  GradReducer sync_reducer(sync_model.params, world, kBucketBytes, 0.0, false);
  GradReducer overlap_reducer(overlap_model.params, world, kBucketBytes, 0.0, true);
  EXPECT_FALSE(sync_reducer.overlaps());
  EXPECT_EQ(overlap_reducer.overlaps(), W > 1);
  if (W > 1) {
    EXPECT_GT(overlap_reducer.num_buckets(), 4u);
  }
  const std::string what = std::string(moe ? "MoE" : "dense") + " ViT, " + std::to_string(micro) +
                           " micro-batches, " + std::to_string(W) + " ranks";
  for (int step = 0; step < 2; ++step) {  // the second step reuses the buckets
    sync_model.zero_grad();
    overlap_model.zero_grad();
    local.zero_grad();
    for (int m = 0; m < micro; ++m) {
      const Batch b = testing::synthetic_batch(4, static_cast<std::uint64_t>(100 * step + 10 * r + m));
      sync_model.backward(b, 1.0 / micro);
      local.backward(b, 1.0 / micro);
      if (m + 1 == micro) overlap_reducer.arm();
      overlap_model.backward(b, 1.0 / micro);
      if (m + 1 < micro) {
        EXPECT_EQ(overlap_reducer.buckets_in_flight(), 0u) << what << ": launched before the last backward";
      }
    }
    const std::size_t launched_in_backward = overlap_reducer.buckets_in_flight();
    if (W > 1) {
      EXPECT_GT(launched_in_backward, 0u) << what << ": nothing launched during backward";
    }
    sync_reducer.reduce();
    overlap_reducer.reduce();
    EXPECT_EQ(overlap_reducer.buckets_in_flight(), 0u);
    expect_same_gradients(overlap_model.params, sync_model.params, W, what + ", step " + std::to_string(step));
    if (W > 1) {
      // The gradients were reduced: they are no longer this rank's own.
      double moved = 0;
      for (std::size_t i = 0; i < local.params.size(); ++i) {
        const std::vector<float> a = grad_of(overlap_model.params[i]), b = grad_of(local.params[i]);
        for (std::size_t k = 0; k < std::min(a.size(), b.size()); ++k) moved += std::abs(a[k] - b[k]);
      }
      EXPECT_GT(moved, 0.0) << what;
    }
  }
}

TEST_F(OverlapTest, DenseViTMatchesTheSynchronousReducer) { compare_reducers(world, false, 1); }

TEST_F(OverlapTest, DenseViTWithMicroBatchesMatchesTheAccumulatedGradient) { compare_reducers(world, false, 3); }

TEST_F(OverlapTest, MoeViTMatchesTheSynchronousReducer) { compare_reducers(world, true, 2); }

// Seven parameters of 300 floats, two to a bucket: buckets {6, 5}, {4, 3}, {2, 1}, {0}. Nobody
// uses parameter 0, odd ranks skip parameter 5 and rank 2 skips parameter 2: rank 0 launches three
// buckets during backward, rank 2 two, odd ranks none (bucket {6, 5} holds the others back until
// reduce()). Values are small integers: every sum is exact for any number of ranks.
TEST_F(OverlapTest, ParametersWithoutGradientsOnSomeRanks) {
  constexpr int kParams = 7;
  constexpr std::int64_t kSize = 300;
  auto used = [](int j, int q) { return j != 0 && !(q % 2 == 1 && j == 5) && !(q == 2 && j == 2); };
  auto x_value = [](int j, int q, std::int64_t k) { return static_cast<float>((q + 1) * (j + 1) + k % 5); };
  std::vector<Var> params;
  for (int j = 0; j < kParams; ++j) params.emplace_back(Tensor::zeros({kSize}, DType::f32, Device::cpu), true);
  GradReducer reducer(params, world, 2 * kSize * 4, 0.0, true);
  if (W > 1) {
    EXPECT_EQ(reducer.num_buckets(), 4u);
  }
  for (int step = 0; step < 2; ++step) {
    for (Var& p : params) p.zero_grad();
    Var loss;
    for (int j = 0; j < kParams; ++j) {
      if (!used(j, r)) continue;
      std::vector<float> x(kSize);
      for (std::int64_t k = 0; k < kSize; ++k) x[static_cast<std::size_t>(k)] = x_value(j, r, k);
      const Var term = sum_all(params[static_cast<std::size_t>(j)] * Var(Tensor::from_vector(x, {kSize}, Device::cpu)));
      loss = loss.defined() ? loss + term : term;
    }
    reducer.arm();
    loss.backward();
    if (W > 1) {
      const std::size_t want = r % 2 == 1 ? 0 : r == 2 ? 2 : 3;
      EXPECT_EQ(reducer.buckets_in_flight(), want) << "rank " << r;
    }
    reducer.reduce();
    for (int j = 0; j < kParams; ++j) {
      const std::vector<float> g = grad_of(params[static_cast<std::size_t>(j)]);
      if (W == 1 && !used(j, 0)) {  // one rank exchanges nothing, so a missing gradient stays missing
        EXPECT_TRUE(g.empty()) << "parameter " << j;
        continue;
      }
      ASSERT_EQ(g.size(), static_cast<std::size_t>(kSize)) << "parameter " << j;
      for (std::int64_t k = 0; k < kSize; ++k) {
        float want = 0;
        for (int q = 0; q < W; ++q)
          if (used(j, q)) want += x_value(j, q, k);
        want /= static_cast<float>(W);
        EXPECT_EQ(g[static_cast<std::size_t>(k)], want) << "parameter " << j << " element " << k << " step " << step;
      }
    }
  }
}

TEST_F(OverlapTest, ASecondBackwardAfterABucketLaunchedIsAnError) {
  Var p(Tensor::zeros({4}, DType::f32, Device::cpu), true);
  GradReducer reducer({p}, world, 1024, 0.0, true);
  reducer.arm();
  sum_all(p).backward();
  if (W > 1) {  // every rank throws alike: no collective skipped
    EXPECT_THROW(sum_all(p).backward(), Error);
  }
  reducer.reduce();
  EXPECT_EQ(grad_of(p), std::vector<float>(4, 1.0f));
}

TEST_F(OverlapTest, AParameterIsInOneReducerAndRequiresAGradient) {
  Var p(Tensor::zeros({4}, DType::f32, Device::cpu), true);
  GradReducer first({p}, world, 1024, 0.0, true);
  if (W > 1) {  // every rank alike
    EXPECT_THROW(GradReducer({p}, world, 1024, 0.0, true), Error);
    Var frozen(Tensor::zeros({4}, DType::f32, Device::cpu), false);
    EXPECT_THROW(GradReducer({frozen}, world, 1024, 0.0, false), Error);
  }
}

// Warm steps of the overlapped reducer allocate nothing from the system (as test_step_allocations
// asserts for a whole single-rank step): buckets and their views are made once.
TEST_F(OverlapTest, WarmOverlappedStepsAllocateNothingNew) {
  Replica model(false);
  GradReducer reducer(model.params, world, kBucketBytes, 0.0, true);
  const Batch b = testing::synthetic_batch(4, static_cast<std::uint64_t>(r));
  auto step = [&] {
    model.zero_grad();
    reducer.arm();
    model.backward(b, 1.0);
    reducer.reduce();
  };
  for (int i = 0; i < 4; ++i) step();
  const AllocatorStats before = backend_for(Device::cpu).allocator_stats();
  for (int i = 0; i < 4; ++i) step();
  const AllocatorStats after = backend_for(Device::cpu).allocator_stats();
  EXPECT_EQ(after.system_allocs, before.system_allocs);
  EXPECT_EQ(after.bytes_in_use, before.bytes_in_use);
}

// parallel.overlap_grad_reduce through the trainer: the same losses with and without overlap,
// dense with two micro-batches, and MoE with its expert gradients reduced over an
// expert-data-parallel group of two ranks (P = 1 on 2 ranks, P = 2 on 4).
std::vector<double> train(const std::shared_ptr<Communicator>& world, bool moe, bool overlap) {
  const int W = world->size();
  const int ep = W == 4 ? 2 : 1;
  std::vector<ConfigOverride> overrides = {{"parallel.overlap_grad_reduce", overlap ? "true" : "false"}};
  if (!moe) overrides.push_back({"train.micro_batches", "2"});
  const Config cfg = parse_config(moe ? testing::tiny_vit_moe_ini(3, "", ep) : testing::tiny_vit_ini(3),
                                  "test_data_parallel_overlap", overrides);
  EXPECT_EQ(cfg.get_bool("parallel.overlap_grad_reduce"), overlap);
  if (!moe) {
    auto task = make_task(cfg, *world);
    return Trainer(cfg, world, *task, "dense", "").run().losses;
  }
  const ProcessGroups groups = make_process_groups(world, ep);
  TaskOptions options;
  options.moe = true;
  options.expert_parallel = groups.expert_parallel;
  auto task = make_task(cfg, *world, options);
  return Trainer(cfg, groups, *task, "moe", "").run().losses;
}

TEST_F(OverlapTest, TrainerLossesDoNotDependOnOverlap) {
  for (bool moe : {false, true}) {
    const auto off = train(world, moe, false), on = train(world, moe, true);
    ASSERT_EQ(on.size(), 3u);
    ASSERT_EQ(off.size(), 3u);
    for (std::size_t i = 0; i < on.size(); ++i) {
      if (W <= 2) {
        EXPECT_EQ(on[i], off[i]) << (moe ? "MoE" : "dense") << " step " << i + 1;
      } else {
        EXPECT_NEAR(on[i], off[i], 1e-6 * std::abs(off[i])) << (moe ? "MoE" : "dense") << " step " << i + 1;
      }
    }
  }
}

}  // namespace
}  // namespace upcycle
