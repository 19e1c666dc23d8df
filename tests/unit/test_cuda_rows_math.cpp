// The host-testable math of the CUDA row kernels and multi-tensor AdamW (kernels/rows_math.hpp),
// checked on the CPU against naive references: row groups visit every row once, the column-sum
// chunks partition the rows, the AdamW block table covers every element of every tensor exactly
// once, and the scalar weights have the CPU twins' values.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "rows_math.hpp"

namespace upcycle::cuda {
namespace {

TEST(CudaRowsMath, RowGeometryConcreteValues) {
  RowGeometry g = row_geometry(10, 1);
  EXPECT_TRUE(g.warp_per_row);
  EXPECT_EQ(g.threads, 256);
  EXPECT_EQ(g.blocks, 2u);

  g = row_geometry(3, 1024);
  EXPECT_TRUE(g.warp_per_row);
  EXPECT_EQ(g.blocks, 1u);

  g = row_geometry(3, 1025);
  EXPECT_FALSE(g.warp_per_row);
  EXPECT_EQ(g.threads, 160);  // ceil(1025 / 8) = 129 -> 160
  EXPECT_EQ(g.blocks, 3u);

  EXPECT_EQ(row_geometry(7, 2048).threads, 256);
  EXPECT_EQ(row_geometry(7, 50000).threads, 1024);
  EXPECT_EQ(row_geometry(std::int64_t{1} << 40, 1).blocks, static_cast<unsigned>(kMaxRowBlocks));
  EXPECT_EQ(row_geometry(std::int64_t{1} << 40, 4096).blocks, static_cast<unsigned>(kMaxRowBlocks));
}

TEST(CudaRowsMath, BlockRowThreadsAreWholeWarpsInRange) {
  for (std::int64_t cols = 1025; cols < 20000; cols += 37) {
    const int t = block_row_threads(cols);
    EXPECT_EQ(t % 32, 0) << cols;
    EXPECT_GE(t, 128) << cols;
    EXPECT_LE(t, 1024) << cols;
    // About 8 elements per thread unless clamped.
    if (t > 128 && t < 1024) {
      EXPECT_GE(t * 8, cols) << cols;
      EXPECT_LT((t - 32) * 8, cols) << cols;
    }
  }
}

// Simulates every group of a launch and counts the rows it visits.
void expect_rows_covered_once(std::int64_t rows, std::int64_t cols) {
  const RowGeometry g = row_geometry(rows, cols);
  ASSERT_EQ(g.threads % 32, 0);
  const int warps_per_block = g.warp_per_row ? g.threads / 32 : 0;
  const int groups_per_block = g.warp_per_row ? warps_per_block : 1;
  std::vector<int> seen(static_cast<std::size_t>(rows), 0);
  const std::int64_t stride = group_row_stride(g.blocks, warps_per_block);
  for (std::int64_t b = 0; b < g.blocks; ++b)
    for (int w = 0; w < groups_per_block; ++w)
      for (std::int64_t r = group_first_row(b, w, warps_per_block); r < rows; r += stride)
        ++seen[static_cast<std::size_t>(r)];
  for (std::int64_t r = 0; r < rows; ++r)
    ASSERT_EQ(seen[static_cast<std::size_t>(r)], 1) << "row " << r << " of " << rows;
}

TEST(CudaRowsMath, RowGroupsVisitEveryRowOnce) {
  for (std::int64_t rows : {1, 2, 7, 8, 9, 100, 1000}) {
    expect_rows_covered_once(rows, 1);
    expect_rows_covered_once(rows, 33);
    expect_rows_covered_once(rows, 5000);
  }
  // More rows than one grid covers: the groups loop.
  expect_rows_covered_once(kMaxRowBlocks * kWarpRowsPerBlock + 13, 64);
  expect_rows_covered_once(kMaxRowBlocks + 5, 4096);
}

TEST(CudaRowsMath, SmoothingWeights) {
  SmoothingWeights w = smoothing_weights(0.1, 4);
  EXPECT_DOUBLE_EQ(w.target, 0.9);
  EXPECT_DOUBLE_EQ(w.uniform, 0.025);
  // q sums to 1 for any eps and C.
  for (double eps : {0.0, 0.05, 0.3, 1.0})
    for (std::int64_t c : {1, 3, 50000}) {
      w = smoothing_weights(eps, c);
      EXPECT_NEAR(w.target + static_cast<double>(c) * w.uniform, 1.0, 1e-12);
    }
  w = smoothing_weights(0.0, 10);
  EXPECT_EQ(w.target, 1.0);
  EXPECT_EQ(w.uniform, 0.0);  // the kernel skips the logit sum exactly when this is 0

  const SmoothingGradWeights gw = smoothing_grad_weights(0.1, 2.0, 4);
  EXPECT_DOUBLE_EQ(gw.scale, 2.0);
  EXPECT_DOUBLE_EQ(gw.target, 1.8);
  EXPECT_DOUBLE_EQ(gw.uniform, 0.05);
}

TEST(CudaRowsMath, ValidTarget) {
  EXPECT_TRUE(valid_target(0, 5, -100));
  EXPECT_TRUE(valid_target(4, 5, -100));
  EXPECT_TRUE(valid_target(-100, 5, -100));
  EXPECT_FALSE(valid_target(5, 5, -100));
  EXPECT_FALSE(valid_target(-1, 5, -100));
  EXPECT_TRUE(valid_target(7, 5, 7));  // ignore_index may lie outside the classes
  EXPECT_FALSE(valid_target(std::int64_t{1} << 40, 5, -100));
}

TEST(CudaRowsMath, ColumnChunksConcreteValues) {
  EXPECT_EQ(column_chunks(0, 768), 0);
  EXPECT_EQ(column_chunks(5, 768), 5);
  EXPECT_EQ(column_chunks(16384, 768), 352);  // ceil(270336 / 768)
  EXPECT_EQ(column_chunks(1000000, 1), kMaxColumnChunks);
  EXPECT_EQ(column_chunks(1000, 50000), 6);
  EXPECT_EQ(column_chunks(1, 1 << 20), 1);
}

TEST(CudaRowsMath, ColumnChunksPartitionTheRows) {
  for (std::int64_t rows : {1, 2, 3, 31, 32, 33, 1000, 65537})
    for (std::int64_t dim : {1, 7, 768, 4096, 50000}) {
      const std::int64_t chunks = column_chunks(rows, dim);
      ASSERT_GE(chunks, 1);
      ASSERT_LE(chunks, rows);
      EXPECT_EQ(chunk_begin(0, rows, chunks), 0);
      EXPECT_EQ(chunk_begin(chunks, rows, chunks), rows);
      for (std::int64_t c = 0; c < chunks; ++c)
        ASSERT_LT(chunk_begin(c, rows, chunks), chunk_begin(c + 1, rows, chunks)) << rows << " " << dim << " " << c;
    }
}

TEST(CudaRowsMath, AdamWScalars) {
  const AdamWScalars s1 = adamw_scalars(1e-3, 0.9, 0.999, 1);
  EXPECT_NEAR(s1.step_size, 1e-2, 1e-15);  // lr / (1 - 0.9)
  EXPECT_NEAR(s1.inv_sqrt_c2, 1.0 / std::sqrt(0.001), 1e-9);
  const AdamWScalars s2 = adamw_scalars(1e-3, 0.9, 0.999, 2);
  EXPECT_NEAR(s2.step_size, 1e-3 / 0.19, 1e-15);
  EXPECT_NEAR(s2.inv_sqrt_c2, 1.0 / std::sqrt(1.0 - 0.999 * 0.999), 1e-9);
  EXPECT_DOUBLE_EQ(adamw_decay(0.01, 0.1), 0.999);
  EXPECT_EQ(adamw_decay(0.01, 0.0), 1.0);
}

TEST(CudaRowsMath, FindSegment) {
  const std::int64_t starts[] = {0, 1, 2, 4, 10};
  EXPECT_EQ(find_segment(starts, 4, 0), 0);
  EXPECT_EQ(find_segment(starts, 4, 1), 1);
  EXPECT_EQ(find_segment(starts, 4, 2), 2);
  EXPECT_EQ(find_segment(starts, 4, 3), 2);
  EXPECT_EQ(find_segment(starts, 4, 4), 3);
  EXPECT_EQ(find_segment(starts, 4, 9), 3);
  const std::int64_t one[] = {0, 3};
  EXPECT_EQ(find_segment(one, 1, 2), 0);
}

TEST(CudaRowsMath, AdamWPlanConcrete) {
  const auto plans = plan_adamw({0, 1, 8192, 8193});
  ASSERT_EQ(plans.size(), 1u);
  const AdamWLaunchPlan& p = plans[0];
  ASSERT_EQ(p.segments.size(), 3u);  // the empty tensor gets none
  EXPECT_EQ(p.segments[0].tensor, 1u);
  EXPECT_EQ(p.segments[1].tensor, 2u);
  EXPECT_EQ(p.segments[2].tensor, 3u);
  EXPECT_EQ(p.block_start, (std::vector<std::int64_t>{0, 1, 2, 4}));
  EXPECT_EQ(p.blocks(), 4);
  const ElementRange last = segment_slice(3, 2, 8193, kAdamWBlockElems);
  EXPECT_EQ(last.begin, 8192);
  EXPECT_EQ(last.end, 8193);

  // 100 small tensors: ceil(100 / 48) launches.
  EXPECT_EQ(plan_adamw(std::vector<std::int64_t>(100, 3)).size(), 3u);
  EXPECT_TRUE(plan_adamw({}).empty());
  EXPECT_TRUE(plan_adamw({0, 0}).empty());
}

// Runs every block of every launch of the plan the way the kernel does and counts the updates of
// each element; also checks the limits of each launch.
void expect_each_element_once(const std::vector<std::int64_t>& sizes, std::int64_t block_elems, int max_segments,
                              std::int64_t max_blocks) {
  std::vector<std::vector<int>> hits(sizes.size());
  for (std::size_t t = 0; t < sizes.size(); ++t) hits[t].assign(static_cast<std::size_t>(sizes[t]), 0);
  const auto plans = plan_adamw(sizes, block_elems, max_segments, max_blocks);
  for (const AdamWLaunchPlan& p : plans) {
    const int count = static_cast<int>(p.segments.size());
    ASSERT_GE(count, 1);
    ASSERT_LE(count, max_segments);
    ASSERT_EQ(p.block_start.size(), p.segments.size() + 1);
    ASSERT_EQ(p.block_start[0], 0);
    ASSERT_LE(p.blocks(), max_blocks);
    for (int s = 0; s < count; ++s) {
      ASSERT_LT(p.block_start[s], p.block_start[s + 1]);
      ASSERT_GT(p.segments[s].size, 0);
    }
    for (std::int64_t b = 0; b < p.blocks(); ++b) {
      const int s = find_segment(p.block_start.data(), count, b);
      ASSERT_TRUE(p.block_start[s] <= b && b < p.block_start[s + 1]);
      const AdamWSegmentPlan& sp = p.segments[static_cast<std::size_t>(s)];
      const ElementRange r = segment_slice(b, p.block_start[s], sp.size, block_elems);
      ASSERT_LT(r.begin, r.end);
      ASSERT_LE(r.end - r.begin, block_elems);
      for (std::int64_t i = r.begin; i < r.end; ++i) {
        const std::int64_t e = sp.begin + i;
        ASSERT_LT(e, sizes[sp.tensor]);
        ++hits[sp.tensor][static_cast<std::size_t>(e)];
      }
    }
  }
  for (std::size_t t = 0; t < sizes.size(); ++t)
    for (std::size_t i = 0; i < hits[t].size(); ++i)
      ASSERT_EQ(hits[t][i], 1) << "tensor " << t << " (size " << sizes[t] << ") element " << i;
}

TEST(CudaRowsMath, AdamWPlanCoversEveryElementOnce) {
  std::mt19937_64 rng(42);
  for (int trial = 0; trial < 40; ++trial) {
    const int n = static_cast<int>(rng() % 120);
    std::vector<std::int64_t> sizes;
    for (int i = 0; i < n; ++i) {
      switch (rng() % 4) {
        case 0: sizes.push_back(0); break;
        case 1: sizes.push_back(1); break;
        case 2: sizes.push_back(static_cast<std::int64_t>(rng() % 100)); break;
        default: sizes.push_back(static_cast<std::int64_t>(rng() % 40000)); break;
      }
    }
    expect_each_element_once(sizes, kAdamWBlockElems, kAdamWMaxSegments, kAdamWMaxBlocks);
    // Tiny limits: tensors split into segments, launches closed by the block limit.
    expect_each_element_once(sizes, 7, 3, 5);
  }
  // One element per block, one block and one segment per launch.
  expect_each_element_once({0, 1, 3, 0, 2, 5}, 1, 1, 1);
}

}  // namespace
}  // namespace upcycle::cuda
