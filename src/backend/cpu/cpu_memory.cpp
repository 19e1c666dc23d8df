#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <map>
#include <vector>

#include "backend/checks_creation.hpp"
#include "backend/scalar_math.hpp"
#include "cpu_backend.hpp"
#include "cpu_parallel.hpp"

namespace upcycle {

Backend& cpu_backend() {
  static CpuBackend backend;
  return backend;
}

Device CpuBackend::device() const { return Device::cpu; }

// Host memory. Blocks are 64-byte aligned (vector loads) and carry a 64-byte header with their
// size class. Freed blocks are kept in a cache by size class and handed out again: a training step
// allocates the same activation and gradient sizes every time, and reusing them saves the
// allocator calls and, above all, the page faults of fresh pages (large blocks come from mmap and
// would be faulted in and zeroed by the kernel on every step). Size classes are 64 bytes apart
// below 64 KiB and 1/8 of a power of two apart above (at most 12.5% waste). A request takes the
// smallest cached block of at least its class and less than twice it, so sizes that vary from step
// to step (an MoE layer's per-expert rows) still reuse the cache after warm-up. The cache holds at
// most UPCYCLE_CPU_CACHE_MB MiB (default 1024; 0 turns it off) and is emptied when an allocation
// fails. Counters (AllocatorStats) let tests check that a warm training step allocates nothing new.
namespace {

constexpr std::size_t kHeader = 64;
constexpr std::size_t kSmallLimit = 64 * 1024;

std::size_t size_class(std::size_t bytes) {
  const std::size_t b = bytes < 64 ? 64 : bytes;
  if (b < kSmallLimit) return (b + 63) / 64 * 64;
  const int e = 63 - __builtin_clzll(static_cast<unsigned long long>(b));
  const std::size_t step = std::size_t{1} << (e - 3);
  return (b + step - 1) & ~(step - 1);
}

struct BlockCache {
  std::mutex mu;
  std::map<std::size_t, std::vector<void*>> free;  // size class -> raw blocks (no empty lists)
  std::size_t cached = 0;
  std::size_t limit = std::size_t{1024} << 20;
  AllocatorStats stats;

  BlockCache() {
    if (const char* v = std::getenv("UPCYCLE_CPU_CACHE_MB")) {
      try {
        limit = static_cast<std::size_t>(std::stoull(v)) << 20;
      } catch (...) {
      }
    }
  }

  // Frees every cached block; returns whether there was any. Caller holds mu.
  bool release_all_locked() {
    const bool any = cached > 0;
    for (auto& [size, blocks] : free) {
      stats.system_frees += static_cast<std::int64_t>(blocks.size());
      for (void* raw : blocks) std::free(raw);
    }
    free.clear();
    cached = 0;
    stats.bytes_cached = 0;
    return any;
  }
};

// Never destroyed: tensors may be released during static destruction.
BlockCache& block_cache() {
  static BlockCache* c = new BlockCache();
  return *c;
}

}  // namespace

void* CpuBackend::allocate(std::size_t bytes) {
  const std::size_t size = size_class(bytes);
  BlockCache& cache = block_cache();
  std::lock_guard<std::mutex> lock(cache.mu);
  auto it = cache.free.lower_bound(size);
  void* raw = nullptr;
  if (it != cache.free.end() && it->first < 2 * size) {
    raw = it->second.back();
    it->second.pop_back();
    cache.cached -= it->first;
    if (it->second.empty()) cache.free.erase(it);
    ++cache.stats.cache_hits;
  } else {
    raw = std::aligned_alloc(64, size + kHeader);
    if (raw == nullptr && cache.release_all_locked()) raw = std::aligned_alloc(64, size + kHeader);
    UPCYCLE_CHECK(raw != nullptr, "out of host memory allocating ", bytes, " bytes");
    ++cache.stats.system_allocs;
    *static_cast<std::size_t*>(raw) = size;
  }
  AllocatorStats& st = cache.stats;
  st.bytes_in_use += static_cast<std::int64_t>(*static_cast<const std::size_t*>(raw));
  st.peak_bytes_in_use = std::max(st.peak_bytes_in_use, st.bytes_in_use);
  st.bytes_cached = static_cast<std::int64_t>(cache.cached);
  return static_cast<char*>(raw) + kHeader;
}

void CpuBackend::deallocate(void* ptr) {
  if (ptr == nullptr) return;
  void* raw = static_cast<char*>(ptr) - kHeader;
  const std::size_t size = *static_cast<const std::size_t*>(raw);
  BlockCache& cache = block_cache();
  std::lock_guard<std::mutex> lock(cache.mu);
  cache.stats.bytes_in_use -= static_cast<std::int64_t>(size);
  if (cache.cached + size <= cache.limit) {
    cache.free[size].push_back(raw);
    cache.cached += size;
  } else {
    std::free(raw);
    ++cache.stats.system_frees;
  }
  cache.stats.bytes_cached = static_cast<std::int64_t>(cache.cached);
}

AllocatorStats CpuBackend::allocator_stats() const {
  BlockCache& cache = block_cache();
  std::lock_guard<std::mutex> lock(cache.mu);
  return cache.stats;
}

void CpuBackend::reset_peak_bytes() {
  BlockCache& cache = block_cache();
  std::lock_guard<std::mutex> lock(cache.mu);
  cache.stats.peak_bytes_in_use = cache.stats.bytes_in_use;
}

// Host memory is what asynchronous copies need on the CPU: nothing to pin.
void* CpuBackend::allocate_pinned(std::size_t bytes) { return allocate(bytes); }
void CpuBackend::deallocate_pinned(void* ptr) { deallocate(ptr); }

void CpuBackend::copy_bytes(void* dst, Device dst_device, const void* src, Device src_device,
                            std::size_t bytes) {
  UPCYCLE_CHECK(dst_device == Device::cpu && src_device == Device::cpu,
                "the CPU backend copies host memory only");
  if (bytes) std::memmove(dst, src, bytes);
}

// Every CPU kernel has finished when it returns: the execution context has nothing to wait for.
void CpuBackend::synchronize() {}
StreamHandle CpuBackend::compute_stream() { return nullptr; }
StreamHandle CpuBackend::create_stream() { return nullptr; }
void CpuBackend::destroy_stream(StreamHandle) {}
EventHandle CpuBackend::create_event() { return nullptr; }
void CpuBackend::destroy_event(EventHandle) {}
void CpuBackend::record_event(EventHandle, StreamHandle) {}
void CpuBackend::wait_event(StreamHandle, EventHandle) {}
void CpuBackend::synchronize_event(EventHandle) {}
bool CpuBackend::event_done(EventHandle) { return true; }
void CpuBackend::copy_bytes_async(void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes) {
  copy_bytes(dst, dst_device, src, src_device, bytes);
}

void* CpuBackend::workspace(std::size_t bytes) {
  // One block per thread that asks (kernels on several threads may each want scratch).
  thread_local std::vector<char> scratch;
  if (scratch.size() < bytes) scratch.resize(bytes);
  return scratch.data();
}

void CpuBackend::set_allow_tf32(bool) {}  // no TF32 on the CPU

namespace {
template <class T>
void fill_typed(Tensor& out, double value) {
  T* p = out.data<T>();
  const T v = static_cast<T>(value);
  const std::int64_t n = out.numel();
  cpu::parallel_for(n, 32768, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i) p[i] = v;
  });
}

}  // namespace

void CpuBackend::fill(Tensor& out, double value) {
  dispatch_any(out.dtype(), "fill", [&](auto t) { fill_typed<decltype(t)>(out, value); });
}

void CpuBackend::cast(const Tensor& src, Tensor& dst) {
  check_cast_args(src, dst);
  dispatch_any(src.dtype(), "cast", [&](auto s) {
    using S = decltype(s);
    dispatch_any(dst.dtype(), "cast", [&](auto d) {
      using D = decltype(d);
      const S* in = src.data<S>();
      D* out = dst.data<D>();
      const std::int64_t n = src.numel();
      for (std::int64_t i = 0; i < n; ++i) out[i] = static_cast<D>(in[i]);
    });
  });
}

void CpuBackend::arange(Tensor& out, double start, double step) {
  dispatch_any(out.dtype(), "arange", [&](auto t) {
    using T = decltype(t);
    T* p = out.data<T>();
    // The formula is shared with the CUDA kernel (backend/scalar_math.hpp).
    for (std::int64_t i = 0; i < out.numel(); ++i) p[i] = static_cast<T>(scalar_math::arange_value(start, step, i));
  });
}

}  // namespace upcycle
