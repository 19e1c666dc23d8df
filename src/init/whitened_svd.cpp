// Whitened truncated SVD (cluster-aware upcycling, docs/methods.md section 2 step 4) and drop_svd, in
// float64 on the host. See include/upcycle/init/whitened_svd.hpp for the contract.
#include "upcycle/init/whitened_svd.hpp"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <sstream>

#include "upcycle/backend/backend.hpp"

namespace upcycle::init {

namespace {

void check_options(const WhitenedSvdOptions& o) {
  UPCYCLE_CHECK(o.tau >= 0.0 && o.tau <= 1.0, "whitened SVD: tau must be in [0, 1], got ", o.tau);
  UPCYCLE_CHECK(o.min_rank_frac >= 0.0 && o.min_rank_frac <= 1.0, "whitened SVD: min_rank_frac must be in [0, 1], got ",
                o.min_rank_frac);
  UPCYCLE_CHECK(o.chol_eps >= 0.0 && std::isfinite(o.chol_eps), "whitened SVD: chol_eps must be finite and >= 0, got ",
                o.chol_eps);
}

// A second moment has a non-negative diagonal and is symmetric. The symmetry check only catches a
// wrong matrix (a transposed or foreign buffer): sums accumulated in another order, or in f32,
// differ by ~1e-7 relative, far below 1e-5 of the largest diagonal entry.
void check_second_moment(const Matrix& g) {
  double max_diag = 0.0;
  for (std::int64_t i = 0; i < g.rows; ++i) {
    UPCYCLE_CHECK(std::isfinite(g(i, i)) && g(i, i) >= 0.0, "whitened SVD: G = X^T X has diagonal entry ", i, " = ",
                  g(i, i), " (a second moment is finite and >= 0 on the diagonal)");
    max_diag = std::max(max_diag, g(i, i));
  }
  for (std::int64_t i = 0; i < g.rows; ++i)
    for (std::int64_t j = 0; j < i; ++j) {
      UPCYCLE_CHECK(std::isfinite(g(i, j)) && std::isfinite(g(j, i)), "whitened SVD: G(", i, ", ", j, ") is not finite");
      UPCYCLE_CHECK(std::abs(g(i, j) - g(j, i)) <= 1e-5 * max_diag, "whitened SVD: G is not symmetric: G(", i, ", ",
                    j, ") = ", g(i, j), ", G(", j, ", ", i, ") = ", g(j, i));
    }
}

struct Whitener {
  Matrix s;  // lower Cholesky factor of G + jitter I
  double jitter = 0;
  bool fallback = false;
  std::string note;
};

// chol(G + j I), accepted only when every pivot L_ii^2 is above the rounding level of the
// factorisation (~ D eps max diag, with a factor 10 of margin): below it, dpotrf "succeeds" on a
// singular G by chance and S^-1 would amplify rounding noise by 1e8 or more.
std::optional<Matrix> jittered_cholesky(const Matrix& g, double jitter) {
  Matrix a = g;
  double max_diag = 0.0;
  for (std::int64_t i = 0; i < a.rows; ++i) {
    a(i, i) += jitter;
    max_diag = std::max(max_diag, a(i, i));
  }
  std::optional<Matrix> l = try_cholesky_lower(a);
  if (!l) return std::nullopt;
  const double floor = 10.0 * static_cast<double>(a.rows) * DBL_EPSILON * max_diag;
  for (std::int64_t i = 0; i < a.rows; ++i)
    if (!((*l)(i, i) * (*l)(i, i) > floor)) return std::nullopt;
  return l;
}

Whitener whiten(const Matrix& g, double chol_eps) {
  const std::int64_t D = g.rows;
  double mean_diag = 0.0;
  for (std::int64_t i = 0; i < D; ++i) mean_diag += g(i, i);
  mean_diag /= static_cast<double>(D);

  Whitener w;
  if (mean_diag > 0.0) {
    w.jitter = chol_eps * mean_diag;
    if (std::optional<Matrix> l = jittered_cholesky(g, w.jitter)) {
      w.s = std::move(*l);
      return w;
    }
  }
  // Fallback: relative jitters 10^k max(chol_eps, 1e-10) mean(diag), or absolute 10^(k-1) 1e-6
  // on an all-zero diagonal (G = 0: a cluster without tokens), k = 1..8.
  constexpr int kTries = 8;
  const double base = mean_diag > 0.0 ? std::max(chol_eps, 1e-10) * mean_diag : 1e-7;
  double jitter = base;
  for (int k = 1; k <= kTries; ++k) {
    jitter = base * std::pow(10.0, k);  // not a running product: 1e-6 stays 1e-6 to the last bit
    if (std::optional<Matrix> l = jittered_cholesky(g, jitter)) {
      std::ostringstream note;
      note << "whitened SVD: G + " << chol_eps << " * mean(diag G) I (mean(diag G) = " << mean_diag
           << ") is not numerically positive definite (D = " << D
           << (mean_diag > 0.0 ? ", G singular or indefinite" : ", G = 0") << "); used jitter " << jitter;
      if (mean_diag > 0.0) note << " = " << jitter / mean_diag << " * mean(diag G)";
      note << " after " << k << (k == 1 ? " retry" : " retries");
      w.s = std::move(*l);
      w.jitter = jitter;
      w.fallback = true;
      w.note = note.str();
      return w;
    }
  }
  UPCYCLE_THROW("whitened SVD: G + j I is not positive definite for any jitter j up to ", jitter,
                " (mean(diag G) = ", mean_diag, ", D = ", D, ", ", kTries,
                " retries x10 each): the second moment is far from positive semi-definite (wrong accumulation?)");
}

// The rank: the smallest r with cumulative energy >= tau, then the floor and the cap.
std::int64_t choose_rank(const std::vector<double>& sigma, double tau, double min_rank_frac, std::int64_t d) {
  const std::int64_t k = static_cast<std::int64_t>(sigma.size());
  double total = 0.0;
  for (double s : sigma) total += s * s;
  std::int64_t r = 0;
  if (total > 0.0) {
    if (tau >= 1.0) {
      // tau = 1: every non-zero singular value. The cumulative sum can reach the total in floating
      // point before the smallest ones (sigma_l^2 below an ulp of the total) are included.
      r = static_cast<std::int64_t>(std::count_if(sigma.begin(), sigma.end(), [](double s) { return s > 0.0; }));
    } else {
      double cum = 0.0;
      for (; r < k && cum < tau * total; ++r) cum += sigma[static_cast<std::size_t>(r)] * sigma[static_cast<std::size_t>(r)];
    }
  }
  // ceil(min_rank_frac d), robust to products such as 0.3 * 10 = 3.0000000000000004.
  const auto floor_rank = static_cast<std::int64_t>(std::ceil(min_rank_frac * static_cast<double>(d) - 1e-9));
  return std::min(std::max(r, floor_rank), k);
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

WhitenedSvdResult whitened_truncated_svd(const Tensor& w1, const Tensor& second_moment,
                                         const WhitenedSvdOptions& options) {
  check_options(options);
  UPCYCLE_CHECK(w1.defined() && w1.ndim() == 2, "whitened SVD: w1 must be a 2-D [F, D] matrix, got ", describe(w1));
  const std::int64_t F = w1.dim(0), D = w1.dim(1);
  UPCYCLE_CHECK(F > 0 && D > 0, "whitened SVD: empty w1 ", describe(w1));
  UPCYCLE_CHECK(second_moment.defined() && second_moment.ndim() == 2 && second_moment.dim(0) == D &&
                    second_moment.dim(1) == D,
                "whitened SVD: second moment must be [D, D] = [", D, ", ", D, "] for w1 ", describe(w1), ", got ",
                describe(second_moment));
  const Matrix w = to_matrix(w1);
  const Matrix g = to_matrix(second_moment);
  check_second_moment(g);

  const Whitener wh = whiten(g, options.chol_eps);
  const Svd f = svd(matmul(w, wh.s));  // W1 S

  WhitenedSvdResult res;
  res.sigma = f.sigma;
  res.jitter = wh.jitter;
  res.fallback = wh.fallback;
  res.note = wh.note;
  res.rank = choose_rank(f.sigma, options.tau, options.min_rank_frac, D);
  const auto r = static_cast<std::size_t>(res.rank);
  double kept = 0.0, dropped = 0.0;
  for (std::size_t l = 0; l < r; ++l) kept += f.sigma[l] * f.sigma[l];
  for (std::size_t l = f.sigma.size(); l-- > r;) dropped += f.sigma[l] * f.sigma[l];  // small ones first
  res.dropped_sq = dropped;
  res.energy_kept = kept + dropped > 0.0 ? kept / (kept + dropped) : 1.0;

  Matrix m;
  if (options.random_subspace != nullptr && res.rank > 0) {
    // The control: the same rank, a random subspace of the whitened input space.
    const Matrix q = orthonormal_complement(Matrix(), gaussian(D, res.rank, *options.random_subspace));
    const Matrix ws = matmul(w, wh.s);
    m = matmul(matmul(ws, q), q, false, true);  // W1 S Q Q^T
    double total = 0.0;
    for (double s : f.sigma) total += s * s;
    const double in = frobenius_norm(matmul(ws, q));
    res.energy_kept = total > 0.0 ? in * in / total : 1.0;
    res.dropped_sq = std::max(0.0, total - in * in);
  } else {
    m = truncated_product(f, res.rank);  // U_r Sigma_r V_r^T
  }
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
