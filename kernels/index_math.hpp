#pragma once
// Launch geometry and index checks of the gather / scatter-add kernels (kernels/index.cu) as plain
// functions, compiled for the host too so that tests/unit/test_cuda_index_math.cpp checks them
// without a GPU. No CUDA includes.
//
// The kernels work on rows: gather_rows / index_add_rows copy or add one row of D values per index,
// gather_last / scatter_add_last touch k values of each row. A block is a tile of tx threads along
// a row times ty rows (tx * ty == kBlockThreads): short rows (D = 1, k = 2) pack many rows into a
// block instead of leaving most of its threads idle, long rows get up to kBlockThreads threads
// striding along them. Consecutive threads take consecutive elements of a row and consecutive
// rows, so the accesses of a warp are contiguous. No integer division per element.
#include <cstdint>

#include "launch_geometry.hpp"
#include "upcycle/core/host_device.hpp"

namespace upcycle::cuda {

struct RowTile {
  int tx = 1;  // threads along a row (blockDim.x): a power of two
  int ty = 1;  // rows per block (blockDim.y)
};

// tx: the smallest power of two >= cols, at most kBlockThreads (and 1 for empty rows).
UPCYCLE_HD inline RowTile row_tile(std::int64_t cols) {
  int tx = 1;
  while (tx < cols && tx < kBlockThreads) tx *= 2;
  return {tx, kBlockThreads / tx};
}

// Blocks of a row-tile launch over `rows` rows: enough for every row, capped like grid_blocks
// (the kernels stride over the rows beyond), at least 1.
UPCYCLE_HD inline unsigned row_tile_blocks(std::int64_t rows, const RowTile& t) {
  const std::int64_t need = ceil_div(rows, t.ty);
  const std::int64_t blocks = need < 1 ? 1 : (need > kMaxGridBlocks ? kMaxGridBlocks : need);
  return static_cast<unsigned>(blocks);
}

// Whether an index addresses one of `bound` rows or columns (the CPU's check_indices).
template <class I>
UPCYCLE_HD inline bool index_in_range(I i, std::int64_t bound) {
  return i >= 0 && static_cast<std::int64_t>(i) < bound;
}

// scatter_add_last gives each row to one thread when a row has at most this many indices: the
// adds into a row then happen in index order, as on the CPU, so repeated indices sum in the same
// order and the result is the CPU's bit for bit. Longer rows spread over threads with atomics.
constexpr std::int64_t kScatterRowSerialMaxK = 32;

}  // namespace upcycle::cuda
