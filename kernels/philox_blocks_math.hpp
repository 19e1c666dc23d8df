#pragma once
// How the random kernels (random.cu) share Philox blocks between elements. Element i of a random
// kernel reads the words offset + w i + t (t < w) of stream `seed`, w = words per element (1 for
// uniform and dropout_mask, 2 for normal), as Philox4x32::word does on the CPU. One Philox call
// yields the four words of a block (words 4c .. 4c + 3 come from counter c), so a thread that
// handles a whole block makes one call for 4 / w elements instead of one call per word.
// Plain C++ (no CUDA headers): tests/unit/test_cuda_philox_blocks_math.cpp checks it on the CPU.
//
// Words are numbered modulo 2^64 as on the CPU (offset + i wraps there): with
// offset = 4 f + lead (lead < 4), word offset + q (q >= 0) is lane q % 4 of counter
// (f + q / 4) mod 2^62, so block k (k = q / 4) of the kernel is counter (f + k) mod 2^62.
#include <cstdint>

#include "upcycle/core/host_device.hpp"

namespace upcycle::cuda {

struct PhiloxBlocks {
  std::uint64_t first_counter = 0;  // offset / 4
  std::int64_t lead = 0;            // offset % 4: the lane of element 0's first word
  std::int64_t words = 1;           // words per element: 1 or 2
  std::int64_t n = 0;               // elements
  std::int64_t blocks = 0;          // blocks holding the first word of some element
};

// words: 1 or 2.
UPCYCLE_HD inline PhiloxBlocks philox_blocks(std::uint64_t offset, std::int64_t n, std::int64_t words) {
  PhiloxBlocks p;
  p.first_counter = offset >> 2;
  p.lead = static_cast<std::int64_t>(offset & 3u);
  p.words = words;
  p.n = n;
  p.blocks = n > 0 ? ((p.lead + words * (n - 1)) >> 2) + 1 : 0;
  return p;
}

// The Philox counter of the kernel's block k (k may be p.blocks: an element's second word can
// lie one block past the last one that holds a first word).
UPCYCLE_HD inline std::uint64_t philox_block_counter(const PhiloxBlocks& p, std::int64_t k) {
  return (p.first_counter + static_cast<std::uint64_t>(k)) & ((std::uint64_t{1} << 62) - 1);
}

// The element whose first word is lane `lane` (< 4) of block k, or -1 when that word starts no
// element (before element 0, past the last one, or a normal's second word). Kernels loop over the
// four lanes with `lane` a compile-time constant, so the block's words stay in registers.
UPCYCLE_HD inline std::int64_t philox_lane_element(const PhiloxBlocks& p, std::int64_t k, int lane) {
  const std::int64_t q = 4 * k + lane - p.lead;  // the word counted from element 0's first word
  const std::int64_t odd = p.words - 1;          // words is 1 or 2: a mask and a shift, no division
  if (q < 0 || (q & odd) != 0) return -1;
  const std::int64_t i = q >> odd;
  return i < p.n ? i : -1;
}

}  // namespace upcycle::cuda
