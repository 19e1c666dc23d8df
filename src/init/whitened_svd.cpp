// Whitened truncated SVD (cluster-aware upcycling, docs/methods.md section 2 step 4) and drop_svd, in
// float64 on the host. See include/upcycle/init/whitened_svd.hpp for the contract.
#include "upcycle/init/whitened_svd.hpp"

#include <algorithm>
#include <cmath>
#include <optional>

#include "upcycle/backend/backend.hpp"
#include "upcycle/init/whitened_svd_rules.hpp"

namespace upcycle::init {

namespace {

struct Whitener {
  Matrix s;  // lower Cholesky factor of G + jitter I
  CholeskyJitter jitter;
};

// chol(G + j I), accepted only when dpotrf succeeds and its pivots are safe (whitened_svd_rules.hpp).
std::optional<Matrix> jittered_cholesky(const Matrix& g, const std::vector<double>& diag, double jitter) {
  Matrix a = g;
  for (std::int64_t i = 0; i < a.rows; ++i) a(i, i) += jitter;
  std::optional<Matrix> l = try_cholesky_lower(a);
  if (!l) return std::nullopt;
  std::vector<double> pivots(static_cast<std::size_t>(a.rows));
  for (std::int64_t i = 0; i < a.rows; ++i) pivots[static_cast<std::size_t>(i)] = (*l)(i, i);
  if (!cholesky_pivots_safe(pivots, max_jittered_diagonal(diag, jitter))) return std::nullopt;
  return l;
}

Whitener whiten(const Matrix& g, double chol_eps) {
  std::vector<double> diag(static_cast<std::size_t>(g.rows));
  for (std::int64_t i = 0; i < g.rows; ++i) diag[static_cast<std::size_t>(i)] = g(i, i);
  Whitener w;
  w.jitter = choose_cholesky_jitter(mean_diagonal(diag), chol_eps, g.rows, [&](double jitter) {
    std::optional<Matrix> l = jittered_cholesky(g, diag, jitter);
    if (l) w.s = std::move(*l);
    return l.has_value();
  });
  return w;
}

// Gaussian [rows, cols] from the next 2 rows cols words of `rng` (the Backend::normal formula).
Matrix gaussian(std::int64_t rows, std::int64_t cols, RngStream& rng) {
  Tensor t = Tensor::empty({rows, cols}, DType::f64, Device::cpu);
  const std::uint64_t offset = rng.advance(2 * static_cast<std::uint64_t>(rows * cols));
  backend_for(Device::cpu).normal(t, rng.seed(), offset, 0.0, 1.0);
  return to_matrix(t);
}

// Orthonormal columns spanning the part of `draws` orthogonal to the orthonormal columns of
// `kept` (which may have 0 columns): project out, QR, and once more ("twice is enough").
Matrix orthonormal_complement(const Matrix& kept, Matrix draws) {
  for (int pass = 0; pass < 2; ++pass) {
    if (kept.cols > 0) {
      const Matrix coeff = matmul(kept, draws, true, false);  // kept^T draws
      const Matrix along = matmul(kept, coeff);
      for (std::size_t i = 0; i < draws.data.size(); ++i) draws.data[i] -= along.data[i];
    }
    draws = orthonormal_columns(draws);
  }
  return draws;
}

// [a | b] (same row count).
Matrix hcat(const Matrix& a, const Matrix& b) {
  Matrix c(a.rows, a.cols + b.cols);
  for (std::int64_t i = 0; i < a.rows; ++i) {
    for (std::int64_t j = 0; j < a.cols; ++j) c(i, j) = a(i, j);
    for (std::int64_t j = 0; j < b.cols; ++j) c(i, a.cols + j) = b(i, j);
  }
  return c;
}

// U[:, :r] diag(sigma[:r]) Vt[:r, :].
Matrix truncated_product(const Svd& f, std::int64_t r) {
  Matrix us = column_block(f.u, 0, r);
  for (std::int64_t i = 0; i < us.rows; ++i)
    for (std::int64_t j = 0; j < r; ++j) us(i, j) *= f.sigma[static_cast<std::size_t>(j)];
  Matrix vt(r, f.vt.cols);
  std::copy(f.vt.data.begin(), f.vt.data.begin() + r * f.vt.cols, vt.data.begin());
  return matmul(us, vt);
}

}  // namespace

Matrix random_subspace_basis(std::int64_t d, std::int64_t rank, RngStream& rng) {
  return orthonormal_complement(Matrix(), gaussian(d, rank, rng));
}

WhitenedSvdResult whitened_truncated_svd(const Tensor& w1, const Tensor& second_moment,
                                         const WhitenedSvdOptions& options) {
  check_whitened_svd_options(options);
  check_whitened_svd_inputs(w1, second_moment);
  const std::int64_t D = w1.dim(1);
  const Matrix w = to_matrix(w1);
  const Matrix g = to_matrix(second_moment);
  check_second_moment(g);

  const Whitener wh = whiten(g, options.chol_eps);
  const Svd f = svd(matmul(w, wh.s));  // W1 S

  WhitenedSvdResult res;
  res.sigma = f.sigma;
  res.jitter = wh.jitter.jitter;
  res.fallback = wh.jitter.fallback;
  res.note = wh.jitter.note;
  res.rank = whitened_svd_rank(f.sigma, options.tau, options.min_rank_frac, D);
  TruncationEnergy energy = truncation_energy(f.sigma, res.rank);

  Matrix m;
  if (options.random_subspace != nullptr && res.rank > 0) {
    // The control: the same rank, a random subspace of the whitened input space.
    const Matrix q = random_subspace_basis(D, res.rank, *options.random_subspace);
    const Matrix ws = matmul(w, wh.s);
    m = matmul(matmul(ws, q), q, false, true);  // W1 S Q Q^T
    const double in = frobenius_norm(matmul(ws, q));
    energy = subspace_energy(f.sigma, in * in);
  } else {
    m = truncated_product(f, res.rank);  // U_r Sigma_r V_r^T
  }
  res.energy_kept = energy.energy_kept;
  res.dropped_sq = energy.dropped_sq;
  // W1_r = M S^-1: solve X S = M for X.
  const Matrix w1_r = res.rank > 0 ? solve_triangular(wh.s, Triangle::lower, m, Side::right) : m;
  res.w1 = to_tensor(w1_r, w1.dtype());
  return res;
}

DropSvdResult drop_svd(const Tensor& w, double keep_frac, RngStream& rng) {
  UPCYCLE_CHECK(keep_frac >= 0.0 && keep_frac <= 1.0, "drop_svd: keep_frac must be in [0, 1], got ", keep_frac);
  UPCYCLE_CHECK(w.defined() && w.ndim() == 2, "drop_svd: expected a 2-D matrix, got ", describe(w));
  const Matrix a = to_matrix(w);
  Svd f = svd(a);
  const std::int64_t m = a.rows, n = a.cols, k = std::min(m, n);
  const std::int64_t kept = std::llround(keep_frac * static_cast<double>(k));
  const std::int64_t fresh = k - kept;

  DropSvdResult res;
  res.kept = kept;
  if (fresh == 0) {
    res.w = w.to(Device::cpu).clone();
    res.factors = std::move(f);
    return res;
  }
  // Draw both blocks before any factorisation so that the stream's use does not depend on it.
  Matrix draws_u = gaussian(m, fresh, rng);
  Matrix draws_v = gaussian(n, fresh, rng);
  const Matrix uk = column_block(f.u, 0, kept);
  const Matrix v_kept = column_block(transpose(f.vt), 0, kept);
  const Matrix u_new = hcat(uk, orthonormal_complement(uk, std::move(draws_u)));
  const Matrix v_new = hcat(v_kept, orthonormal_complement(v_kept, std::move(draws_v)));

  res.factors.u = u_new;
  res.factors.sigma = f.sigma;
  res.factors.vt = transpose(v_new);
  res.w = to_tensor(truncated_product(res.factors, k), w.dtype());
  return res;
}

}  // namespace upcycle::init
