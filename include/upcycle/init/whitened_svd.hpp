#pragma once
// The two SVD-based expert initialisers of docs/methods.md sections 1-2, computed in float64 on the
// host (include/upcycle/init/linalg.hpp):
//  - whitened_truncated_svd: step 4 of cluster-aware upcycling (SVD-LLM style): the rank-r
//    approximation of the up-projection that is best on one cluster's tokens;
//  - drop_svd: the `drop_svd` baseline: keep the top of the spectrum, re-draw the rest's singular
//    vectors.
#include <cstdint>
#include <string>
#include <vector>

#include "upcycle/core/rng.hpp"
#include "upcycle/core/tensor.hpp"
#include "upcycle/init/linalg.hpp"

namespace upcycle::init {

struct WhitenedSvdOptions {
  double tau = 0.9;            // energy to keep, in [0, 1]; 1 keeps every non-zero singular value
  double min_rank_frac = 0.5;  // rank floor ceil(min_rank_frac * D), in [0, 1]
  double chol_eps = 1e-5;      // diagonal jitter relative to mean(diag G), >= 0
  // A control for the choice of subspace (upcycle.subspace = random): when set, the r kept right
  // singular vectors V_r are replaced by a random orthonormal basis Q [D, r] (Gaussian draws from
  // this stream, 2 D r words, orthonormalised twice), r still chosen by the rule above:
  // W1_r = (W1 S Q Q^T) S^-1, and energy_kept / dropped_sq measure ||W1 S Q||_F^2 against
  // ||W1 S||_F^2. With r = D it is W1 again.
  RngStream* random_subspace = nullptr;
};

struct WhitenedSvdResult {
  Tensor w1;                  // [F, D] in w1's dtype: U_r Sigma_r V_r^T S^-1 (full-size matrix of rank r)
  std::int64_t rank = 0;      // r chosen
  std::vector<double> sigma;  // all min(F, D) singular values of W1 S, descending
  double energy_kept = 0;     // sum_{l<=r} sigma^2 / sum sigma^2 (1 when W1 S = 0: nothing was lost)
  double dropped_sq = 0;      // sum_{l>r} sigma_l^2 = ||(W1 - W1_r) S||_F^2
  double jitter = 0;          // absolute jitter j added to the diagonal of G (S S^T = G + j I)
  bool fallback = false;      // the configured jitter did not make G positive definite; a larger one was used
  std::string note;           // when fallback: what happened and the jitter used (one line for the log)
};

// w1: the dense up-projection [F, D] (f32, or f64 for checks; for SwiGLU the caller passes the
// [2F, D] matrix: any row count works). second_moment: G = X^T X [D, D] (f32/f64; already
// all-reduced by the caller; symmetric, only its lower triangle is used).
//
// S = chol(G + j I) (lower) with j = chol_eps * mean(diag G); U Sigma V^T = svd(W1 S);
// r = the smallest r with cumulative energy >= tau, raised to ceil(min_rank_frac * D), capped at
// min(F, D); W1_r = U_r Sigma_r V_r^T S^-1 (a triangular solve, no explicit inverse).
// Since S S^T = G + j I, ||(W1 - W1_r) X^T||_F^2 + j ||W1 - W1_r||_F^2 = dropped_sq exactly.
//
// Fallback. When G + j I is not numerically positive definite (dpotrf fails, or a pivot L_ii^2
// falls below the Cholesky rounding level 10 D eps max(diag): G singular or indefinite, e.g. a
// cluster with fewer tokens than D and chol_eps = 0, or G = 0), j is raised: first to
// 10 max(chol_eps, 1e-10) mean(diag G), then x10 per try, 8 tries in all; where mean(diag G) = 0
// (G = 0), the tries are absolute, 1e-6 ... 1e1. fallback and note record it. When all tries fail
// (G far from positive semi-definite) it throws. Also throws on non-finite input, a negative
// diagonal, a non-symmetric G, bad shapes or options.
WhitenedSvdResult whitened_truncated_svd(const Tensor& w1, const Tensor& second_moment,
                                         const WhitenedSvdOptions& options);

// The same result computed on the device of `second_moment` (a GPU in a CUDA run: cuSOLVER and
// cuBLAS through device_linalg.hpp, and Backend kernels; host tensors take the same steps with
// LAPACKE). It calls the host path's rules (whitened_svd_rules.hpp): the same checks and messages,
// jitter and fallback, pivot floor, rank rule, energies, notes and random subspace. It differs in
// the factorisation: W1 S's singular values and right vectors come from the eigen-decomposition of
// (W1 S)^T (W1 S), and W1_r = W1 S V_r V_r^T S^-1 (src/init/whitened_svd_device.cpp says why).
// Singular values below ~1e-8 sigma_1 are therefore not resolved (reported as tiny or 0), which
// only tau = 1 can see in the rank. w1 comes back on that device in w1's dtype; only a few vectors
// (the diagonal, the eigenvalues, the pivots, status words) travel to the host.
WhitenedSvdResult whitened_truncated_svd_on_device(const Tensor& w1, const Tensor& second_moment,
                                                   const WhitenedSvdOptions& options);

// drop_svd: W = U S V^T (thin, k = min(m, n)); keep the top `kept` = round(keep_frac * k)
// singular triplets exactly; replace the singular vectors of the other k - kept (columns of U and
// of V) by random orthonormal vectors orthogonal to the kept ones; keep S. The random vectors are
// Gaussian draws from `rng` (Box-Muller, as Backend::normal), projected out of the kept span and
// orthonormalised by QR, twice (one pass leaves O(eps cond) components along the kept span).
//
// Stream use: exactly 2 (m + n)(k - kept) words are reserved, the U draws [m, k - kept] first,
// then the V draws [n, k - kept], so per-expert calls on one stream are independent and the
// stream ends at a known offset. keep_frac = 1 draws nothing and returns W (rounded to its dtype).
struct DropSvdResult {
  Tensor w;                 // U' diag(S) V'^T, [m, n] in w's dtype (f32 in the upcycler)
  std::int64_t kept = 0;    // singular triplets kept exactly
  Svd factors;              // U' [m, k], S [k], V'^T [k, n] in f64: the kept columns first, then the new ones
};
DropSvdResult drop_svd(const Tensor& w, double keep_frac, RngStream& rng);

}  // namespace upcycle::init
