#pragma once
// The rules of the whitened truncated SVD (whitened_svd.hpp) that both of its paths call, so that
// the host path (LAPACKE) and the device path (cuSOLVER) choose the same jitter, accept the same
// Cholesky factors, keep the same rank and report the same energies and notes: only the
// factorisations differ between them, never a decision.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "upcycle/core/rng.hpp"
#include "upcycle/init/linalg.hpp"
#include "upcycle/init/whitened_svd.hpp"

namespace upcycle::init {

// Throws unless tau and min_rank_frac lie in [0, 1] and chol_eps is finite and >= 0.
void check_whitened_svd_options(const WhitenedSvdOptions& options);
// Throws unless w1 is a non-empty 2-D [F, D] matrix and second_moment a [D, D] one, both f32 or f64.
void check_whitened_svd_inputs(const Tensor& w1, const Tensor& second_moment);

// A second moment has a finite, non-negative diagonal: throws naming the first entry that is not;
// returns the largest diagonal entry.
double check_second_moment_diagonal(const std::vector<double>& diag);
// The whole check of G: the diagonal as above, every entry finite, and |G(i, j) - G(j, i)| <= 1e-5
// max(diag G) (only a wrong matrix fails this: sums accumulated in another order, or in f32,
// differ by ~1e-7 relative). Throws naming the entry.
void check_second_moment(const Matrix& g);

// mean(diag G), summed in index order.
double mean_diagonal(const std::vector<double>& diag);
// max_i (diag[i] + jitter), the scale of the Cholesky rounding level of G + jitter I.
double max_jittered_diagonal(const std::vector<double>& diag, double jitter);
// Whether a Cholesky factor of G + j I is safe to invert: every pivot L_ii^2 above the rounding
// level of the factorisation, 10 D eps max_jittered_diag (below it, potrf "succeeds" on a singular
// G by chance and S^-1 would amplify rounding noise by 1e8 or more).
bool cholesky_pivots_safe(const std::vector<double>& pivots, double max_jittered_diag);

// The jitter j of S = chol(G + j I). `factor(j)` tries the factorisation (including the pivot
// check) and says whether it was accepted. Tried in order: chol_eps mean(diag G) (not when
// mean(diag G) = 0), then the fallback 10^k max(chol_eps, 1e-10) mean(diag G) for k = 1 .. 8 (or
// the absolute 10^(k-1) 1e-6 when mean(diag G) = 0, i.e. G = 0). Throws when no try is accepted.
struct CholeskyJitter {
  double jitter = 0;
  bool fallback = false;  // a fallback try was needed
  std::string note;       // when fallback: what happened and the jitter used (one line for the log)
};
CholeskyJitter choose_cholesky_jitter(double mean_diag, double chol_eps, std::int64_t d,
                                      const std::function<bool(double jitter)>& factor);

// The rank: the smallest r with cumulative energy sum_{l<=r} sigma_l^2 >= tau sum_l sigma_l^2
// (tau = 1: every non-zero singular value), raised to ceil(min_rank_frac d), capped at
// sigma.size() = min(F, D). sigma descending.
std::int64_t whitened_svd_rank(const std::vector<double>& sigma, double tau, double min_rank_frac, std::int64_t d);

// What a truncation keeps of the whitened energy sum_l sigma_l^2.
struct TruncationEnergy {
  double energy_kept = 1;  // kept / total (1 when the total is 0: nothing was lost)
  double dropped_sq = 0;   // total - kept
};
// Keeping the top `rank` singular values (the dropped ones summed smallest first).
TruncationEnergy truncation_energy(const std::vector<double>& sigma, std::int64_t rank);
// Keeping a subspace that captures `captured_sq` = ||W1 S Q||_F^2 (the random-subspace control).
TruncationEnergy subspace_energy(const std::vector<double>& sigma, double captured_sq);

// The random-subspace control's basis Q [D, rank]: Gaussian draws from `rng` (2 D rank words),
// orthonormalised twice, on the host. Both paths use this Q, so they keep the same subspace.
Matrix random_subspace_basis(std::int64_t d, std::int64_t rank, RngStream& rng);

}  // namespace upcycle::init
