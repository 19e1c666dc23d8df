// The Philox block math of the CUDA random kernels (kernels/philox_blocks_math.hpp) checked on the
// CPU: a simulated launch, one thread per block of four Philox words, must give every element
// exactly once and with the very words the CPU backend reads (Philox4x32::word at offset + w i + t),
// for every offset modulo 4, offsets that wrap past 2^64, one and two words per element, and empty
// and tiny tensors. Also checks that the shared formulas read words like Philox4x32::uniform.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "backend/random_math.hpp"
#include "philox_blocks_math.hpp"
#include "upcycle/core/rng.hpp"

namespace {

using upcycle::Philox4x32;
using upcycle::cuda::PhiloxBlocks;

void check_launch(std::uint64_t seed, std::uint64_t offset, std::int64_t n, std::int64_t words) {
  SCOPED_TRACE(::testing::Message() << "offset " << offset << " n " << n << " words " << words);
  const PhiloxBlocks p = upcycle::cuda::philox_blocks(offset, n, words);
  std::vector<int> seen(static_cast<std::size_t>(n), 0);
  bool last_block_used = false;
  for (std::int64_t k = 0; k < p.blocks; ++k) {
    std::uint32_t w[4], next[4];
    Philox4x32::generate(seed, upcycle::cuda::philox_block_counter(p, k), w);
    Philox4x32::generate(seed, upcycle::cuda::philox_block_counter(p, k + 1), next);
    for (int lane = 0; lane < 4; ++lane) {
      const std::int64_t i = upcycle::cuda::philox_lane_element(p, k, lane);
      if (i < 0) continue;
      ASSERT_LT(i, n);
      ++seen[i];
      if (k == p.blocks - 1) last_block_used = true;
      const std::uint64_t first_word = offset + static_cast<std::uint64_t>(words) * static_cast<std::uint64_t>(i);
      EXPECT_EQ(w[lane], Philox4x32::word(seed, first_word)) << "element " << i;
      if (words == 2) {
        const std::uint32_t second = lane < 3 ? w[lane + 1] : next[0];
        EXPECT_EQ(second, Philox4x32::word(seed, first_word + 1)) << "element " << i;
      }
    }
  }
  for (std::int64_t i = 0; i < n; ++i) EXPECT_EQ(seen[i], 1) << "element " << i;
  if (n > 0) {
    EXPECT_TRUE(last_block_used) << "a launch with a block too many";
  }
}

TEST(CudaPhiloxBlocksMath, EveryElementGetsTheCpuWords) {
  const std::uint64_t max = ~std::uint64_t{0};
  using U = std::uint64_t;
  for (U offset : {U{0}, U{1}, U{2}, U{3}, U{4}, U{5}, U{6}, U{7}, U{1000001}, U{0xFFFFFFFFu}, U{1} << 62,
                   (U{1} << 62) - 1, max, max - 1, max - 2, max - 3, max - 6}) {
    for (std::int64_t n : {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 31, 33, 100}) {
      for (std::int64_t words : {1, 2}) check_launch(0x1234567890ABCDEFull, offset, n, words);
    }
  }
}

TEST(CudaPhiloxBlocksMath, ConcreteLayouts) {
  // uniform from offset 6: words 6..10 -> block 0 (counter 1) lanes 2, 3, block 1 lanes 0..2.
  PhiloxBlocks p = upcycle::cuda::philox_blocks(6, 5, 1);
  EXPECT_EQ(p.first_counter, 1u);
  EXPECT_EQ(p.lead, 2);
  EXPECT_EQ(p.blocks, 2);
  EXPECT_EQ(upcycle::cuda::philox_block_counter(p, 1), 2u);
  EXPECT_EQ(upcycle::cuda::philox_lane_element(p, 0, 1), -1);
  EXPECT_EQ(upcycle::cuda::philox_lane_element(p, 0, 2), 0);
  EXPECT_EQ(upcycle::cuda::philox_lane_element(p, 1, 2), 4);
  EXPECT_EQ(upcycle::cuda::philox_lane_element(p, 1, 3), -1);
  // normal from offset 1, 3 elements: words (1, 2), (3, 4), (5, 6); element 1 straddles blocks.
  p = upcycle::cuda::philox_blocks(1, 3, 2);
  EXPECT_EQ(p.blocks, 2);
  EXPECT_EQ(upcycle::cuda::philox_lane_element(p, 0, 1), 0);
  EXPECT_EQ(upcycle::cuda::philox_lane_element(p, 0, 2), -1);
  EXPECT_EQ(upcycle::cuda::philox_lane_element(p, 0, 3), 1);
  EXPECT_EQ(upcycle::cuda::philox_lane_element(p, 1, 1), 2);
  EXPECT_EQ(upcycle::cuda::philox_lane_element(p, 1, 0), -1);  // element 1's second word
  // Empty: no block.
  EXPECT_EQ(upcycle::cuda::philox_blocks(3, 0, 2).blocks, 0);
  // Wrap: offset 2^64 - 1 -> counter 2^62 - 1 lane 3, then counter 0.
  p = upcycle::cuda::philox_blocks(~std::uint64_t{0}, 2, 1);
  EXPECT_EQ(upcycle::cuda::philox_block_counter(p, 0), (std::uint64_t{1} << 62) - 1);
  EXPECT_EQ(upcycle::cuda::philox_block_counter(p, 1), 0u);
}

TEST(CudaPhiloxBlocksMath, FormulasReadWordsLikeTheCpu) {
  for (std::uint64_t i = 0; i < 4096; ++i) {
    const std::uint32_t w = Philox4x32::word(99, i);
    EXPECT_EQ(upcycle::random_math::unit_float(w), Philox4x32::uniform(99, i));
    EXPECT_EQ(upcycle::random_math::dropout_keeps(w, 0.25f), Philox4x32::uniform(99, i) >= 0.25f);
  }
  EXPECT_EQ(upcycle::random_math::unit_float(0u), 0.0f);
  EXPECT_EQ(upcycle::random_math::unit_float(0xFFFFFFFFu), 16777215.0f / 16777216.0f);
  // u = 0.5: Box-Muller with u1 = 0.5, u2 = 0 gives sqrt(2 ln 2).
  EXPECT_DOUBLE_EQ(upcycle::random_math::normal_value(0x80000000u, 0u, 0.0, 1.0), std::sqrt(2.0 * std::log(2.0)));
  EXPECT_DOUBLE_EQ(upcycle::random_math::uniform_value(0x80000000u, -1.0, 3.0), 1.0);
}

}  // namespace
