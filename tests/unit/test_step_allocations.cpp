// After warm-up a training step allocates nothing new from the system: its tensor sizes repeat,
// so the backend's caching allocator serves them all (the allocator's counters, AllocatorStats).
// The GPU twin (tests/gpu/test_step_allocations_cuda.cpp) also counts the host's waits.
#include <gtest/gtest.h>

#include <cmath>

#include "tiny_vit_step.hpp"

namespace upcycle {
namespace {

struct Counts {
  std::int64_t allocs, frees, in_use;
};

Counts counts() {
  const AllocatorStats s = backend_for(Device::cpu).allocator_stats();
  return {s.system_allocs, s.system_frees, s.bytes_in_use};
}

void expect_warm_steps_allocate_nothing(bool moe) {
  testing::TinyVitTrainer t(moe, Device::cpu);
  std::vector<Batch> batches;
  for (int i = 0; i < 4; ++i) batches.push_back(testing::synthetic_batch(8, static_cast<std::uint64_t>(i)));
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(std::isfinite(t.step(batches[static_cast<std::size_t>(i % 4)])));
  const Counts before = counts();
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(std::isfinite(t.step(batches[static_cast<std::size_t>(i % 4)])));
  const Counts after = counts();
  EXPECT_EQ(after.allocs, before.allocs) << "warm steps allocated from the system";
  EXPECT_EQ(after.frees, before.frees) << "warm steps gave memory back to the system";
  EXPECT_EQ(after.in_use, before.in_use) << "memory in use grew over warm steps (a leak)";
}

TEST(StepAllocations, WarmDenseStepsAllocateNothingNew) { expect_warm_steps_allocate_nothing(false); }

// Expert loads change from step to step; the cache serves a request from any block of its size
// class up to twice it, so after warm-up the MoE step also reuses the cache.
TEST(StepAllocations, WarmMoeStepsAllocateNothingNew) { expect_warm_steps_allocate_nothing(true); }

// The counters do count: a new size class must reach the system.
TEST(StepAllocations, CountersSeeAFreshAllocation) {
  const Counts before = counts();
  { Tensor t = Tensor::empty({(std::int64_t{1} << 24) + 12345}, DType::f32, Device::cpu); }
  const Counts after = counts();
  EXPECT_EQ(after.allocs, before.allocs + 1);
  EXPECT_EQ(after.in_use, before.in_use);
}

}  // namespace
}  // namespace upcycle
