// Per-cluster float64 second moments on the tokens' device (include/upcycle/init/second_moments.hpp).
#include "upcycle/init/second_moments.hpp"

#include <vector>

#include "upcycle/backend/backend.hpp"

namespace upcycle::init {

Tensor cluster_second_moments(const Tensor& points, const Tensor& assignment, std::int64_t clusters) {
  UPCYCLE_CHECK(points.defined() && points.ndim() == 2 && is_floating(points.dtype()),
                "cluster_second_moments: points must be a floating [n, D] matrix, got ",
                points.defined() ? describe(points) : std::string("undefined"));
  const std::int64_t n = points.dim(0), d = points.dim(1);
  UPCYCLE_CHECK(clusters >= 1, "cluster_second_moments: clusters must be >= 1, got ", clusters);
  UPCYCLE_CHECK(assignment.defined() && assignment.dtype() == DType::i64 && assignment.numel() == n &&
                    assignment.device() == points.device(),
                "cluster_second_moments: assignment must be i64 [", n, "] on the points' device, got ",
                assignment.defined() ? describe(assignment) : std::string("undefined"));
  const Device device = points.device();
  Backend& be = backend_for(device);
  Tensor g = Tensor::zeros({clusters, d, d}, DType::f64, device);
  if (n == 0 || d == 0) return g;

  // The tokens by cluster, stably (moe_dispatch with one slot per token and no capacity).
  Tensor counts = Tensor::empty({2, clusters}, DType::i64, device);
  Tensor order = Tensor::empty({n}, DType::i64, device), tokens = Tensor::empty({n}, DType::i64, device);
  Tensor dropped = Tensor::empty({n}, DType::i64, device);
  be.moe_dispatch(assignment.reshape({n, 1}), clusters, 0, counts, order, tokens, dropped);
  const std::vector<std::int64_t> sizes = counts.to_vector<std::int64_t>();  // row 0: tokens per cluster

  std::int64_t first = 0;
  for (std::int64_t e = 0; e < clusters; ++e) {
    const std::int64_t m = sizes[static_cast<std::size_t>(e)];
    if (m == 0) continue;
    Tensor rows = Tensor::empty({m, d}, points.dtype(), device);
    be.gather_rows(points, order.rows(first, first + m), rows);
    const Tensor x = rows.to(DType::f64);
    Tensor ge = g.rows(e, e + 1).reshape({d, d});
    GemmDesc desc;  // G_e = X_e^T X_e
    desc.m = d;
    desc.n = d;
    desc.k = m;
    desc.trans_a = true;
    be.gemm(desc, x, x, ge);
    first += m;
  }
  return g;
}

}  // namespace upcycle::init
