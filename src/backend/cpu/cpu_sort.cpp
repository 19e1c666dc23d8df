// Per-row selection and sorting over the last dim of [rows, cols]. Both kernels order indices by
// (value, index): the index tie-break makes the order total, so an unstable std::sort or
// std::partial_sort gives exactly the stable result without std::stable_sort's allocation.
// NaN ranks above every number (as in PyTorch) so that the comparison stays a strict weak order.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "backend/checks_sort.hpp"
#include "cpu_backend.hpp"
#include "cpu_parallel.hpp"

namespace upcycle {

namespace {

template <class T>
bool greater(T a, T b) {
  return a > b || (std::isnan(a) && !std::isnan(b));
}

// Larger values first; equal values by lower index.
template <class T>
struct Descending {
  const T* x;
  bool operator()(std::int64_t a, std::int64_t b) const {
    if (greater(x[a], x[b])) return true;
    if (greater(x[b], x[a])) return false;
    return a < b;
  }
};

// Smaller values first; equal values by lower index.
template <class T>
struct Ascending {
  const T* x;
  bool operator()(std::int64_t a, std::int64_t b) const {
    if (greater(x[b], x[a])) return true;
    if (greater(x[a], x[b])) return false;
    return a < b;
  }
};

template <class T>
void topk_typed(const Tensor& x, std::int64_t k, Tensor& values, Tensor& idx, std::int64_t rows,
                std::int64_t cols) {
  const T* px = x.data<T>();
  T* pv = values.data<T>();
  std::int64_t* pi = idx.data<std::int64_t>();
  const std::int64_t grain = (16384 + cols - 1) / std::max<std::int64_t>(1, cols);
  if (k == 1) {
    // The argmax (spherical k-means calls it on every token each iteration): one scan, keeping the
    // first of equal values, is the first element of the Descending order without sorting.
    cpu::parallel_for(rows, grain, [&](std::int64_t r0, std::int64_t r1) {
      for (std::int64_t r = r0; r < r1; ++r) {
        const T* xr = px + r * cols;
        std::int64_t best = 0;
        for (std::int64_t c = 1; c < cols; ++c)
          if (greater(xr[c], xr[best])) best = c;
        pv[r] = xr[best];
        pi[r] = best;
      }
    });
    return;
  }
  cpu::parallel_for(rows, grain, [&](std::int64_t r0, std::int64_t r1) {
    std::vector<std::int64_t> order(static_cast<std::size_t>(cols));  // one per chunk
    for (std::int64_t r = r0; r < r1; ++r) {
      const T* xr = px + r * cols;
      std::iota(order.begin(), order.end(), std::int64_t{0});
      std::partial_sort(order.begin(), order.begin() + k, order.end(), Descending<T>{xr});
      for (std::int64_t j = 0; j < k; ++j) {
        const std::int64_t c = order[static_cast<std::size_t>(j)];
        pv[r * k + j] = xr[c];
        pi[r * k + j] = c;
      }
    }
  });
}

template <class T>
void argsort_typed(const Tensor& x, bool descending, Tensor& idx, std::int64_t rows, std::int64_t cols) {
  const T* px = x.data<T>();
  std::int64_t* pi = idx.data<std::int64_t>();
  const std::int64_t grain = (16384 + cols - 1) / std::max<std::int64_t>(1, cols);
  cpu::parallel_for(rows, grain, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      std::int64_t* ir = pi + r * cols;  // sorted in place: the output row is the index buffer
      std::iota(ir, ir + cols, std::int64_t{0});
      if (descending)
        std::sort(ir, ir + cols, Descending<T>{px + r * cols});
      else
        std::sort(ir, ir + cols, Ascending<T>{px + r * cols});
    }
  });
}

}  // namespace

void CpuBackend::topk(const Tensor& x, std::int64_t k, Tensor& values, Tensor& idx) {
  const SortRows d = check_topk_args(x, k, values, idx);
  const std::int64_t rows = d.rows, cols = d.cols;
  if (k == 0) return;
  dispatch_floating(x.dtype(), "topk", [&](auto t) { topk_typed<decltype(t)>(x, k, values, idx, rows, cols); });
}

void CpuBackend::argsort(const Tensor& x, bool descending, Tensor& idx) {
  const SortRows d = check_argsort_args(x, idx);
  const std::int64_t rows = d.rows, cols = d.cols;
  dispatch_floating(x.dtype(), "argsort",
                    [&](auto t) { argsort_typed<decltype(t)>(x, descending, idx, rows, cols); });
}

}  // namespace upcycle
