#pragma once
// The two paths of the whitened truncated SVD (include/upcycle/init/whitened_svd.hpp) on the same
// input: the host path (LAPACKE, SVD of W1 S) and the device path (eigen-decomposition of
// (W1 S)^T (W1 S), on the second moment's device). Shared by the CPU test that runs the device
// path on host tensors and the GPU test that runs it on cuda tensors.
//
// What must agree: every decision (rank, jitter, fallback, note) exactly, since both call the same
// rules on the same numbers... up to where the numbers differ: the jitter and the note come from G
// alone (identical input), the rank from sigma (computed two ways; the planted problems keep every
// rank decision far from its threshold). What agrees to rounding: sigma, the energies, W1_r and
// the kept subspace span(V_r), compared as projectors (the singular vectors are defined only up to
// sign).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "gradcheck.hpp"
#include "upcycle/init/linalg.hpp"
#include "upcycle/init/whitened_svd.hpp"

namespace upcycle::testing {

// An input with a known whitened spectrum: G = S0 S0^T (S0 lower triangular with a positive
// diagonal, so chol(G) = S0 without jitter) and W1 = U diag(sigma) V^T S0^-1 [F, D], so that
// W1 S0 has singular values `sigma` exactly. cond(S0) <= 3 by construction.
struct PlantedSvd {
  Tensor w1, g;
  std::vector<double> sigma;
};

inline PlantedSvd planted_svd(std::int64_t f, std::int64_t d, const std::vector<double>& sigma, std::uint64_t seed,
                              DType w1_dtype = DType::f64) {
  using namespace init;
  const auto k = static_cast<std::int64_t>(sigma.size());
  Matrix u = orthonormal_columns(to_matrix(randn_tensor({f, k}, seed)));
  const Matrix v = orthonormal_columns(to_matrix(randn_tensor({d, k}, seed + 1)));
  for (std::int64_t i = 0; i < f; ++i)
    for (std::int64_t j = 0; j < k; ++j) u(i, j) *= sigma[static_cast<std::size_t>(j)];
  const Matrix m = matmul(u, v, false, true);
  Matrix s0(d, d);
  const Matrix r0 = to_matrix(randn_tensor({d, d}, seed + 2, 0.3 / std::sqrt(static_cast<double>(d))));
  for (std::int64_t i = 0; i < d; ++i) {
    for (std::int64_t j = 0; j < i; ++j) s0(i, j) = r0(i, j);
    s0(i, i) = 1.0 + static_cast<double>(i) / static_cast<double>(d);
  }
  PlantedSvd p;
  p.w1 = to_tensor(solve_triangular(s0, Triangle::lower, m, Side::right), w1_dtype);
  p.g = to_tensor(matmul(s0, s0, false, true), DType::f64);
  p.sigma = sigma;
  return p;
}

// The projector onto the kept subspace span(V_r) of a result: the row space of W1_r S, with S the
// host path's chol(G + j I) for the result's jitter.
inline init::Matrix kept_projector(const init::WhitenedSvdResult& r, const Tensor& g) {
  using namespace init;
  Matrix a = to_matrix(g);
  for (std::int64_t i = 0; i < a.rows; ++i) a(i, i) += r.jitter;
  const Matrix m = matmul(to_matrix(r.w1), cholesky_lower(a));
  const Svd f = svd(m);
  const Matrix vr = column_block(transpose(f.vt), 0, r.rank);
  return matmul(vr, vr, false, true);
}

inline double frobenius_distance(const init::Matrix& a, const init::Matrix& b) {
  double s = 0.0;
  for (std::size_t i = 0; i < a.data.size(); ++i) s += (a.data[i] - b.data[i]) * (a.data[i] - b.data[i]);
  return std::sqrt(s);
}

// Asserts the device result `dev` against the host result `host` of the same input. `tol` bounds
// the relative differences of W1_r (Frobenius), of the kept projector, of the energies and of the
// singular values above 1e-6 sigma_1 (the device path does not resolve the smallest ones, see
// whitened_svd.hpp); the caller justifies it.
inline void expect_same_svd(const init::WhitenedSvdResult& host, const init::WhitenedSvdResult& dev, const Tensor& g,
                            double tol) {
  EXPECT_EQ(dev.rank, host.rank);
  EXPECT_EQ(dev.jitter, host.jitter);
  EXPECT_EQ(dev.fallback, host.fallback);
  EXPECT_EQ(dev.note, host.note);
  ASSERT_EQ(dev.sigma.size(), host.sigma.size());
  const double top = host.sigma.empty() ? 0.0 : host.sigma[0];
  for (std::size_t l = 0; l < host.sigma.size(); ++l) {
    if (host.sigma[l] < 1e-6 * top) continue;
    EXPECT_NEAR(dev.sigma[l], host.sigma[l], tol * top) << "sigma " << l;
  }
  EXPECT_NEAR(dev.energy_kept, host.energy_kept, tol);
  EXPECT_NEAR(dev.dropped_sq, host.dropped_sq, tol * top * top * static_cast<double>(host.sigma.size()));
  ASSERT_EQ(dev.w1.shape(), host.w1.shape());
  EXPECT_EQ(dev.w1.dtype(), host.w1.dtype());
  const init::Matrix a = init::to_matrix(dev.w1), b = init::to_matrix(host.w1);
  const double scale = init::frobenius_norm(b);
  const double rel = frobenius_distance(a, b) / std::max(scale, 1e-300);
  EXPECT_LE(rel, tol) << "||W1_r(device) - W1_r(host)||_F / ||W1_r(host)||_F";
  if (host.rank > 0 && scale > 0.0) {
    const double p = frobenius_distance(kept_projector(dev, g), kept_projector(host, g));
    EXPECT_LE(p, tol) << "||P_r(device) - P_r(host)||_F of the kept subspaces";
  }
}

}  // namespace upcycle::testing
