// LayerNorm and RMSNorm over the last dim of [rows, D]. Per-row statistics are accumulated in
// double (for f32 too) and the variance is computed in two passes around the mean, so rows with
// a large offset keep their precision; the variance is biased (divides by D) like PyTorch.
// The gamma / beta gradients are column sums over all rows. To make them deterministic (and
// independent of the thread count) the rows are cut into a fixed set of chunks, each chunk sums
// its rows into its own double buffer, and the buffers are added in chunk order.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/checks_rows.hpp"
#include "cpu_backend.hpp"
#include "cpu_parallel.hpp"

namespace upcycle {

namespace {

// Number of row chunks for the column sums: enough to keep 16+ threads busy, few enough that the
// chunk buffers (kColumnChunks * D doubles per sum) stay small.
constexpr std::int64_t kColumnChunks = 32;

using row_checks::NormShape;

// Calls row_fn(r, acc_a, acc_b) for every row, where acc_a / acc_b are the row's chunk buffers of
// D doubles (null when out_a / out_b is null), then writes the column sums to out_a / out_b.
template <class T, class RowFn>
void rows_with_column_sums(std::int64_t rows, std::int64_t dim, T* out_a, T* out_b, RowFn row_fn) {
  if (rows == 0) {  // no rows: the column sums are zero (and there is nothing to chunk)
    for (std::int64_t j = 0; j < dim; ++j) {
      if (out_a) out_a[j] = T(0);
      if (out_b) out_b[j] = T(0);
    }
    return;
  }
  const std::int64_t chunks = std::min(rows, kColumnChunks);
  const auto chunk_size = static_cast<std::size_t>(chunks * dim);
  std::vector<double> acc_a(out_a ? chunk_size : 0), acc_b(out_b ? chunk_size : 0);
  // The chunks are fixed (kColumnChunks); the grain only decides whether to split them at all.
  const std::int64_t per_chunk = std::max<std::int64_t>(1, rows * dim / chunks);
  cpu::parallel_for(chunks, (16384 + per_chunk - 1) / per_chunk, [&](std::int64_t c_begin, std::int64_t c_end) {
    for (std::int64_t c = c_begin; c < c_end; ++c) {
      double* a = out_a ? acc_a.data() + c * dim : nullptr;
      double* b = out_b ? acc_b.data() + c * dim : nullptr;
      for (std::int64_t r = c * rows / chunks; r < (c + 1) * rows / chunks; ++r) row_fn(r, a, b);
    }
  });
  if (!out_a && !out_b) return;
  cpu::parallel_for(dim, (16384 + chunks - 1) / chunks, [&](std::int64_t j_begin, std::int64_t j_end) {
    for (std::int64_t j = j_begin; j < j_end; ++j) {
      double sa = 0.0, sb = 0.0;
      for (std::int64_t c = 0; c < chunks; ++c) {
        if (out_a) sa += acc_a[static_cast<std::size_t>(c * dim + j)];
        if (out_b) sb += acc_b[static_cast<std::size_t>(c * dim + j)];
      }
      if (out_a) out_a[j] = static_cast<T>(sa);
      if (out_b) out_b[j] = static_cast<T>(sb);
    }
  });
}

template <class T>
void layernorm_typed(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps, Tensor& y,
                     Tensor& mean, Tensor& rstd, NormShape s) {
  const std::int64_t rows = s.rows, dim = s.dim;
  const T* px = x.data<T>();
  // An absent gamma / beta reads ones / zeros: no conditional load in the loops (it stops them
  // vectorising).
  std::vector<T> ones(gamma.defined() ? 0 : static_cast<std::size_t>(dim), T(1));
  std::vector<T> zeros(beta.defined() ? 0 : static_cast<std::size_t>(dim), T(0));
  const T* pg = gamma.defined() ? gamma.data<T>() : ones.data();
  const T* pb = beta.defined() ? beta.data<T>() : zeros.data();
  T* py = y.data<T>();
  T* pm = mean.data<T>();
  T* pr = rstd.data<T>();
  cpu::parallel_for(rows, (16384 + dim - 1) / dim, [&](std::int64_t r_begin, std::int64_t r_end) {
    for (std::int64_t r = r_begin; r < r_end; ++r) {
      const T* xr = px + r * dim;
      T* yr = py + r * dim;
      double sum = 0.0;
#pragma omp simd reduction(+ : sum)
      for (std::int64_t j = 0; j < dim; ++j) sum += static_cast<double>(xr[j]);
      const double mu = sum / static_cast<double>(dim);
      double sq = 0.0;
#pragma omp simd reduction(+ : sq)
      for (std::int64_t j = 0; j < dim; ++j) {
        const double d = static_cast<double>(xr[j]) - mu;
        sq += d * d;
      }
      const double rs = 1.0 / std::sqrt(sq / static_cast<double>(dim) + eps);
      // The output uses the stored (T-rounded) statistics, the same ones backward reads.
      const T m = static_cast<T>(mu), k = static_cast<T>(rs);
      pm[r] = m;
      pr[r] = k;
#pragma omp simd
      for (std::int64_t j = 0; j < dim; ++j)
        yr[j] = (xr[j] - m) * k * pg[j] + pb[j];
    }
  });
}

// With xhat = (x - mean) rstd and g = gy * gamma:
//   gx = rstd (g - mean_j(g) - xhat mean_j(g xhat)),  ggamma = sum_rows gy xhat,  gbeta = sum_rows gy.
template <class T>
void layernorm_backward_typed(const Tensor& x, const Tensor& gamma, const Tensor& mean, const Tensor& rstd,
                              const Tensor& gy, Tensor& gx, Tensor& ggamma, Tensor& gbeta, NormShape s) {
  const std::int64_t dim = s.dim;
  const T* px = x.data<T>();
  std::vector<T> ones(gamma.defined() ? 0 : static_cast<std::size_t>(dim), T(1));  // see layernorm_typed
  const T* pgam = gamma.defined() ? gamma.data<T>() : ones.data();
  const T* pm = mean.data<T>();
  const T* pr = rstd.data<T>();
  const T* pgy = gy.data<T>();
  T* pgx = gx.data<T>();
  const double inv_dim = 1.0 / static_cast<double>(dim);
  // xhat and g = gy * gamma of a row go through scratch buffers first: loops that mix them with
  // the double accumulations in one body vectorise poorly. (The values are the same.)
  constexpr std::int64_t kStackDim = 512;
  auto row = [&](std::int64_t r, double* acc_gamma, double* acc_beta) {
    T stack_buf[2 * kStackDim];
    std::vector<T> heap_buf(dim > kStackDim ? static_cast<std::size_t>(2 * dim) : 0);
    T* xh = dim > kStackDim ? heap_buf.data() : stack_buf;
    T* g = xh + (dim > kStackDim ? dim : kStackDim);
    const T* xr = px + r * dim;
    const T* gyr = pgy + r * dim;
    T* gxr = pgx + r * dim;
    const T m = pm[r], k = pr[r];
#pragma omp simd
    for (std::int64_t j = 0; j < dim; ++j) {
      xh[j] = (xr[j] - m) * k;
      g[j] = gyr[j] * pgam[j];
    }
    double sum_g = 0.0, sum_gx = 0.0;
#pragma omp simd reduction(+ : sum_g, sum_gx)
    for (std::int64_t j = 0; j < dim; ++j) {
      sum_g += static_cast<double>(g[j]);
      sum_gx += static_cast<double>(g[j]) * static_cast<double>(xh[j]);
    }
    if (acc_gamma) {
#pragma omp simd
      for (std::int64_t j = 0; j < dim; ++j) acc_gamma[j] += static_cast<double>(gyr[j]) * static_cast<double>(xh[j]);
    }
    if (acc_beta) {
#pragma omp simd
      for (std::int64_t j = 0; j < dim; ++j) acc_beta[j] += static_cast<double>(gyr[j]);
    }
    const T a = static_cast<T>(sum_g * inv_dim), b = static_cast<T>(sum_gx * inv_dim);
#pragma omp simd
    for (std::int64_t j = 0; j < dim; ++j) gxr[j] = k * (g[j] - a - xh[j] * b);
  };
  rows_with_column_sums<T>(s.rows, dim, ggamma.defined() ? ggamma.data<T>() : nullptr,
                           gbeta.defined() ? gbeta.data<T>() : nullptr, row);
}

template <class T>
void rmsnorm_typed(const Tensor& x, const Tensor& gamma, double eps, Tensor& y, Tensor& rstd, NormShape s) {
  const std::int64_t rows = s.rows, dim = s.dim;
  const T* px = x.data<T>();
  std::vector<T> ones(gamma.defined() ? 0 : static_cast<std::size_t>(dim), T(1));  // see layernorm_typed
  const T* pg = gamma.defined() ? gamma.data<T>() : ones.data();
  T* py = y.data<T>();
  T* pr = rstd.data<T>();
  cpu::parallel_for(rows, (16384 + dim - 1) / dim, [&](std::int64_t r_begin, std::int64_t r_end) {
    for (std::int64_t r = r_begin; r < r_end; ++r) {
      const T* xr = px + r * dim;
      T* yr = py + r * dim;
      double sq = 0.0;
#pragma omp simd reduction(+ : sq)
      for (std::int64_t j = 0; j < dim; ++j) sq += static_cast<double>(xr[j]) * static_cast<double>(xr[j]);
      const T k = static_cast<T>(1.0 / std::sqrt(sq / static_cast<double>(dim) + eps));
      pr[r] = k;
#pragma omp simd
      for (std::int64_t j = 0; j < dim; ++j) yr[j] = xr[j] * k * pg[j];
    }
  });
}

// With xhat = x rstd and g = gy * gamma: gx = rstd (g - xhat mean_j(g xhat)), ggamma = sum_rows gy xhat.
template <class T>
void rmsnorm_backward_typed(const Tensor& x, const Tensor& gamma, const Tensor& rstd, const Tensor& gy,
                            Tensor& gx, Tensor& ggamma, NormShape s) {
  const std::int64_t dim = s.dim;
  const T* px = x.data<T>();
  std::vector<T> ones(gamma.defined() ? 0 : static_cast<std::size_t>(dim), T(1));  // see layernorm_typed
  const T* pgam = gamma.defined() ? gamma.data<T>() : ones.data();
  const T* pr = rstd.data<T>();
  const T* pgy = gy.data<T>();
  T* pgx = gx.data<T>();
  const double inv_dim = 1.0 / static_cast<double>(dim);
  auto row = [&](std::int64_t r, double* acc_gamma, double*) {
    const T* xr = px + r * dim;
    const T* gyr = pgy + r * dim;
    T* gxr = pgx + r * dim;
    const T k = pr[r];
    double sum_gx = 0.0;
#pragma omp simd reduction(+ : sum_gx)
    for (std::int64_t j = 0; j < dim; ++j)
      sum_gx += static_cast<double>(gyr[j] * pgam[j]) * static_cast<double>(xr[j] * k);
    if (acc_gamma) {
#pragma omp simd
      for (std::int64_t j = 0; j < dim; ++j)
        acc_gamma[j] += static_cast<double>(gyr[j]) * static_cast<double>(xr[j] * k);
    }
    const T b = static_cast<T>(sum_gx * inv_dim);
#pragma omp simd
    for (std::int64_t j = 0; j < dim; ++j) gxr[j] = k * (gyr[j] * pgam[j] - xr[j] * k * b);
  };
  rows_with_column_sums<T>(s.rows, dim, ggamma.defined() ? ggamma.data<T>() : nullptr, nullptr, row);
}

}  // namespace

void CpuBackend::layernorm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps, Tensor& y,
                           Tensor& mean, Tensor& rstd) {
  const NormShape s = row_checks::check_layernorm(x, gamma, beta, y, mean, rstd);
  dispatch_floating(x.dtype(), "layernorm",
                    [&](auto t) { layernorm_typed<decltype(t)>(x, gamma, beta, eps, y, mean, rstd, s); });
}

void CpuBackend::layernorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& mean, const Tensor& rstd,
                                    const Tensor& gy, Tensor& gx, Tensor& ggamma, Tensor& gbeta) {
  const NormShape s = row_checks::check_layernorm_backward(x, gamma, mean, rstd, gy, gx, ggamma, gbeta);
  dispatch_floating(x.dtype(), "layernorm_backward", [&](auto t) {
    layernorm_backward_typed<decltype(t)>(x, gamma, mean, rstd, gy, gx, ggamma, gbeta, s);
  });
}

void CpuBackend::rmsnorm(const Tensor& x, const Tensor& gamma, double eps, Tensor& y, Tensor& rstd) {
  const NormShape s = row_checks::check_rmsnorm(x, gamma, y, rstd);
  dispatch_floating(x.dtype(), "rmsnorm", [&](auto t) { rmsnorm_typed<decltype(t)>(x, gamma, eps, y, rstd, s); });
}

void CpuBackend::rmsnorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& rstd, const Tensor& gy,
                                  Tensor& gx, Tensor& ggamma) {
  const NormShape s = row_checks::check_rmsnorm_backward(x, gamma, rstd, gy, gx, ggamma);
  dispatch_floating(x.dtype(), "rmsnorm_backward", [&](auto t) {
    rmsnorm_backward_typed<decltype(t)>(x, gamma, rstd, gy, gx, ggamma, s);
  });
}

}  // namespace upcycle
