// The CUDA cluster_sums (kernels/cluster_math.hpp: the work of its two kernels) run on the CPU:
// every task of a launch, in grid-stride order with a capped grid, then every element of the
// reduction. The tasks must cover each (chunk, column) once, the chunks must tile the rows without
// overflow, and the result must be CpuBackend::cluster_sums bit for bit (the backend contract: the
// same bits on every device), including with a cluster index out of range, which the scalar
// column reports.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "cluster_math.hpp"
#include "launch_geometry.hpp"
#include "upcycle/backend/backend.hpp"

namespace upcycle {
namespace {

TEST(CudaClusterMath, TasksCoverEveryChunkColumnOnce) {
  for (std::int64_t chunks : {1, 3, 64})
    for (std::int64_t dim : {1, 7, 64}) {
      std::vector<int> seen(static_cast<std::size_t>(chunks * (dim + 1)), 0);
      for (std::int64_t task = 0; task < cuda::cluster_tasks(chunks, dim); ++task) {
        const cuda::ClusterTask t = cuda::cluster_task(task, dim);
        ASSERT_GE(t.chunk, 0);
        ASSERT_LT(t.chunk, chunks);
        ASSERT_GE(t.column, 0);
        ASSERT_LE(t.column, dim);
        ++seen[static_cast<std::size_t>(t.chunk * (dim + 1) + t.column)];
        // Chunk-major: consecutive tasks are consecutive columns of one chunk.
        if (t.column < dim) {
          EXPECT_EQ(cuda::cluster_task(task + 1, dim).column, t.column + 1);
        }
      }
      for (int s : seen) EXPECT_EQ(s, 1);
    }
}

TEST(CudaClusterMath, ChunksTileTheRowsWithoutOverflow) {
  const std::int64_t big = std::numeric_limits<std::int64_t>::max() / 2;
  for (std::int64_t rows : {1, 7, 1000, 4097})
    for (std::int64_t chunk_rows : std::vector<std::int64_t>{1, 5, 1024, rows, rows + 3, big}) {
      const std::int64_t chunks = (rows - 1) / chunk_rows + 1;
      std::int64_t next = 0;
      for (std::int64_t c = 0; c < chunks; ++c) {
        EXPECT_EQ(cuda::cluster_chunk_begin(c, chunk_rows), next);
        const std::int64_t end = cuda::cluster_chunk_end(c, chunk_rows, rows);
        EXPECT_GT(end, next);
        EXPECT_LE(end - next, chunk_rows);
        next = end;
      }
      EXPECT_EQ(next, rows) << rows << " rows in chunks of " << chunk_rows;
    }
}

struct Launch {
  std::vector<double> out;
  bool reported = false;  // the error flag a kernel would have set
};

// Both kernels as the GPU runs them: grid-stride loops over a grid of at most `max_blocks` blocks.
template <class T>
Launch simulate(const std::vector<T>& x, const std::vector<T>& score, const std::vector<std::int64_t>& a,
                const std::vector<std::int64_t>& prev, std::int64_t rows, std::int64_t dim, std::int64_t clusters,
                std::int64_t chunk_rows, unsigned max_blocks) {
  const std::int64_t chunks = (rows - 1) / chunk_rows + 1, stride = clusters * dim + clusters + 2;
  std::vector<double> partial(static_cast<std::size_t>(chunks * stride), -7.0);  // garbage, as a workspace
  Launch l;
  l.out.assign(static_cast<std::size_t>(stride), -7.0);
  const std::int64_t tasks = cuda::cluster_tasks(chunks, dim);
  std::int64_t threads =
      static_cast<std::int64_t>(std::min(cuda::grid_blocks(tasks), max_blocks)) * cuda::kBlockThreads;
  for (std::int64_t first = 0; first < threads; ++first)
    for (std::int64_t task = first; task < tasks; task += threads)
      if (!cuda::cluster_partial_task(task, x.data(), score.data(), a.data(), prev.data(), rows, dim, clusters,
                                      chunk_rows, partial.data()))
        l.reported = true;
  threads = static_cast<std::int64_t>(std::min(cuda::grid_blocks(stride), max_blocks)) * cuda::kBlockThreads;
  for (std::int64_t first = 0; first < threads; ++first)
    for (std::int64_t i = first; i < stride; i += threads)
      l.out[static_cast<std::size_t>(i)] = cuda::cluster_reduce_element(i, partial.data(), chunks, stride);
  return l;
}

template <class T>
void expect_same_bits_as_the_cpu(std::int64_t rows, std::int64_t dim, std::int64_t clusters, std::int64_t chunk_rows,
                                 std::uint64_t seed) {
  SCOPED_TRACE("rows " + std::to_string(rows) + " dim " + std::to_string(dim) + " K " + std::to_string(clusters) +
               " chunk_rows " + std::to_string(chunk_rows));
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> g(0.3, 3.0);
  std::uniform_int_distribution<std::int64_t> pick(0, clusters - 1), pick_prev(-1, clusters - 1);
  std::vector<T> x(static_cast<std::size_t>(rows * dim)), score(static_cast<std::size_t>(rows));
  std::vector<std::int64_t> a(static_cast<std::size_t>(rows)), prev(static_cast<std::size_t>(rows));
  for (T& v : x) v = static_cast<T>(g(rng));
  for (T& v : score) v = static_cast<T>(g(rng));
  for (std::size_t t = 0; t < a.size(); ++t) {
    a[t] = pick(rng);
    prev[t] = t % 3 == 0 ? a[t] : pick_prev(rng);
  }
  Tensor out = Tensor::empty({clusters * dim + clusters + 2}, DType::f64, Device::cpu);
  backend_for(Device::cpu)
      .cluster_sums(Tensor::from_vector(x, {rows, dim}, Device::cpu), Tensor::from_vector(score, {rows}, Device::cpu),
                    Tensor::from_vector(a, {rows}, Device::cpu), Tensor::from_vector(prev, {rows}, Device::cpu),
                    clusters, chunk_rows, out);
  const std::vector<double> ref = out.to_vector<double>();
  for (unsigned max_blocks : {1u, 3u, 1000000u}) {
    const Launch l = simulate(x, score, a, prev, rows, dim, clusters, chunk_rows, max_blocks);
    EXPECT_FALSE(l.reported);
    ASSERT_EQ(l.out.size(), ref.size());
    for (std::size_t i = 0; i < ref.size(); ++i)
      ASSERT_EQ(std::memcmp(&l.out[i], &ref[i], sizeof(double)), 0)
          << "element " << i << ": simulated " << l.out[i] << ", CPU " << ref[i] << " (grid of " << max_blocks << ")";
  }
}

TEST(CudaClusterMath, SimulatedKernelsGiveTheCpuBits) {
  for (std::int64_t chunk_rows : {1, 7, 1024, 5000}) {
    expect_same_bits_as_the_cpu<double>(4097, 5, 6, chunk_rows, 1);
    expect_same_bits_as_the_cpu<float>(4097, 5, 6, chunk_rows, 2);
  }
  expect_same_bits_as_the_cpu<double>(1, 1, 1, 1, 3);
  expect_same_bits_as_the_cpu<double>(300, 33, 40, 64, 4);
}

TEST(CudaClusterMath, AClusterOutOfRangeIsReportedAndSkipped) {
  const std::int64_t rows = 10, dim = 2, clusters = 3;
  std::vector<double> x(rows * dim, 1.0), score(rows, 0.5);
  std::vector<std::int64_t> a(rows, 1), prev(rows, 1);
  a[7] = 3;
  const Launch bad = simulate(x, score, a, prev, rows, dim, clusters, 4, 1000000u);
  EXPECT_TRUE(bad.reported);
  // The other rows are still summed: 9 in cluster 1 (row 7 skipped), score over all 10 rows.
  EXPECT_EQ(bad.out[static_cast<std::size_t>(1 * dim)], 9.0);
  EXPECT_EQ(bad.out[static_cast<std::size_t>(clusters * dim + 1)], 9.0);
  EXPECT_EQ(bad.out[static_cast<std::size_t>(clusters * dim + clusters)], 5.0);
  EXPECT_EQ(bad.out[static_cast<std::size_t>(clusters * dim + clusters + 1)], 1.0);
  a[7] = -1;
  EXPECT_TRUE(simulate(x, score, a, prev, rows, dim, clusters, 4, 1000000u).reported);
}

}  // namespace
}  // namespace upcycle
