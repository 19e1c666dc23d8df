#pragma once
// The host-testable math of the row kernels (softmax.cu, cross_entropy.cu, norm.cu) and of the
// multi-tensor AdamW (adamw.cu): launch geometry, the cross-entropy target weights, the row chunks
// of the deterministic column sums and the AdamW block table. Plain C++ (no CUDA headers) so that
// tests/unit/test_cuda_rows_math.cpp checks it on the CPU; the UPCYCLE_HD functions are the ones
// the kernels call, the others run on the host before a launch.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "upcycle/core/host_device.hpp"

namespace upcycle::cuda {

// ---------------------------------------------------------------------------------------------
// Row geometry. Short rows get one warp each (8 rows per 256-thread block): a block per row would
// leave most of its threads idle and pay block-wide barriers for nothing. Longer rows get one
// block each, about 8 elements per thread, reduced through shared memory.

constexpr int kRowWarp = 32;
constexpr std::int64_t kWarpRowMaxCols = 1024;  // at most 32 elements per lane
constexpr int kWarpRowsPerBlock = 8;
// Row kernels loop over rows (row += rows per grid), so the grid need not cover every row; this
// cap keeps the grid far below CUDA's limit whatever the row count.
constexpr std::int64_t kMaxRowBlocks = 65535;

struct RowGeometry {
  bool warp_per_row = true;
  int threads = kRowWarp * kWarpRowsPerBlock;  // a multiple of 32: every warp is full
  unsigned blocks = 1;
};

// Threads of a block that owns one row of `cols` elements: ceil(cols / 8) rounded up to a whole
// warp, between 128 and 1024.
UPCYCLE_HD inline int block_row_threads(std::int64_t cols) {
  std::int64_t t = (cols + 8 * kRowWarp - 1) / (8 * kRowWarp) * kRowWarp;
  if (t < 128) t = 128;
  if (t > 1024) t = 1024;
  return static_cast<int>(t);
}

// Geometry for `rows` rows of `cols` elements (callers launch nothing when rows * cols == 0).
UPCYCLE_HD inline RowGeometry row_geometry(std::int64_t rows, std::int64_t cols) {
  RowGeometry g;
  g.warp_per_row = cols <= kWarpRowMaxCols;
  std::int64_t blocks;
  if (g.warp_per_row) {
    g.threads = kRowWarp * kWarpRowsPerBlock;
    blocks = (rows + kWarpRowsPerBlock - 1) / kWarpRowsPerBlock;
  } else {
    g.threads = block_row_threads(cols);
    blocks = rows;
  }
  if (blocks < 1) blocks = 1;
  if (blocks > kMaxRowBlocks) blocks = kMaxRowBlocks;
  g.blocks = static_cast<unsigned>(blocks);
  return g;
}

// The first row of a row group and the distance to its next row. A group is one warp (warp
// `warp` of block `block`, blocks of `warps_per_block` warps) or, with warps_per_block == 0, the
// whole block.
UPCYCLE_HD inline std::int64_t group_first_row(std::int64_t block, int warp, int warps_per_block) {
  return warps_per_block == 0 ? block : block * warps_per_block + warp;
}
UPCYCLE_HD inline std::int64_t group_row_stride(std::int64_t blocks, int warps_per_block) {
  return warps_per_block == 0 ? blocks : blocks * warps_per_block;
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy with label smoothing eps over C classes: the target distribution is
// q = (1 - eps) onehot(t) + eps / C. Computed in double on the host exactly as the CPU twin
// (cross_entropy_typed / cross_entropy_backward_typed in src/backend/cpu/cpu_rows.cpp).

struct SmoothingWeights {
  double target = 1.0;   // weight of the target class's one-hot term
  double uniform = 0.0;  // weight of every class (eps / C)
};
UPCYCLE_HD inline SmoothingWeights smoothing_weights(double smoothing, std::int64_t classes) {
  SmoothingWeights w;
  w.target = 1.0 - smoothing;
  w.uniform = smoothing / static_cast<double>(classes);
  return w;
}

// glogits = scale softmax - scale q: the three scale-multiplied weights, rounded to T by the caller.
struct SmoothingGradWeights {
  double scale = 1.0, target = 1.0, uniform = 0.0;
};
UPCYCLE_HD inline SmoothingGradWeights smoothing_grad_weights(double smoothing, double scale,
                                                               std::int64_t classes) {
  SmoothingGradWeights w;
  w.scale = scale;
  w.uniform = scale * smoothing / static_cast<double>(classes);
  w.target = scale * (1.0 - smoothing);
  return w;
}

// Whether a target is usable: in [0, classes) or ignore_index (a bad one is a device error).
UPCYCLE_HD inline bool valid_target(std::int64_t target, std::int64_t classes, std::int64_t ignore_index) {
  return target == ignore_index || (target >= 0 && target < classes);
}

// ---------------------------------------------------------------------------------------------
// Deterministic column sums (the LayerNorm / RMSNorm gamma and beta gradients): the rows are cut
// into `chunks` fixed ranges, one thread per (column, chunk) sums its range in row order into a
// double partial, and a second pass adds a column's partials in chunk order. No atomics, so the
// result depends only on (rows, dim).

// Enough (column, chunk) threads to fill an H200 (132 SMs x 2048 threads); at most 1024 chunks
// and never more chunks than rows.
constexpr std::int64_t kColumnSumThreads = 132 * 2048;
constexpr std::int64_t kMaxColumnChunks = 1024;

UPCYCLE_HD inline std::int64_t column_chunks(std::int64_t rows, std::int64_t dim) {
  if (rows <= 0 || dim <= 0) return 0;
  std::int64_t c = (kColumnSumThreads + dim - 1) / dim;
  if (c > kMaxColumnChunks) c = kMaxColumnChunks;
  if (c > rows) c = rows;
  return c < 1 ? 1 : c;
}

// First row of chunk c (chunk c covers [chunk_begin(c), chunk_begin(c + 1))).
UPCYCLE_HD inline std::int64_t chunk_begin(std::int64_t c, std::int64_t rows, std::int64_t chunks) {
  return c * rows / chunks;
}

// ---------------------------------------------------------------------------------------------
// Multi-tensor AdamW. A launch updates up to kAdamWMaxSegments segments (a segment: a range of
// one tensor); its pointers, sizes and weight decays travel by value in the kernel parameters
// (4 KB). Segment s owns the blocks [block_start[s], block_start[s + 1]), each block a slice of
// kAdamWBlockElems consecutive elements of the segment.

constexpr int kAdamWThreads = 256;
constexpr std::int64_t kAdamWBlockElems = 8192;  // 32 elements per thread
constexpr int kAdamWMaxSegments = 48;
constexpr std::int64_t kAdamWMaxBlocks = std::int64_t{1} << 30;  // < CUDA's 2^31 - 1 grid limit

// The step's scalars in double, folded exactly like the CPU twin (adamw_tensor in
// src/backend/cpu/cpu_optim.cpp): bias corrections c1 = 1 - b1^t, c2 = 1 - b2^t go into the step
// size lr / c1 and the factor 1 / sqrt(c2) on sqrt(v). Host only (std::pow).
struct AdamWScalars {
  double step_size = 0.0, inv_sqrt_c2 = 0.0;
};
inline AdamWScalars adamw_scalars(double lr, double beta1, double beta2, std::int64_t step) {
  const double c1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double c2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  AdamWScalars s;
  s.step_size = lr / c1;
  s.inv_sqrt_c2 = 1.0 / std::sqrt(c2);
  return s;
}
// Decoupled weight decay as one factor on the parameter.
UPCYCLE_HD inline double adamw_decay(double lr, double weight_decay) { return 1.0 - lr * weight_decay; }

struct AdamWSegmentPlan {
  std::size_t tensor = 0;  // index into the sizes given to plan_adamw
  std::int64_t begin = 0, size = 0;
};
struct AdamWLaunchPlan {
  std::vector<AdamWSegmentPlan> segments;
  std::vector<std::int64_t> block_start{0};  // segments.size() + 1 entries
  std::int64_t blocks() const { return block_start.back(); }
};

// Cuts tensors of the given sizes into launches (host only). Empty tensors get no segment; a
// tensor too large for one launch (max_blocks * block_elems elements) is split into segments.
inline std::vector<AdamWLaunchPlan> plan_adamw(const std::vector<std::int64_t>& sizes,
                                               std::int64_t block_elems = kAdamWBlockElems,
                                               int max_segments = kAdamWMaxSegments,
                                               std::int64_t max_blocks = kAdamWMaxBlocks) {
  std::vector<AdamWLaunchPlan> plans;
  AdamWLaunchPlan cur;
  const std::int64_t max_segment_elems = max_blocks * block_elems;
  for (std::size_t t = 0; t < sizes.size(); ++t) {
    for (std::int64_t begin = 0; begin < sizes[t];) {
      const std::int64_t rest = sizes[t] - begin;
      const std::int64_t size = rest < max_segment_elems ? rest : max_segment_elems;
      const std::int64_t blocks = (size + block_elems - 1) / block_elems;
      if (static_cast<int>(cur.segments.size()) == max_segments || cur.blocks() + blocks > max_blocks) {
        plans.push_back(std::move(cur));
        cur = AdamWLaunchPlan{};
      }
      cur.segments.push_back({t, begin, size});
      cur.block_start.push_back(cur.blocks() + blocks);
      begin += size;
    }
  }
  if (!cur.segments.empty()) plans.push_back(std::move(cur));
  return plans;
}

// The segment that owns `block`: the last s in [0, count) with block_start[s] <= block (the
// starts increase strictly: every segment has at least one block).
UPCYCLE_HD inline int find_segment(const std::int64_t* block_start, int count, std::int64_t block) {
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (block_start[mid] <= block) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// The elements [begin, end) of its segment that block `block` of segment s updates.
struct ElementRange {
  std::int64_t begin = 0, end = 0;
};
UPCYCLE_HD inline ElementRange segment_slice(std::int64_t block, std::int64_t first_block, std::int64_t size,
                                             std::int64_t block_elems) {
  ElementRange r;
  r.begin = (block - first_block) * block_elems;
  r.end = r.begin + block_elems < size ? r.begin + block_elems : size;
  return r;
}

}  // namespace upcycle::cuda
