#pragma once
// Argument checks and the output layout of the clustering kernels (normalize_rows, cluster_sums),
// shared by the CPU kernels (cpu_cluster.cpp) and the CUDA ones (kernels/cluster.cu) so that a bad
// call fails the same way on every device and both write the same layout.
#include <cstdint>

#include "upcycle/core/tensor.hpp"

namespace upcycle {

struct NormalizeRowsDims {
  std::int64_t rows, cols;
};

inline NormalizeRowsDims check_normalize_rows_args(const Tensor& x, const Tensor& out, const Tensor& norms) {
  UPCYCLE_CHECK(x.defined() && x.ndim() == 2, "normalize_rows: x must be [n, D], got ",
                x.defined() ? describe(x) : std::string("undefined"));
  UPCYCLE_CHECK(out.defined() && out.dtype() == x.dtype() && out.shape() == x.shape(), "normalize_rows: out must be ",
                describe(x), " like x, got ", out.defined() ? describe(out) : std::string("undefined"));
  UPCYCLE_CHECK(norms.defined() && norms.dtype() == DType::f64 && norms.numel() == x.dim(0),
                "normalize_rows: norms must be f64 [", x.dim(0), "], got ",
                norms.defined() ? describe(norms) : std::string("undefined"));
  return {x.dim(0), x.dim(1)};
}

// Where cluster_sums puts what: sums [K, D] first, then the K sizes, the score sum and the count
// of changed assignments.
struct ClusterSumsLayout {
  std::int64_t rows = 0, dim = 0, clusters = 0, chunk_rows = 1;
  std::int64_t sizes() const { return clusters * dim; }
  std::int64_t score() const { return clusters * dim + clusters; }
  std::int64_t changed() const { return score() + 1; }
  std::int64_t stride() const { return score() + 2; }  // doubles per chunk partial (and of out)
  std::int64_t chunks() const { return rows == 0 ? 0 : (rows - 1) / chunk_rows + 1; }
};

inline ClusterSumsLayout check_cluster_sums_args(const Tensor& points, const Tensor& score, const Tensor& assignment,
                                                 const Tensor& previous, std::int64_t clusters,
                                                 std::int64_t chunk_rows, const Tensor& out) {
  UPCYCLE_CHECK(points.defined() && points.ndim() == 2, "cluster_sums: points must be [n, D], got ",
                points.defined() ? describe(points) : std::string("undefined"));
  const std::int64_t n = points.dim(0);
  UPCYCLE_CHECK(clusters >= 1, "cluster_sums: clusters must be >= 1, got ", clusters);
  UPCYCLE_CHECK(chunk_rows >= 1, "cluster_sums: chunk_rows must be >= 1, got ", chunk_rows);
  UPCYCLE_CHECK(score.defined() && score.dtype() == points.dtype() && score.numel() == n,
                "cluster_sums: score must be ", dtype_name(points.dtype()), " [", n, "] (one per point), got ",
                score.defined() ? describe(score) : std::string("undefined"));
  for (const Tensor* t : {&assignment, &previous}) {
    UPCYCLE_CHECK(t->defined() && t->dtype() == DType::i64 && t->numel() == n, "cluster_sums: ",
                  t == &assignment ? "assignment" : "previous", " must be i64 [", n, "], got ",
                  t->defined() ? describe(*t) : std::string("undefined"));
  }
  ClusterSumsLayout l{n, points.dim(1), clusters, chunk_rows};
  UPCYCLE_CHECK(out.defined() && out.dtype() == DType::f64 && out.numel() == l.stride(),
                "cluster_sums: out must be f64 [", l.stride(), "] (K D + K + 2 for K = ", clusters, ", D = ", l.dim,
                "), got ", out.defined() ? describe(out) : std::string("undefined"));
  return l;
}

}  // namespace upcycle
