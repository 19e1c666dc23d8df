// The clustering kernels of spherical k-means: unit rows and the sums of an assignment step. Both
// fix their arithmetic order (a row's squares in index order; cluster_sums in the chunks the
// caller names), so the thread count never changes a bit.
#include <algorithm>
#include <cmath>
#include <limits>

#include "backend/checks_cluster.hpp"
#include "cpu_backend.hpp"
#include "cpu_parallel.hpp"

namespace upcycle {

namespace {

template <class T>
void normalize_rows_typed(const Tensor& x, Tensor& out, Tensor& norms, std::int64_t n, std::int64_t d) {
  const T* src = x.data<T>();
  T* dst = out.data<T>();
  double* pn = norms.data<double>();
  cpu::parallel_for(n, 256, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t t = b; t < e; ++t) {
      const T* r = src + t * d;
      double s = 0;
      for (std::int64_t j = 0; j < d; ++j) s += static_cast<double>(r[j]) * r[j];
      const double norm = std::sqrt(s);
      pn[t] = norm;
      T* o = dst + t * d;
      if (std::isfinite(norm) && norm != 0.0) {
        const double inv = 1.0 / norm;
        for (std::int64_t j = 0; j < d; ++j) o[j] = static_cast<T>(r[j] * inv);
      } else {
        std::fill(o, o + d, T(0));
      }
    }
  });
}

// Throws naming the first position whose cluster is outside [0, K), before anything is summed.
void check_assignment(const std::int64_t* a, std::int64_t n, std::int64_t clusters) {
  for (std::int64_t t = 0; t < n; ++t)
    if (a[t] < 0 || a[t] >= clusters)
      UPCYCLE_THROW("cluster_sums: assignment ", a[t], " at position ", t, " is out of range [0, ", clusters, ")");
}

template <class T>
void cluster_sums_typed(const ClusterSumsLayout& l, const Tensor& points, const Tensor& score,
                        const std::int64_t* a, const std::int64_t* prev, double* partial, double* out) {
  const std::int64_t n = l.rows, D = l.dim, stride = l.stride(), chunks = l.chunks();
  const T* x = points.data<T>();
  const T* sc = score.data<T>();
  cpu::parallel_for(chunks, 1, [&](std::int64_t c0, std::int64_t c1) {
    for (std::int64_t c = c0; c < c1; ++c) {
      const std::int64_t t0 = c * l.chunk_rows, t1 = std::min(n, t0 + l.chunk_rows);
      double* part = partial + c * stride;
      std::fill(part, part + stride, 0.0);
      double* sizes = part + l.sizes();
      double objective = 0, changed = 0;
      for (std::int64_t t = t0; t < t1; ++t) {
        const std::int64_t e = a[t];
        objective += sc[t];
        changed += e != prev[t] ? 1.0 : 0.0;
        sizes[e] += 1.0;
        double* acc = part + e * D;
        const T* u = x + t * D;
#pragma omp simd
        for (std::int64_t j = 0; j < D; ++j) acc[j] += u[j];
      }
      part[l.score()] = objective;
      part[l.changed()] = changed;
    }
  });
  // Each element of out independently: its chunk partials in chunk order.
  cpu::parallel_for(stride, 2048, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i) {
      double v = 0;
      for (std::int64_t c = 0; c < chunks; ++c) v += partial[c * stride + i];
      out[i] = v;
    }
  });
}

}  // namespace

void CpuBackend::normalize_rows(const Tensor& x, Tensor& out, Tensor& norms) {
  const NormalizeRowsDims d = check_normalize_rows_args(x, out, norms);
  dispatch_floating(x.dtype(), "normalize_rows",
                    [&](auto t) { normalize_rows_typed<decltype(t)>(x, out, norms, d.rows, d.cols); });
}

void CpuBackend::cluster_sums(const Tensor& points, const Tensor& score, const Tensor& assignment,
                              const Tensor& previous, std::int64_t clusters, std::int64_t chunk_rows, Tensor& out) {
  const ClusterSumsLayout l = check_cluster_sums_args(points, score, assignment, previous, clusters, chunk_rows, out);
  const std::int64_t* a = assignment.data<std::int64_t>();
  check_assignment(a, l.rows, clusters);
  double* partial = static_cast<double*>(
      workspace(static_cast<std::size_t>(std::max<std::int64_t>(1, l.chunks() * l.stride())) * sizeof(double)));
  dispatch_floating(points.dtype(), "cluster_sums", [&](auto t) {
    cluster_sums_typed<decltype(t)>(l, points, score, a, previous.data<std::int64_t>(), partial, out.data<double>());
  });
}

}  // namespace upcycle
