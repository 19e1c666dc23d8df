// Row and last-dim gather / scatter-add. Indices are validated in a separate pass before any
// element is written: a throw inside a parallel loop would terminate the program, and a
// scatter-add that stopped half-way would leave its in/out tensor corrupted.
#include <algorithm>
#include <atomic>
#include <limits>

#include "backend/checks_index.hpp"
#include "cpu_backend.hpp"
#include "cpu_parallel.hpp"

namespace upcycle {

namespace {

// Throws naming the first position whose index is outside [0, bound).
template <class I>
void check_indices(const I* idx, std::int64_t n, std::int64_t bound, const char* what) {
  // The first bad position of each chunk; the smallest of those wins.
  std::atomic<std::int64_t> first_bad{std::numeric_limits<std::int64_t>::max()};
  cpu::parallel_for(n, 32768, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i)
      if (idx[i] < 0 || static_cast<std::int64_t>(idx[i]) >= bound) {
        std::int64_t cur = first_bad.load();
        while (i < cur && !first_bad.compare_exchange_weak(cur, i)) {
        }
        return;
      }
  });
  const std::int64_t bad = first_bad.load();
  if (bad != std::numeric_limits<std::int64_t>::max())
    UPCYCLE_THROW(what, ": index ", static_cast<std::int64_t>(idx[bad]), " at position ", bad,
                  " is out of range [0, ", bound, ")");
}

}  // namespace

void CpuBackend::gather_rows(const Tensor& table, const Tensor& idx, Tensor& out) {
  const IndexRowsDims dims = check_gather_rows_args(table, idx, out);
  const std::int64_t V = dims.V, D = dims.D, N = dims.N;
  dispatch_floating(table.dtype(), "gather_rows", [&](auto t) {
    using T = decltype(t);
    dispatch_index(idx.dtype(), "gather_rows", [&](auto it) {
      using I = decltype(it);
      const I* pi = idx.data<I>();
      check_indices(pi, N, V, "gather_rows");
      const T* src = table.data<T>();
      T* dst = out.data<T>();
      cpu::parallel_for(N, (16384 + D - 1) / std::max<std::int64_t>(1, D), [&](std::int64_t i_begin, std::int64_t i_end) {
        for (std::int64_t i = i_begin; i < i_end; ++i) {
          const T* row = src + static_cast<std::int64_t>(pi[i]) * D;
          T* o = dst + i * D;
#pragma omp simd
          for (std::int64_t j = 0; j < D; ++j) o[j] = row[j];
        }
      });
    });
  });
}

void CpuBackend::index_add_rows(Tensor& out, const Tensor& idx, const Tensor& src) {
  const IndexRowsDims dims = check_index_add_rows_args(out, idx, src);
  const std::int64_t V = dims.V, D = dims.D, N = dims.N;
  dispatch_floating(out.dtype(), "index_add_rows", [&](auto t) {
    using T = decltype(t);
    dispatch_index(idx.dtype(), "index_add_rows", [&](auto it) {
      using I = decltype(it);
      const I* pi = idx.data<I>();
      check_indices(pi, N, V, "index_add_rows");
      const T* ps = src.data<T>();
      T* po = out.data<T>();
      // Repeated indices make rows collide, so threads split the columns instead: each owns a
      // block of columns of every row and no two threads ever add into the same element. A block
      // spans a few cache lines so that threads do not share lines either.
      constexpr std::int64_t kBlock = 64;
      const std::int64_t blocks = (D + kBlock - 1) / kBlock;
      cpu::parallel_for(blocks, N * D > 32768 ? 1 : blocks, [&](std::int64_t b_begin, std::int64_t b_end) {
        for (std::int64_t b = b_begin; b < b_end; ++b) {
          const std::int64_t c0 = b * kBlock, c1 = std::min(D, c0 + kBlock);
          for (std::int64_t i = 0; i < N; ++i) {
            T* o = po + static_cast<std::int64_t>(pi[i]) * D;
            const T* s = ps + i * D;
#pragma omp simd
            for (std::int64_t j = c0; j < c1; ++j) o[j] += s[j];
          }
        }
      });
    });
  });
}

void CpuBackend::gather_last(const Tensor& x, const Tensor& idx, Tensor& out) {
  const IndexLastDims dims = check_gather_last_args(x, idx, out);
  dispatch_floating(x.dtype(), "gather_last", [&](auto t) {
    using T = decltype(t);
    dispatch_index(idx.dtype(), "gather_last", [&](auto it) {
      using I = decltype(it);
      const I* pi = idx.data<I>();
      check_indices(pi, idx.numel(), dims.cols, "gather_last");
      const T* px = x.data<T>();
      T* po = out.data<T>();
      const std::int64_t rows = dims.rows, k = dims.k, cols = dims.cols;
      cpu::parallel_for(rows, (16384 + k - 1) / std::max<std::int64_t>(1, k), [&](std::int64_t r0, std::int64_t r1) {
        for (std::int64_t r = r0; r < r1; ++r)
          for (std::int64_t j = 0; j < k; ++j) po[r * k + j] = px[r * cols + static_cast<std::int64_t>(pi[r * k + j])];
      });
    });
  });
}

void CpuBackend::scatter_add_last(Tensor& out, const Tensor& idx, const Tensor& src) {
  const IndexLastDims dims = check_scatter_add_last_args(out, idx, src);
  dispatch_floating(out.dtype(), "scatter_add_last", [&](auto t) {
    using T = decltype(t);
    dispatch_index(idx.dtype(), "scatter_add_last", [&](auto it) {
      using I = decltype(it);
      const I* pi = idx.data<I>();
      check_indices(pi, idx.numel(), dims.cols, "scatter_add_last");
      const T* ps = src.data<T>();
      T* po = out.data<T>();
      const std::int64_t rows = dims.rows, k = dims.k, cols = dims.cols;
      // A row's indices only address that row, so rows are independent even with repeats.
      cpu::parallel_for(rows, (16384 + k - 1) / std::max<std::int64_t>(1, k), [&](std::int64_t r0, std::int64_t r1) {
        for (std::int64_t r = r0; r < r1; ++r)
          for (std::int64_t j = 0; j < k; ++j) po[r * cols + static_cast<std::int64_t>(pi[r * k + j])] += ps[r * k + j];
      });
    });
  });
}

}  // namespace upcycle
