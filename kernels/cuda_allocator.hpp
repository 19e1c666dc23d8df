#pragma once
// The state of the CUDA backend's caching allocator (see cuda_memory.cpp for how it is used).
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include <cuda_runtime.h>

#include "cuda_backend.hpp"

namespace upcycle {

class CudaBackend::CachingAllocator {
 public:
  std::mutex mu;
  std::map<std::size_t, std::vector<void*>> free_blocks;  // size class -> blocks (no empty lists)
  std::unordered_map<void*, std::size_t> block_size;                 // every live or cached block
  std::unordered_map<std::size_t, std::vector<void*>> free_pinned;
  std::unordered_map<void*, std::size_t> pinned_size;
  AllocatorStats stats;

  // Gives every cached device block back to the system. Caller holds mu.
  void release_cached() {
    for (auto& [size, blocks] : free_blocks) {
      for (void* p : blocks) {
        cudaFree(p);
        block_size.erase(p);
        ++stats.system_frees;
      }
    }
    free_blocks.clear();
    stats.bytes_cached = 0;
  }
};

}  // namespace upcycle
