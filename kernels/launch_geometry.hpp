#pragma once
// Launch geometry of the CUDA kernels as plain functions, compiled for the host too so that CPU
// tests check them without a GPU (tests/unit/test_cuda_index_math.cpp).
#include <cstdint>

#include "upcycle/core/host_device.hpp"

namespace upcycle::cuda {

// Threads per block of the elementwise and grid-stride kernels.
constexpr int kBlockThreads = 256;
// Blocks launched for a grid-stride loop: enough to fill an H200 (132 SMs x 16 resident blocks of
// 256 threads) and never more than the work needs; at least 1 so that an empty launch stays valid
// (callers skip empty work before launching anyway).
constexpr std::int64_t kMaxGridBlocks = 132 * 16;

UPCYCLE_HD inline std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

UPCYCLE_HD inline unsigned grid_blocks(std::int64_t n, int threads = kBlockThreads) {
  const std::int64_t need = ceil_div(n, threads);
  const std::int64_t blocks = need < 1 ? 1 : (need > kMaxGridBlocks ? kMaxGridBlocks : need);
  return static_cast<unsigned>(blocks);
}

// Threads per block for a kernel that gives one block to each row of `cols` elements: a multiple of
// the warp size (32) between 32 and 1024, about one element per thread for short rows and 1024 for
// long ones (each thread then strides over the row).
UPCYCLE_HD inline int row_block_threads(std::int64_t cols) {
  std::int64_t t = ceil_div(cols, 32) * 32;
  if (t < 32) t = 32;
  if (t > 1024) t = 1024;
  return static_cast<int>(t);
}

}  // namespace upcycle::cuda
