// The launch geometry of the CUDA index kernels (kernels/index_math.hpp, kernels/launch_geometry.hpp)
// checked on the CPU: a simulated launch of the row tiles must visit every (row, column) element
// exactly once, for short, odd, long and empty rows, and the index check must match the CPU's.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "index_math.hpp"

namespace {

using upcycle::cuda::RowTile;

TEST(CudaIndexMath, RowTileShapes) {
  EXPECT_EQ(upcycle::cuda::row_tile(0).tx, 1);
  EXPECT_EQ(upcycle::cuda::row_tile(0).ty, 256);
  EXPECT_EQ(upcycle::cuda::row_tile(1).tx, 1);
  EXPECT_EQ(upcycle::cuda::row_tile(2).tx, 2);
  EXPECT_EQ(upcycle::cuda::row_tile(3).tx, 4);
  EXPECT_EQ(upcycle::cuda::row_tile(3).ty, 64);
  EXPECT_EQ(upcycle::cuda::row_tile(33).tx, 64);
  EXPECT_EQ(upcycle::cuda::row_tile(256).tx, 256);
  EXPECT_EQ(upcycle::cuda::row_tile(256).ty, 1);
  EXPECT_EQ(upcycle::cuda::row_tile(50000).tx, 256);
  for (std::int64_t c : {0, 1, 5, 31, 32, 100, 257, 4096})
    EXPECT_EQ(upcycle::cuda::row_tile(c).tx * upcycle::cuda::row_tile(c).ty, upcycle::cuda::kBlockThreads);
}

TEST(CudaIndexMath, RowTileBlocks) {
  const RowTile t = upcycle::cuda::row_tile(3);  // 64 rows per block
  EXPECT_EQ(upcycle::cuda::row_tile_blocks(0, t), 1u);
  EXPECT_EQ(upcycle::cuda::row_tile_blocks(1, t), 1u);
  EXPECT_EQ(upcycle::cuda::row_tile_blocks(64, t), 1u);
  EXPECT_EQ(upcycle::cuda::row_tile_blocks(65, t), 2u);
  EXPECT_EQ(upcycle::cuda::row_tile_blocks(std::int64_t{1} << 40, t),
            static_cast<unsigned>(upcycle::cuda::kMaxGridBlocks));
}

// Runs the kernels' loops on the host: rows i = blockIdx.x * ty + threadIdx.y, stepping by
// gridDim.x * ty; columns j = threadIdx.x, stepping by tx.
std::vector<int> simulate(std::int64_t rows, std::int64_t cols, unsigned max_blocks) {
  const RowTile t = upcycle::cuda::row_tile(cols);
  unsigned blocks = upcycle::cuda::row_tile_blocks(rows, t);
  if (blocks > max_blocks) blocks = max_blocks;
  std::vector<int> visits(static_cast<std::size_t>(rows * cols), 0);
  for (unsigned b = 0; b < blocks; ++b)
    for (int y = 0; y < t.ty; ++y)
      for (int x = 0; x < t.tx; ++x)
        for (std::int64_t i = static_cast<std::int64_t>(b) * t.ty + y; i < rows;
             i += static_cast<std::int64_t>(blocks) * t.ty)
          for (std::int64_t j = x; j < cols; j += t.tx) ++visits[static_cast<std::size_t>(i * cols + j)];
  return visits;
}

TEST(CudaIndexMath, TilesVisitEveryElementOnce) {
  const std::int64_t shapes[][2] = {{1, 1}, {7, 1}, {300, 3}, {5, 33}, {3, 1000}, {1, 50000}, {0, 8}, {9, 0}};
  for (const auto& s : shapes)
    for (unsigned cap : {1u, 3u, 1000000u}) {
      const auto v = simulate(s[0], s[1], cap);
      for (std::size_t e = 0; e < v.size(); ++e)
        ASSERT_EQ(v[e], 1) << "rows=" << s[0] << " cols=" << s[1] << " cap=" << cap << " element " << e;
    }
}

TEST(CudaIndexMath, IndexInRange) {
  EXPECT_TRUE(upcycle::cuda::index_in_range(0, 1));
  EXPECT_FALSE(upcycle::cuda::index_in_range(1, 1));
  EXPECT_FALSE(upcycle::cuda::index_in_range(-1, 5));
  EXPECT_FALSE(upcycle::cuda::index_in_range(0, 0));
  EXPECT_TRUE(upcycle::cuda::index_in_range(std::int32_t{4}, 5));
  EXPECT_FALSE(upcycle::cuda::index_in_range(std::int32_t{-2147483647 - 1}, 5));
  EXPECT_TRUE(upcycle::cuda::index_in_range(std::int64_t{3000000000}, std::int64_t{3000000001}));
  EXPECT_FALSE(upcycle::cuda::index_in_range(std::int64_t{3000000001}, std::int64_t{3000000001}));
}

TEST(CudaIndexMath, LaunchGeometry) {
  EXPECT_EQ(upcycle::cuda::grid_blocks(0), 1u);
  EXPECT_EQ(upcycle::cuda::grid_blocks(256), 1u);
  EXPECT_EQ(upcycle::cuda::grid_blocks(257), 2u);
  EXPECT_EQ(upcycle::cuda::grid_blocks(std::int64_t{1} << 40), static_cast<unsigned>(upcycle::cuda::kMaxGridBlocks));
  EXPECT_EQ(upcycle::cuda::row_block_threads(1), 32);
  EXPECT_EQ(upcycle::cuda::row_block_threads(33), 64);
  EXPECT_EQ(upcycle::cuda::row_block_threads(50000), 1024);
}

}  // namespace
