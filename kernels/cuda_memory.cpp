// The CUDA backend's caching allocator (device memory) and its pinned host memory.
//
// Device blocks are rounded up to size classes (512-byte multiples below 1 MiB, 1/8 of a power of
// two above: at most 12.5% waste) and kept by class when freed. A request takes the smallest cached
// block of at least its class and less than twice it (MoE expert sizes vary from step to step and
// still reuse the cache after warm-up). A freed block is handed out again
// at once: every kernel runs on the one compute stream, so work issued later that reuses the
// block runs after the work that last used it (stream-ordered reuse, as PyTorch's allocator does
// for a single stream). Work on another stream that reads a block must be ordered against the
// compute stream with events before the block is freed. When cudaMalloc fails the cache is given
// back (cudaFree, which waits for the device) and the allocation retried once; a second failure
// throws naming the size and the memory in use.
//
// Pinned host memory (cudaMallocHost) has its own small cache by size class: staging buffers are
// allocated once and kept by their owners anyway.
#include <algorithm>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "cuda_allocator.hpp"
#include "cuda_common.cuh"

namespace upcycle {

namespace {

std::size_t device_size_class(std::size_t bytes) {
  const std::size_t b = bytes < 512 ? 512 : bytes;
  if (b < (std::size_t{1} << 20)) return (b + 511) / 512 * 512;
  const int e = 63 - __builtin_clzll(static_cast<unsigned long long>(b));
  const std::size_t step = std::size_t{1} << (e - 3);
  return (b + step - 1) & ~(step - 1);
}

}  // namespace

void CudaBackend::init_allocator() { allocator_ = std::make_unique<CachingAllocator>(); }

void* CudaBackend::allocate(std::size_t bytes) {
  const std::size_t size = device_size_class(bytes);
  CachingAllocator& a = *allocator_;
  std::lock_guard<std::mutex> lock(a.mu);
  void* p = nullptr;
  auto it = a.free_blocks.lower_bound(size);
  std::size_t block = size;
  if (it != a.free_blocks.end() && it->first < 2 * size) {
    block = it->first;
    p = it->second.back();
    it->second.pop_back();
    if (it->second.empty()) a.free_blocks.erase(it);
    a.stats.bytes_cached -= static_cast<std::int64_t>(block);
    ++a.stats.cache_hits;
  } else {
    cudaError_t e = cudaMalloc(&p, size);
    if (e == cudaErrorMemoryAllocation && a.stats.bytes_cached > 0) {
      cudaGetLastError();
      a.release_cached();
      e = cudaMalloc(&p, size);
    }
    if (e != cudaSuccess) {
      cudaGetLastError();
      UPCYCLE_THROW("out of GPU memory allocating ", bytes, " bytes (", a.stats.bytes_in_use,
                    " bytes in use by tensors): ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
    }
    a.block_size[p] = size;
    ++a.stats.system_allocs;
  }
  a.stats.bytes_in_use += static_cast<std::int64_t>(block);
  a.stats.peak_bytes_in_use = std::max(a.stats.peak_bytes_in_use, a.stats.bytes_in_use);
  return p;
}

void CudaBackend::deallocate(void* ptr) {
  if (ptr == nullptr) return;
  CachingAllocator& a = *allocator_;
  std::lock_guard<std::mutex> lock(a.mu);
  const auto it = a.block_size.find(ptr);
  UPCYCLE_CHECK(it != a.block_size.end(), "CUDA deallocate: ", ptr, " was not allocated by this backend");
  const std::size_t size = it->second;
  a.free_blocks[size].push_back(ptr);
  a.stats.bytes_in_use -= static_cast<std::int64_t>(size);
  a.stats.bytes_cached += static_cast<std::int64_t>(size);
}

void* CudaBackend::allocate_pinned(std::size_t bytes) {
  const std::size_t size = device_size_class(bytes);
  CachingAllocator& a = *allocator_;
  std::lock_guard<std::mutex> lock(a.mu);
  auto it = a.free_pinned.find(size);
  if (it != a.free_pinned.end() && !it->second.empty()) {
    void* p = it->second.back();
    it->second.pop_back();
    return p;
  }
  void* p = nullptr;
  UPCYCLE_CUDA_CHECK(cudaMallocHost(&p, size));
  a.pinned_size[p] = size;
  return p;
}

void CudaBackend::deallocate_pinned(void* ptr) {
  if (ptr == nullptr) return;
  CachingAllocator& a = *allocator_;
  std::lock_guard<std::mutex> lock(a.mu);
  const auto it = a.pinned_size.find(ptr);
  UPCYCLE_CHECK(it != a.pinned_size.end(), "CUDA deallocate_pinned: ", ptr, " was not allocated by this backend");
  a.free_pinned[it->second].push_back(ptr);
}

AllocatorStats CudaBackend::allocator_stats() const {
  std::lock_guard<std::mutex> lock(allocator_->mu);
  AllocatorStats s = allocator_->stats;
  s.host_waits = host_waits_.load();
  return s;
}

void CudaBackend::reset_peak_bytes() {
  std::lock_guard<std::mutex> lock(allocator_->mu);
  allocator_->stats.peak_bytes_in_use = allocator_->stats.bytes_in_use;
}

}  // namespace upcycle
