// LayerNorm and RMSNorm over the last dim of [rows, D], and their gradients. As on the CPU, row
// statistics are accumulated in double (f32 too), the variance takes two passes around the mean
// (biased, divides by D), outputs use the T-rounded statistics that backward reads, and an
// undefined gamma / beta reads as ones / zeros.
//
// The gamma / beta gradients are column sums over all rows. They are deterministic without float
// atomics: one thread per (column, row chunk) sums its chunk in row order into a double partial
// in the workspace, then one thread per column adds its partials in chunk order
// (rows_math.hpp: column_chunks). They run before the row kernel that writes gx, so gx may alias
// gy or x as on the CPU.
#include <cstdint>

#include "backend/checks_rows.hpp"
#include "cuda_common.cuh"
#include "row_common.cuh"

namespace upcycle {

namespace {

using cuda::rows::BlockPerRow;
using cuda::rows::WarpPerRow;
using row_checks::NormShape;

constexpr int kColumnThreads = 256;

// CPU twin: layernorm_typed in src/backend/cpu/cpu_norm.cpp.
template <class T, class Group>
__global__ void __launch_bounds__(Group::kMaxThreads)
    layernorm_rows(const T* x, const T* gamma, const T* beta, double eps, T* y, T* mean, T* rstd, std::int64_t rows,
                   std::int64_t dim) {
  const int rank = Group::rank(), size = Group::size();
  for (std::int64_t r = Group::first_row(); r < rows; r += Group::row_stride()) {
    const T* xr = x + r * dim;
    T* yr = y + r * dim;
    double sum = 0.0;
    for (std::int64_t j = rank; j < dim; j += size) sum += static_cast<double>(xr[j]);
    const double mu = Group::sum(sum) / static_cast<double>(dim);
    double sq = 0.0;
    for (std::int64_t j = rank; j < dim; j += size) {
      const double d = static_cast<double>(xr[j]) - mu;
      sq += d * d;
    }
    const double rs = 1.0 / sqrt(Group::sum(sq) / static_cast<double>(dim) + eps);
    const T m = static_cast<T>(mu), k = static_cast<T>(rs);
    if (rank == 0) {
      mean[r] = m;
      rstd[r] = k;
    }
    for (std::int64_t j = rank; j < dim; j += size) {
      const T g = gamma ? gamma[j] : T(1), b = beta ? beta[j] : T(0);
      yr[j] = (xr[j] - m) * k * g + b;
    }
  }
}

// CPU twin: layernorm_backward_typed (its per-row part) in src/backend/cpu/cpu_norm.cpp. With
// xhat = (x - mean) rstd and g = gy gamma: gx = rstd (g - mean_j(g) - xhat mean_j(g xhat)).
template <class T, class Group>
__global__ void __launch_bounds__(Group::kMaxThreads)
    layernorm_backward_rows(const T* x, const T* gamma, const T* mean, const T* rstd, const T* gy, T* gx,
                            std::int64_t rows, std::int64_t dim) {
  const int rank = Group::rank(), size = Group::size();
  const double inv_dim = 1.0 / static_cast<double>(dim);
  for (std::int64_t r = Group::first_row(); r < rows; r += Group::row_stride()) {
    const T* xr = x + r * dim;
    const T* gyr = gy + r * dim;
    T* gxr = gx + r * dim;
    const T m = mean[r], k = rstd[r];
    double sum_g = 0.0, sum_gx = 0.0;
    for (std::int64_t j = rank; j < dim; j += size) {
      const T xh = (xr[j] - m) * k;
      const T g = gyr[j] * (gamma ? gamma[j] : T(1));
      sum_g += static_cast<double>(g);
      sum_gx += static_cast<double>(g) * static_cast<double>(xh);
    }
    Group::sum2(sum_g, sum_gx);
    const T a = static_cast<T>(sum_g * inv_dim), b = static_cast<T>(sum_gx * inv_dim);
    for (std::int64_t j = rank; j < dim; j += size) {
      const T xh = (xr[j] - m) * k;
      const T g = gyr[j] * (gamma ? gamma[j] : T(1));
      gxr[j] = k * (g - a - xh * b);
    }
  }
}

// CPU twin: rmsnorm_typed in src/backend/cpu/cpu_norm.cpp.
template <class T, class Group>
__global__ void __launch_bounds__(Group::kMaxThreads)
    rmsnorm_rows(const T* x, const T* gamma, double eps, T* y, T* rstd, std::int64_t rows, std::int64_t dim) {
  const int rank = Group::rank(), size = Group::size();
  for (std::int64_t r = Group::first_row(); r < rows; r += Group::row_stride()) {
    const T* xr = x + r * dim;
    T* yr = y + r * dim;
    double sq = 0.0;
    for (std::int64_t j = rank; j < dim; j += size) sq += static_cast<double>(xr[j]) * static_cast<double>(xr[j]);
    const T k = static_cast<T>(1.0 / sqrt(Group::sum(sq) / static_cast<double>(dim) + eps));
    if (rank == 0) rstd[r] = k;
    for (std::int64_t j = rank; j < dim; j += size) yr[j] = xr[j] * k * (gamma ? gamma[j] : T(1));
  }
}

// CPU twin: rmsnorm_backward_typed (its per-row part) in src/backend/cpu/cpu_norm.cpp. With
// xhat = x rstd and g = gy gamma: gx = rstd (g - xhat mean_j(g xhat)).
template <class T, class Group>
__global__ void __launch_bounds__(Group::kMaxThreads)
    rmsnorm_backward_rows(const T* x, const T* gamma, const T* rstd, const T* gy, T* gx, std::int64_t rows,
                          std::int64_t dim) {
  const int rank = Group::rank(), size = Group::size();
  const double inv_dim = 1.0 / static_cast<double>(dim);
  for (std::int64_t r = Group::first_row(); r < rows; r += Group::row_stride()) {
    const T* xr = x + r * dim;
    const T* gyr = gy + r * dim;
    T* gxr = gx + r * dim;
    const T k = rstd[r];
    double sum_gx = 0.0;
    for (std::int64_t j = rank; j < dim; j += size)
      sum_gx += static_cast<double>(gyr[j] * (gamma ? gamma[j] : T(1))) * static_cast<double>(xr[j] * k);
    const T b = static_cast<T>(Group::sum(sum_gx) * inv_dim);
    for (std::int64_t j = rank; j < dim; j += size)
      gxr[j] = k * (gyr[j] * (gamma ? gamma[j] : T(1)) - xr[j] * k * b);
  }
}

// CPU twin: the row_fn accumulations of layernorm_backward_typed / rmsnorm_backward_typed in
// src/backend/cpu/cpu_norm.cpp (rows_with_column_sums). Thread (column j, chunk blockIdx.y) sums
// gy xhat (and gy) over the chunk's rows in row order; xhat = (x - mean) rstd, or x rstd for
// RMSNorm (mean null). Consecutive threads read consecutive columns of a row: coalesced.
template <class T>
__global__ void column_partials(const T* x, const T* mean, const T* rstd, const T* gy, std::int64_t rows,
                                std::int64_t dim, std::int64_t chunks, double* part_gamma, double* part_beta) {
  const std::int64_t j = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= dim) return;
  const std::int64_t c = blockIdx.y;
  double acc_gamma = 0.0, acc_beta = 0.0;
  const std::int64_t end = cuda::chunk_begin(c + 1, rows, chunks);
  for (std::int64_t r = cuda::chunk_begin(c, rows, chunks); r < end; ++r) {
    const T g = gy[r * dim + j];
    const T xh = mean ? (x[r * dim + j] - mean[r]) * rstd[r] : x[r * dim + j] * rstd[r];
    acc_gamma += static_cast<double>(g) * static_cast<double>(xh);
    acc_beta += static_cast<double>(g);
  }
  if (part_gamma) part_gamma[c * dim + j] = acc_gamma;
  if (part_beta) part_beta[c * dim + j] = acc_beta;
}

// CPU twin: the final loop of rows_with_column_sums in src/backend/cpu/cpu_norm.cpp: each column's
// partials added in chunk order (zero when there are no rows).
template <class T>
__global__ void column_finish(const double* part_gamma, const double* part_beta, std::int64_t chunks,
                              std::int64_t dim, T* ggamma, T* gbeta) {
  for (std::int64_t j = cuda::grid_first(); j < dim; j += cuda::grid_stride()) {
    double sa = 0.0, sb = 0.0;
    for (std::int64_t c = 0; c < chunks; ++c) {
      if (ggamma) sa += part_gamma[c * dim + j];
      if (gbeta) sb += part_beta[c * dim + j];
    }
    if (ggamma) ggamma[j] = static_cast<T>(sa);
    if (gbeta) gbeta[j] = static_cast<T>(sb);
  }
}

template <class T>
T* optional_ptr(const Tensor& t, const char* what) {
  return t.defined() ? cuda::device_ptr<T>(t, what) : nullptr;
}

// The gamma / beta gradient column sums: partials into the workspace, then one ordered pass.
template <class T>
void launch_column_sums(CudaBackend& be, const T* x, const T* mean, const T* rstd, const T* gy, NormShape s,
                        T* ggamma, T* gbeta) {
  if (!ggamma && !gbeta) return;
  const std::int64_t chunks = cuda::column_chunks(s.rows, s.dim);
  double* part_gamma = nullptr;
  double* part_beta = nullptr;
  if (chunks > 0) {
    const std::size_t slab = static_cast<std::size_t>(chunks * s.dim);
    double* ws = static_cast<double*>(be.workspace(((ggamma ? 1 : 0) + (gbeta ? 1 : 0)) * slab * sizeof(double)));
    part_gamma = ggamma ? ws : nullptr;
    part_beta = gbeta ? ws + (ggamma ? slab : 0) : nullptr;
    const dim3 grid(static_cast<unsigned>(cuda::ceil_div(s.dim, kColumnThreads)), static_cast<unsigned>(chunks));
    column_partials<T><<<grid, kColumnThreads, 0, be.stream()>>>(x, mean, rstd, gy, s.rows, s.dim, chunks,
                                                                 part_gamma, part_beta);
    UPCYCLE_CUDA_CHECK_LAUNCH();
  }
  column_finish<T><<<cuda::grid_blocks(s.dim), cuda::kBlockThreads, 0, be.stream()>>>(part_gamma, part_beta, chunks,
                                                                                      s.dim, ggamma, gbeta);
  UPCYCLE_CUDA_CHECK_LAUNCH();
}

}  // namespace

void CudaBackend::layernorm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps, Tensor& y,
                            Tensor& mean, Tensor& rstd) {
  const NormShape s = row_checks::check_layernorm(x, gamma, beta, y, mean, rstd);
  dispatch_floating(x.dtype(), "layernorm", [&](auto tag) {
    using T = decltype(tag);
    cuda::rows::launch_rows(s.rows, s.dim, stream(), layernorm_rows<T, WarpPerRow>, layernorm_rows<T, BlockPerRow>,
                            cuda::device_ptr<T>(x, "layernorm x"), optional_ptr<T>(gamma, "layernorm gamma"),
                            optional_ptr<T>(beta, "layernorm beta"), eps, cuda::device_ptr<T>(y, "layernorm y"),
                            cuda::device_ptr<T>(mean, "layernorm mean"), cuda::device_ptr<T>(rstd, "layernorm rstd"),
                            s.rows, s.dim);
  });
}

void CudaBackend::layernorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& mean, const Tensor& rstd,
                                     const Tensor& gy, Tensor& gx, Tensor& ggamma, Tensor& gbeta) {
  const NormShape s = row_checks::check_layernorm_backward(x, gamma, mean, rstd, gy, gx, ggamma, gbeta);
  dispatch_floating(x.dtype(), "layernorm_backward", [&](auto tag) {
    using T = decltype(tag);
    const T* px = cuda::device_ptr<T>(x, "layernorm_backward x");
    const T* pgam = optional_ptr<T>(gamma, "layernorm_backward gamma");
    const T* pm = cuda::device_ptr<T>(mean, "layernorm_backward mean");
    const T* pr = cuda::device_ptr<T>(rstd, "layernorm_backward rstd");
    const T* pgy = cuda::device_ptr<T>(gy, "layernorm_backward gy");
    T* pgx = cuda::device_ptr<T>(gx, "layernorm_backward gx");
    T* pgg = optional_ptr<T>(ggamma, "layernorm_backward ggamma");
    T* pgb = optional_ptr<T>(gbeta, "layernorm_backward gbeta");
    launch_column_sums<T>(*this, px, pm, pr, pgy, s, pgg, pgb);
    cuda::rows::launch_rows(s.rows, s.dim, stream(), layernorm_backward_rows<T, WarpPerRow>,
                            layernorm_backward_rows<T, BlockPerRow>, px, pgam, pm, pr, pgy, pgx, s.rows, s.dim);
  });
}

void CudaBackend::rmsnorm(const Tensor& x, const Tensor& gamma, double eps, Tensor& y, Tensor& rstd) {
  const NormShape s = row_checks::check_rmsnorm(x, gamma, y, rstd);
  dispatch_floating(x.dtype(), "rmsnorm", [&](auto tag) {
    using T = decltype(tag);
    cuda::rows::launch_rows(s.rows, s.dim, stream(), rmsnorm_rows<T, WarpPerRow>, rmsnorm_rows<T, BlockPerRow>,
                            cuda::device_ptr<T>(x, "rmsnorm x"), optional_ptr<T>(gamma, "rmsnorm gamma"), eps,
                            cuda::device_ptr<T>(y, "rmsnorm y"), cuda::device_ptr<T>(rstd, "rmsnorm rstd"), s.rows,
                            s.dim);
  });
}

void CudaBackend::rmsnorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& rstd, const Tensor& gy,
                                   Tensor& gx, Tensor& ggamma) {
  const NormShape s = row_checks::check_rmsnorm_backward(x, gamma, rstd, gy, gx, ggamma);
  dispatch_floating(x.dtype(), "rmsnorm_backward", [&](auto tag) {
    using T = decltype(tag);
    const T* px = cuda::device_ptr<T>(x, "rmsnorm_backward x");
    const T* pgam = optional_ptr<T>(gamma, "rmsnorm_backward gamma");
    const T* pr = cuda::device_ptr<T>(rstd, "rmsnorm_backward rstd");
    const T* pgy = cuda::device_ptr<T>(gy, "rmsnorm_backward gy");
    T* pgx = cuda::device_ptr<T>(gx, "rmsnorm_backward gx");
    T* pgg = optional_ptr<T>(ggamma, "rmsnorm_backward ggamma");
    launch_column_sums<T>(*this, px, static_cast<const T*>(nullptr), pr, pgy, s, pgg, static_cast<T*>(nullptr));
    cuda::rows::launch_rows(s.rows, s.dim, stream(), rmsnorm_backward_rows<T, WarpPerRow>,
                            rmsnorm_backward_rows<T, BlockPerRow>, px, pgam, pr, pgy, pgx, s.rows, s.dim);
  });
}

}  // namespace upcycle
