// Cluster-aware upcycling (docs/methods.md section 2, steps 2-5), for one MoE block:
//   spherical k-means with K = E on the calibration tokens (every rank ends with the same
//   centroids) -> per cluster the float64 second moment G_i = X_i^T X_i, all-reduced -> expert i's
//   up-projection = the whitened truncated SVD of W1 on its cluster -> router = the centroids.
// The SVD of expert i runs on world rank i mod W (the work spreads over all ranks, not only the EP
// group); the other ranks receive it through one all-reduce of the stacked W1s.
//
// Where: on the device of the calibration tokens. On the host (a CPU run) the second moments are
// dsyrk updates and the SVD the LAPACK path; when the tokens are on a GPU, k-means, the second
// moments (init/second_moments.hpp) and the whitened SVDs (whitened_truncated_svd_on_device:
// cuSOLVER) run there, and only each expert's W1 [F, D] comes to the host to be assembled.
#include <cblas.h>

#include <chrono>
#include <cstring>
#include <sstream>

#include "upcycle/backend/backend.hpp"
#include "upcycle/init/ffn_upcycling.hpp"
#include "upcycle/init/second_moments.hpp"

namespace upcycle::init {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// G [E, D, D] f64: per cluster the sum of x x^T over this rank's tokens x of that cluster.
Tensor local_second_moments(const Tensor& points, const Tensor& assignment, std::int64_t E) {
  const std::int64_t n = points.dim(0), D = points.dim(1);
  Tensor g = Tensor::zeros({E, D, D}, DType::f64, Device::cpu);
  const float* x = points.data<float>();
  const std::int64_t* a = assignment.data<std::int64_t>();
  std::vector<std::int64_t> count(static_cast<std::size_t>(E), 0);
  for (std::int64_t t = 0; t < n; ++t) ++count[static_cast<std::size_t>(a[t])];
  for (std::int64_t c = 0; c < E; ++c) {
    const std::int64_t m = count[static_cast<std::size_t>(c)];
    if (m == 0) continue;
    // The cluster's rows in double, then one rank-m update of the upper triangle (dsyrk).
    std::vector<double> rows(static_cast<std::size_t>(m * D));
    std::int64_t r = 0;
    for (std::int64_t t = 0; t < n; ++t) {
      if (a[t] != c) continue;
      for (std::int64_t j = 0; j < D; ++j) rows[static_cast<std::size_t>(r * D + j)] = x[t * D + j];
      ++r;
    }
    double* gc = g.data<double>() + c * D * D;
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, static_cast<int>(D), static_cast<int>(m), 1.0, rows.data(),
                static_cast<int>(D), 0.0, gc, static_cast<int>(D));
    for (std::int64_t i = 0; i < D; ++i)
      for (std::int64_t j = 0; j < i; ++j) gc[i * D + j] = gc[j * D + i];
  }
  return g;
}

}  // namespace

ExpertSet upcycle_cluster(const BlockContext& ctx, const DenseFfn& dense, BlockReport& report) {
  UPCYCLE_CHECK(ctx.calibration != nullptr && ctx.world != nullptr,
                "cluster upcycling needs calibration tokens and the world communicator");
  const auto& o = ctx.options;
  Communicator& world = *ctx.world;
  const CalibrationShard& cal = *ctx.calibration;
  const std::int64_t E = o.num_experts, D = dense.d_model();
  UPCYCLE_CHECK(cal.points.ndim() == 2 && cal.points.dim(1) == D, "cluster upcycling of block ", ctx.block,
                ": calibration tokens are ", describe(cal.points), ", expected [n, ", D, "]");

  auto t0 = std::chrono::steady_clock::now();
  KMeansOptions ko;
  ko.clusters = E;
  ko.max_iters = o.kmeans_iters;
  ko.init_sample = o.kmeans_init_sample;
  ko.seed = upcycle_stream(o.seed, ctx.block).seed();
  const KMeansResult km = spherical_kmeans(cal.points, cal.global_ids, ko, world);
  report.kmeans = km.history;
  report.cluster_sizes = km.sizes;
  report.seconds.emplace_back("kmeans", seconds_since(t0));

  const bool on_device = cal.points.device() != Device::cpu;
  t0 = std::chrono::steady_clock::now();
  Tensor g = on_device ? cluster_second_moments(cal.points, km.assignment, E)
                       : local_second_moments(cal.points, km.assignment, E);
  world.all_reduce(g);
  if (on_device) backend_for(g.device()).synchronize();  // the phase's time includes its device work
  report.seconds.emplace_back("second_moment", seconds_since(t0));

  t0 = std::chrono::steady_clock::now();
  ExpertSet s = replicate_dense(dense, E);
  const std::int64_t w1_size = dense.w1.numel();
  std::memset(s.w1.data<float>(), 0, s.w1.nbytes());
  // Per expert: rank, energy kept, jitter, fallback (summed over ranks: only the owner writes).
  Tensor info = Tensor::zeros({E, 4}, DType::f64, Device::cpu);
  double* pi = info.data<double>();
  for (std::int64_t e = world.rank(); e < E; e += world.size()) {
    WhitenedSvdOptions svd = o.svd;
    RngStream subspace_rng(upcycle_stream(o.seed, ctx.block).seed(), static_cast<std::uint64_t>(e + 1) << 40);
    if (o.random_subspace) svd.random_subspace = &subspace_rng;
    WhitenedSvdResult r;
    if (on_device) {
      r = whitened_truncated_svd_on_device(dense.w1, g.rows(e, e + 1).reshape({D, D}), svd);
    } else {
      const Tensor ge = Tensor::from_vector<double>(
          std::vector<double>(g.data<double>() + e * D * D, g.data<double>() + (e + 1) * D * D), {D, D}, Device::cpu);
      r = whitened_truncated_svd(dense.w1, ge, svd);
    }
    const Tensor expert = r.w1.to(Device::cpu);
    std::memcpy(s.w1.data<float>() + e * w1_size, expert.data<float>(),
                static_cast<std::size_t>(w1_size) * sizeof(float));
    pi[e * 4 + 0] = static_cast<double>(r.rank);
    pi[e * 4 + 1] = r.energy_kept;
    pi[e * 4 + 2] = r.jitter;
    pi[e * 4 + 3] = r.fallback ? 1.0 : 0.0;
  }
  world.all_reduce(s.w1);
  world.all_reduce(info);
  for (std::int64_t e = 0; e < E; ++e) {
    report.svd_ranks.push_back(static_cast<std::int64_t>(pi[e * 4 + 0]));
    report.energy_kept.push_back(pi[e * 4 + 1]);
    if (pi[e * 4 + 3] > 0) {
      std::ostringstream note;
      note << "block " << ctx.block << " expert " << e << " (" << km.sizes[static_cast<std::size_t>(e)]
           << " tokens): the second moment was not positive definite with upcycle.chol_eps = " << o.svd.chol_eps
           << "; Cholesky succeeded with an absolute jitter of " << pi[e * 4 + 2];
      report.notes.push_back(note.str());
    }
  }
  report.seconds.emplace_back("svd", seconds_since(t0));

  s.router = km.centroids.clone();
  if (o.router_scale != 1.0) {
    float* pr = s.router.data<float>();
    for (std::int64_t i = 0; i < s.router.numel(); ++i) pr[i] = static_cast<float>(pr[i] * o.router_scale);
  }
  return s;
}

}  // namespace upcycle::init
