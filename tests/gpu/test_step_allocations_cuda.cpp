// On the GPU, a warm training step makes no cudaMalloc or cudaFree call (the caching allocator
// serves every tensor) and the host waits for the device only where the step says so: once to read
// the step's [loss, gradient norm^2], and once per MoE layer for the dispatch counts that size the
// expert GEMMs. Both are counted by the CUDA backend (AllocatorStats::system_allocs / system_frees
// and host_waits). Exits 77 (CTest: Skipped) without a usable GPU.
#include <gtest/gtest.h>

#include <cmath>

#include "tiny_vit_step.hpp"

namespace upcycle {
namespace {

void expect_warm_steps(bool moe, std::int64_t waits_per_step) {
  testing::TinyVitTrainer t(moe, Device::cuda);
  std::vector<Batch> batches;
  for (int i = 0; i < 4; ++i) batches.push_back(testing::synthetic_batch(8, static_cast<std::uint64_t>(i)));
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(std::isfinite(t.step(batches[static_cast<std::size_t>(i % 4)])));
  Backend& gpu = backend_for(Device::cuda);
  gpu.synchronize();
  const AllocatorStats before = gpu.allocator_stats();
  constexpr int kSteps = 8;
  for (int i = 0; i < kSteps; ++i) ASSERT_TRUE(std::isfinite(t.step(batches[static_cast<std::size_t>(i % 4)])));
  const AllocatorStats after = gpu.allocator_stats();
  EXPECT_EQ(after.system_allocs, before.system_allocs) << "warm steps called cudaMalloc";
  EXPECT_EQ(after.system_frees, before.system_frees) << "warm steps called cudaFree";
  EXPECT_EQ(after.bytes_in_use, before.bytes_in_use) << "GPU memory in use grew over warm steps";
  EXPECT_EQ(after.host_waits - before.host_waits, kSteps * waits_per_step)
      << "the host waited for the device other than where the step reads its results";
}

TEST(StepAllocationsCuda, WarmDenseStepAllocatesNothingAndWaitsOnce) { expect_warm_steps(false, 1); }
TEST(StepAllocationsCuda, WarmMoeStepWaitsOnlyForTheDispatchCounts) { expect_warm_steps(true, 2); }

}  // namespace
}  // namespace upcycle
