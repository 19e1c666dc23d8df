// The helper pool behind cpu::parallel_for (see cpu_parallel.hpp).
//
// A loop is a Job: n indices in `chunks` chunks, a chunk counter to take from and a done counter.
// Posting publishes the job and bumps an epoch; helpers spin a little on the epoch (kernels follow
// each other within microseconds) and then sleep on a condition variable. The caller takes chunks
// like any helper and then waits only for chunks that were taken and are still running. Jobs are
// reference counted, so a helper that wakes late and finds a finished job only reads its counters.
#include "cpu_parallel.hpp"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace upcycle::cpu {

namespace {

thread_local bool t_in_loop = false;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

struct Job {
  std::int64_t n = 0, chunks = 0;
  detail::ChunkFn fn = nullptr;
  void* ctx = nullptr;
  int max_helpers = 0;                  // helpers with a higher index leave this job alone
  std::atomic<std::int64_t> next{0};    // next chunk to take
  std::atomic<std::int64_t> done{0};    // chunks finished

  // Takes and runs chunks until none is left.
  void work() {
    for (;;) {
      const std::int64_t c = next.fetch_add(1, std::memory_order_relaxed);
      if (c >= chunks) return;
      fn(ctx, c * n / chunks, (c + 1) * n / chunks);
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

class Pool {
 public:
  // Runs the job with up to `helpers` helper threads (started on first use, never stopped).
  void run(const std::shared_ptr<Job>& job, int helpers) {
    ensure_helpers(helpers);
    job->max_helpers = helpers;
    {
      std::lock_guard<std::mutex> lock(job_mu_);
      job_ = job;
    }
    epoch_.fetch_add(1, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard<std::mutex> lock(sleep_mu_);
      wake_.notify_all();
    }
    t_in_loop = true;
    job->work();
    t_in_loop = false;
    // Only chunks a helper took and still runs are waited for.
    for (int spins = 0; job->done.load(std::memory_order_acquire) < job->chunks; ++spins) {
      if (spins < 4096) cpu_relax();
      else std::this_thread::yield();
    }
  }

 private:
  void ensure_helpers(int helpers) {
    std::lock_guard<std::mutex> lock(start_mu_);
    while (static_cast<int>(started_) < helpers) {
      const int index = static_cast<int>(started_++);
      std::thread([this, index] { helper_loop(index); }).detach();
    }
  }

  std::shared_ptr<Job> current_job() {
    std::lock_guard<std::mutex> lock(job_mu_);
    return job_;
  }

  void helper_loop(int index) {
    t_in_loop = true;  // loops posted from a chunk run serially
    std::uint64_t seen = epoch_.load(std::memory_order_acquire);
    for (;;) {
      // Spin for about 100 us before sleeping: the next kernel usually comes sooner.
      std::uint64_t e = epoch_.load(std::memory_order_acquire);
      const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(100);
      for (int spins = 1; e == seen; ++spins) {
        cpu_relax();
        e = epoch_.load(std::memory_order_acquire);
        if (spins % 256 == 0 && std::chrono::steady_clock::now() > spin_until) break;
      }
      if (e == seen) {
        std::unique_lock<std::mutex> lock(sleep_mu_);
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        wake_.wait(lock, [&] { return epoch_.load(std::memory_order_seq_cst) != seen; });
        sleepers_.fetch_sub(1, std::memory_order_seq_cst);
        e = epoch_.load(std::memory_order_acquire);
      }
      seen = e;
      const std::shared_ptr<Job> job = current_job();
      if (job && index < job->max_helpers) job->work();
    }
  }

  std::mutex start_mu_;
  unsigned started_ = 0;
  std::mutex job_mu_;
  std::shared_ptr<Job> job_;
  std::atomic<std::uint64_t> epoch_{0};
  std::atomic<int> sleepers_{0};
  std::mutex sleep_mu_;
  std::condition_variable wake_;
};

// Never destroyed: detached helpers wait on its members until the process ends.
Pool& pool() {
  static Pool* p = new Pool();
  return *p;
}

}  // namespace

int loop_threads() { return std::max(1, omp_get_max_threads()); }

bool in_parallel_loop() { return t_in_loop || omp_in_parallel(); }

namespace detail {

void run_parallel(std::int64_t n, std::int64_t chunks, ChunkFn fn, void* ctx) {
  auto job = std::make_shared<Job>();
  job->n = n;
  job->chunks = chunks;
  job->fn = fn;
  job->ctx = ctx;
  pool().run(job, loop_threads() - 1);
}

}  // namespace detail

}  // namespace upcycle::cpu
