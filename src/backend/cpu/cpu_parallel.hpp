#pragma once
// The CPU kernels' parallel loop. Not an OpenMP parallel region: the caller posts the loop's
// chunks to a small pool of helper threads and takes chunks itself, and returns as soon as every
// chunk is done. A helper that is not running when a loop is posted (the machine is shared and
// the scheduler gave its core to another process) simply takes no chunk: the caller never waits
// at a barrier for a thread that is not there. With OpenMP every parallel region waited for all
// of its team, so one descheduled thread cost a scheduler time slice (several ms) per kernel and a
// training step with hundreds of kernels slowed down 5-20x whenever another process was busy.
//
// Threads: omp_get_max_threads() (configure_cpu_threads sets it), the caller included.
// Loops posted from inside a chunk run serially on the calling thread.
// Results must not depend on which thread runs a chunk; chunk boundaries depend on n, the grain
// and the thread count, so loops whose result depends on the partition (reductions) choose their
// own fixed chunks and pass grain 1 over the chunk indices.
#include <cstdint>
#include <type_traits>

namespace upcycle::cpu {

// Threads a parallel loop may use (>= 1).
int loop_threads();
// True inside a chunk of a parallel loop (there a loop runs serially).
bool in_parallel_loop();

namespace detail {
using ChunkFn = void (*)(void* ctx, std::int64_t begin, std::int64_t end);
void run_parallel(std::int64_t n, std::int64_t chunks, ChunkFn fn, void* ctx);
}  // namespace detail

// Calls body(begin, end) on disjoint ranges covering [0, n). Runs in parallel only when n holds at
// least two chunks of `grain` indices; at most 4 chunks per thread.
template <class Body>
void parallel_for(std::int64_t n, std::int64_t grain, Body&& body) {
  if (n <= 0) return;
  const std::int64_t g = grain < 1 ? 1 : grain;
  const int threads = loop_threads();
  std::int64_t chunks = n / g;
  if (chunks > 4 * static_cast<std::int64_t>(threads)) chunks = 4 * static_cast<std::int64_t>(threads);
  if (threads <= 1 || chunks < 2 || in_parallel_loop()) {
    body(std::int64_t{0}, n);
    return;
  }
  using B = std::remove_reference_t<Body>;
  detail::run_parallel(
      n, chunks, [](void* ctx, std::int64_t b, std::int64_t e) { (*static_cast<B*>(ctx))(b, e); },
      const_cast<void*>(static_cast<const void*>(&body)));
}

}  // namespace upcycle::cpu
