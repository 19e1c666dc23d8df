// Data parallelism: the same global batches trained on 1 rank, and split over 2 and 4 ranks, give
// the same losses step by step. All group sizes run inside one mpirun: the first s ranks of the
// world form the group of size s.
#include <gtest/gtest.h>

#include <cmath>

#include "tiny_configs.hpp"
#include "upcycle/dist/world.hpp"
#include "upcycle/train/trainer.hpp"

using namespace upcycle;

namespace {
std::vector<double> train_on_first_ranks(const std::shared_ptr<Communicator>& world, int group_size, int steps) {
  const bool member = world->rank() < group_size;
  auto group = world->split(member ? 0 : 1, world->rank());
  if (!member) return {};
  const Config cfg = parse_config(upcycle::testing::tiny_vit_ini(steps), "test_data_parallel");
  auto task = make_task(cfg, *group);
  Trainer trainer(cfg, group, *task, "dense", "");
  return trainer.run().losses;
}
}  // namespace

TEST(DataParallel, LossesDoNotDependOnTheNumberOfRanks) {
  auto world = make_world_communicator();
  const int steps = 5;
  const auto reference = train_on_first_ranks(world, 1, steps);
  for (int size : {2, 4}) {
    if (size > world->size()) continue;
    const auto losses = train_on_first_ranks(world, size, steps);
    if (world->rank() != 0) continue;
    ASSERT_EQ(losses.size(), reference.size());
    // Only the order of float sums differs (per-rank means, then the all-reduce): after 5 AdamW
    // steps the losses agree to a relative 1e-5.
    for (std::size_t i = 0; i < losses.size(); ++i)
      EXPECT_NEAR(losses[i], reference[i], 1e-5 * std::abs(reference[i]))
          << "step " << i + 1 << " with " << size << " ranks";
  }
  if (world->rank() == 0) {
    ASSERT_EQ(reference.size(), static_cast<std::size_t>(steps));
    // A freshly initialised classifier predicts nearly uniformly over 10 classes: loss ~ ln 10.
    EXPECT_NEAR(reference.front(), std::log(10.0), 0.1);
  }
}
