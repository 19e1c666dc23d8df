// The decisions of the whitened truncated SVD shared by its host and device paths
// (include/upcycle/init/whitened_svd_rules.hpp).
#include "upcycle/init/whitened_svd_rules.hpp"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <sstream>

namespace upcycle::init {

void check_whitened_svd_options(const WhitenedSvdOptions& o) {
  UPCYCLE_CHECK(o.tau >= 0.0 && o.tau <= 1.0, "whitened SVD: tau must be in [0, 1], got ", o.tau);
  UPCYCLE_CHECK(o.min_rank_frac >= 0.0 && o.min_rank_frac <= 1.0, "whitened SVD: min_rank_frac must be in [0, 1], got ",
                o.min_rank_frac);
  UPCYCLE_CHECK(o.chol_eps >= 0.0 && std::isfinite(o.chol_eps), "whitened SVD: chol_eps must be finite and >= 0, got ",
                o.chol_eps);
}

void check_whitened_svd_inputs(const Tensor& w1, const Tensor& second_moment) {
  UPCYCLE_CHECK(w1.defined() && w1.ndim() == 2, "whitened SVD: w1 must be a 2-D [F, D] matrix, got ", describe(w1));
  const std::int64_t F = w1.dim(0), D = w1.dim(1);
  UPCYCLE_CHECK(F > 0 && D > 0, "whitened SVD: empty w1 ", describe(w1));
  UPCYCLE_CHECK(second_moment.defined() && second_moment.ndim() == 2 && second_moment.dim(0) == D &&
                    second_moment.dim(1) == D,
                "whitened SVD: second moment must be [D, D] = [", D, ", ", D, "] for w1 ", describe(w1), ", got ",
                describe(second_moment));
  UPCYCLE_CHECK(is_floating(w1.dtype()) && is_floating(second_moment.dtype()),
                "whitened SVD: w1 and the second moment must be f32 or f64, got ", describe(w1), " and ",
                describe(second_moment));
}

double check_second_moment_diagonal(const std::vector<double>& diag) {
  double max_diag = 0.0;
  for (std::size_t i = 0; i < diag.size(); ++i) {
    UPCYCLE_CHECK(std::isfinite(diag[i]) && diag[i] >= 0.0, "whitened SVD: G = X^T X has diagonal entry ", i, " = ",
                  diag[i], " (a second moment is finite and >= 0 on the diagonal)");
    max_diag = std::max(max_diag, diag[i]);
  }
  return max_diag;
}

void check_second_moment(const Matrix& g) {
  std::vector<double> diag(static_cast<std::size_t>(g.rows));
  for (std::int64_t i = 0; i < g.rows; ++i) diag[static_cast<std::size_t>(i)] = g(i, i);
  const double max_diag = check_second_moment_diagonal(diag);
  for (std::int64_t i = 0; i < g.rows; ++i)
    for (std::int64_t j = 0; j < i; ++j) {
      UPCYCLE_CHECK(std::isfinite(g(i, j)) && std::isfinite(g(j, i)), "whitened SVD: G(", i, ", ", j,
                    ") is not finite");
      UPCYCLE_CHECK(std::abs(g(i, j) - g(j, i)) <= 1e-5 * max_diag, "whitened SVD: G is not symmetric: G(", i, ", ",
                    j, ") = ", g(i, j), ", G(", j, ", ", i, ") = ", g(j, i));
    }
}

double mean_diagonal(const std::vector<double>& diag) {
  double mean = 0.0;
  for (double v : diag) mean += v;
  return mean / static_cast<double>(diag.size());
}

double max_jittered_diagonal(const std::vector<double>& diag, double jitter) {
  double max_diag = 0.0;
  for (double v : diag) max_diag = std::max(max_diag, v + jitter);
  return max_diag;
}

bool cholesky_pivots_safe(const std::vector<double>& pivots, double max_jittered_diag) {
  const double floor = 10.0 * static_cast<double>(pivots.size()) * DBL_EPSILON * max_jittered_diag;
  for (double l : pivots)
    if (!(l * l > floor)) return false;
  return true;
}

CholeskyJitter choose_cholesky_jitter(double mean_diag, double chol_eps, std::int64_t d,
                                      const std::function<bool(double)>& factor) {
  CholeskyJitter c;
  if (mean_diag > 0.0) {
    c.jitter = chol_eps * mean_diag;
    if (factor(c.jitter)) return c;
  }
  // Fallback: relative jitters 10^k max(chol_eps, 1e-10) mean(diag), or absolute 10^(k-1) 1e-6
  // on an all-zero diagonal (G = 0: a cluster without tokens), k = 1..8.
  constexpr int kTries = 8;
  const double base = mean_diag > 0.0 ? std::max(chol_eps, 1e-10) * mean_diag : 1e-7;
  double jitter = base;
  for (int k = 1; k <= kTries; ++k) {
    jitter = base * std::pow(10.0, k);  // not a running product: 1e-6 stays 1e-6 to the last bit
    if (factor(jitter)) {
      std::ostringstream note;
      note << "whitened SVD: G + " << chol_eps << " * mean(diag G) I (mean(diag G) = " << mean_diag
           << ") is not numerically positive definite (D = " << d
           << (mean_diag > 0.0 ? ", G singular or indefinite" : ", G = 0") << "); used jitter " << jitter;
      if (mean_diag > 0.0) note << " = " << jitter / mean_diag << " * mean(diag G)";
      note << " after " << k << (k == 1 ? " retry" : " retries");
      c.jitter = jitter;
      c.fallback = true;
      c.note = note.str();
      return c;
    }
  }
  UPCYCLE_THROW("whitened SVD: G + j I is not positive definite for any jitter j up to ", jitter,
                " (mean(diag G) = ", mean_diag, ", D = ", d, ", ", kTries,
                " retries x10 each): the second moment is far from positive semi-definite (wrong accumulation?)");
}

std::int64_t whitened_svd_rank(const std::vector<double>& sigma, double tau, double min_rank_frac, std::int64_t d) {
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
      for (; r < k && cum < tau * total; ++r)
        cum += sigma[static_cast<std::size_t>(r)] * sigma[static_cast<std::size_t>(r)];
    }
  }
  // ceil(min_rank_frac d), robust to products such as 0.3 * 10 = 3.0000000000000004.
  const auto floor_rank = static_cast<std::int64_t>(std::ceil(min_rank_frac * static_cast<double>(d) - 1e-9));
  return std::min(std::max(r, floor_rank), k);
}

TruncationEnergy truncation_energy(const std::vector<double>& sigma, std::int64_t rank) {
  const auto r = static_cast<std::size_t>(rank);
  double kept = 0.0, dropped = 0.0;
  for (std::size_t l = 0; l < r; ++l) kept += sigma[l] * sigma[l];
  for (std::size_t l = sigma.size(); l-- > r;) dropped += sigma[l] * sigma[l];  // small ones first
  TruncationEnergy e;
  e.dropped_sq = dropped;
  e.energy_kept = kept + dropped > 0.0 ? kept / (kept + dropped) : 1.0;
  return e;
}

TruncationEnergy subspace_energy(const std::vector<double>& sigma, double captured_sq) {
  double total = 0.0;
  for (double s : sigma) total += s * s;
  TruncationEnergy e;
  e.energy_kept = total > 0.0 ? captured_sq / total : 1.0;
  e.dropped_sq = std::max(0.0, total - captured_sq);
  return e;
}

}  // namespace upcycle::init
