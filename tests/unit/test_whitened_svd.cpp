// The SVD-based initialisers (include/upcycle/init/whitened_svd.hpp): the whitened truncated SVD of
// cluster-aware upcycling (its truncation identity, rank rule with floor and cap, tau = 1, the
// Cholesky fallback for singular or zero second moments) and drop_svd (spectrum and top singular
// vectors kept, new vectors orthonormal and orthogonal to them, stream use).
//
// Matrices are random (Philox, fixed seeds) or built with a known spectrum; every bound is stated
// where it is asserted. The float64 identities are asserted far above their rounding level (~1e-14
// on these well-conditioned sizes) and far below any real error (O(1e-2) or more); the f32 bounds
// follow from the f32 rounding of the result, ||E||_F <= 2^-24 ||W||_F.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "gradcheck.hpp"
#include "relative_error.hpp"
#include "upcycle/init/whitened_svd.hpp"

namespace upcycle::init {
namespace {

Matrix randn(std::int64_t rows, std::int64_t cols, std::uint64_t seed, double std = 1.0) {
  return to_matrix(testing::randn_tensor({rows, cols}, seed, std));
}

Matrix minus(const Matrix& a, const Matrix& b) {
  Matrix c = a;
  for (std::size_t i = 0; i < c.data.size(); ++i) c.data[i] -= b.data[i];
  return c;
}

double max_abs(const Matrix& a) {
  double m = 0.0;
  for (double v : a.data) m = std::max(m, std::abs(v));
  return m;
}

Tensor gram(const Matrix& x) { return to_tensor(matmul(x, x, true, false), DType::f64); }  // X^T X

double mean_diag(const Tensor& g) {
  const Matrix m = to_matrix(g);
  double s = 0.0;
  for (std::int64_t i = 0; i < m.rows; ++i) s += m(i, i);
  return s / static_cast<double>(m.rows);
}

bool all_finite(const Tensor& t) {
  for (double v : t.to(DType::f64).to_vector<double>())
    if (!std::isfinite(v)) return false;
  return true;
}

// U diag(s) V^T of shape [m, n] with random orthonormal U [m, k], V [n, k], k = s.size().
Matrix with_spectrum(std::int64_t m, std::int64_t n, const std::vector<double>& s, std::uint64_t seed) {
  const auto k = static_cast<std::int64_t>(s.size());
  Matrix u = orthonormal_columns(randn(m, k, seed));
  const Matrix v = orthonormal_columns(randn(n, k, seed + 1));
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < k; ++j) u(i, j) *= s[static_cast<std::size_t>(j)];
  return matmul(u, v, false, true);
}

// --- whitened truncated SVD ---

// ||(W1 - W1_r) X^T||_F^2 = sum_{l > r} sigma_l^2, exactly when G = X^T X is factored without
// jitter. Bound 1e-8 relative: both sides are O(10% of ||W1 S||^2) (tau = 0.9) and carry
// backward errors of ~cond(S) D eps ~ 1e-14 (X [200, 16] Gaussian: cond(G) ~ 3); measured ~1e-15.
TEST(WhitenedSvd, TruncationIdentityWithoutJitter) {
  const Matrix x = randn(200, 16, 1), w = randn(24, 16, 2);
  WhitenedSvdOptions o;
  o.chol_eps = 0.0;
  o.min_rank_frac = 0.0;  // let tau alone decide
  const WhitenedSvdResult r = whitened_truncated_svd(to_tensor(w, DType::f64), gram(x), o);
  EXPECT_FALSE(r.fallback) << r.note;
  EXPECT_EQ(r.jitter, 0.0);
  ASSERT_GT(r.rank, 0);
  ASSERT_LT(r.rank, 16) << "tau = 0.9 on a Gaussian W1 must truncate";
  EXPECT_EQ(r.w1.dtype(), DType::f64);
  const Matrix d = minus(w, to_matrix(r.w1));
  const double lhs = std::pow(frobenius_norm(matmul(d, x, false, true)), 2);
  const double rel = std::abs(lhs - r.dropped_sq) / r.dropped_sq;
  std::printf("||(W1 - W1_r) X^T||^2 = %.17g, dropped_sq = %.17g, rel %.2e (rank %lld)\n", lhs, r.dropped_sq, rel,
              static_cast<long long>(r.rank));
  EXPECT_LE(rel, 1e-8);

  // r is minimal: energy_kept >= tau, and one fewer would not reach tau.
  double total = 0.0, below = 0.0;
  for (double s : r.sigma) total += s * s;
  for (std::int64_t l = 0; l + 1 < r.rank; ++l) below += r.sigma[l] * r.sigma[l];
  EXPECT_GE(r.energy_kept, o.tau);
  EXPECT_LT(below / total, o.tau);
  EXPECT_NEAR(r.energy_kept + r.dropped_sq / total, 1.0, 1e-14);  // kept + dropped = total, to rounding

  // sigma are the singular values of W1 chol(G) (independently factored here), 1e-12 relative to
  // sigma_max (Weyl: a backward error of eps ||W1 S|| moves each singular value by at most that).
  const Svd ref = svd(matmul(w, cholesky_lower(to_matrix(gram(x)))));
  ASSERT_EQ(r.sigma.size(), ref.sigma.size());
  for (std::size_t l = 0; l < ref.sigma.size(); ++l) EXPECT_NEAR(r.sigma[l], ref.sigma[l], 1e-12 * ref.sigma[0]);

  // W1_r has rank r: its (r+1)-th singular value is rounding noise (1e-10 of the largest).
  const Svd wr = svd(to_matrix(r.w1));
  EXPECT_GT(wr.sigma[r.rank - 1], 1e-3 * wr.sigma[0]);
  EXPECT_LE(wr.sigma[r.rank], 1e-10 * wr.sigma[0]);
}

// With the default jitter j = 1e-5 mean(diag G), S S^T = G + j I, so the identity gains the term
// j ||W1 - W1_r||_F^2 (which is ~1e-5 relative: without it the check below would fail).
TEST(WhitenedSvd, TruncationIdentityWithTheDefaultJitter) {
  const Matrix x = randn(200, 16, 3), w = randn(24, 16, 4);
  const Tensor g = gram(x);
  const WhitenedSvdResult r = whitened_truncated_svd(to_tensor(w, DType::f64), g, WhitenedSvdOptions{});
  EXPECT_FALSE(r.fallback);
  EXPECT_NEAR(r.jitter, 1e-5 * mean_diag(g), 1e-15 * mean_diag(g));
  const Matrix d = minus(w, to_matrix(r.w1));
  const double lhs = std::pow(frobenius_norm(matmul(d, x, false, true)), 2) + r.jitter * std::pow(frobenius_norm(d), 2);
  EXPECT_LE(std::abs(lhs - r.dropped_sq) / r.dropped_sq, 1e-8);
  EXPECT_GE(r.rank, 8);  // the floor ceil(0.5 * 16)
}

// tau = 1 keeps every non-zero singular value, so W1_r = W1 S S^-1 = W1. In f32 (the upcycler's
// dtype) the result is W1 rounded to f32 after an f64 path with error ~cond(S) D eps ~ 1e-14:
// max|W1_r - W1| <= 2^-24 max|W1| = 6e-8 max|W1|. Asserted at 1e-6 (16 f32 ulps; the brief's
// ~1e-5 is looser), far below the error of dropping even the smallest singular value (~1e-2 here).
TEST(WhitenedSvd, TauOneGivesBackW1) {
  const Matrix x = randn(200, 16, 5);
  for (std::int64_t rows : {24, 8}) {  // tall, and wide (F < D: the rank is capped at F)
    const Tensor w = testing::randn_tensor({rows, 16}, 6 + rows, 0.05, DType::f32);
    WhitenedSvdOptions o;
    o.tau = 1.0;
    const WhitenedSvdResult r = whitened_truncated_svd(w, gram(x), o);
    EXPECT_EQ(r.rank, std::min<std::int64_t>(rows, 16));
    EXPECT_EQ(r.w1.dtype(), DType::f32);
    EXPECT_EQ(r.energy_kept, 1.0);
    EXPECT_EQ(r.dropped_sq, 0.0);
    const testing::RelError e = testing::relative_error(r.w1, w);
    std::printf("tau = 1, W1 [%lld, 16] f32: max|W1_r - W1| / max|W1| = %.2e\n", static_cast<long long>(rows), e.rel);
    EXPECT_LE(e.rel, 1e-6);
  }
}

// The control upcycle.subspace = random: the same rank as the SVD rule, a random subspace. Checked:
// the rank is the SVD's; W1_r S = (W1 S) Q Q^T has rank r and, with r = D, W1_r = W1 (Q Q^T = I:
// bound as TauOneGivesBackW1); the kept energy is ||W1 S Q||^2 / ||W1 S||^2, never above the
// optimum (the top r singular values, Eckart-Young) and, for a random subspace of a spectrum that
// falls off, clearly below it; the draws come from the stream (another offset, another subspace).
TEST(WhitenedSvd, RandomSubspaceControlKeepsTheRankNotTheDirections) {
  const Matrix x = randn(300, 16, 21);
  const Matrix w = with_spectrum(24, 16, {8, 6, 4, 2, 1, 0.5, 0.25, 0.1, 0.05, 0.02, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01}, 22);
  WhitenedSvdOptions o;
  o.min_rank_frac = 0.25;  // floor 4
  const WhitenedSvdResult best = whitened_truncated_svd(to_tensor(w, DType::f64), gram(x), o);
  RngStream rng(99, 1ull << 40);
  o.random_subspace = &rng;
  const WhitenedSvdResult rnd = whitened_truncated_svd(to_tensor(w, DType::f64), gram(x), o);
  EXPECT_EQ(rnd.rank, best.rank);
  EXPECT_LT(rnd.energy_kept, best.energy_kept - 0.05) << "a random subspace kept as much as the top singular one";
  EXPECT_GT(rnd.energy_kept, 0.0);
  double total = 0.0;
  for (double s : best.sigma) total += s * s;
  EXPECT_NEAR(rnd.dropped_sq, total * (1 - rnd.energy_kept), 1e-9 * total);
  // Rank r: the (r+1)-th singular value of W1_r vanishes.
  const Svd f = svd(to_matrix(rnd.w1));
  EXPECT_LT(f.sigma[static_cast<std::size_t>(rnd.rank)], 1e-10 * f.sigma[0]);
  EXPECT_GT(f.sigma[static_cast<std::size_t>(rnd.rank) - 1], 1e-6 * f.sigma[0]);
  // Another stream offset: another subspace.
  RngStream other(99, 2ull << 40);
  o.random_subspace = &other;
  const WhitenedSvdResult rnd2 = whitened_truncated_svd(to_tensor(w, DType::f64), gram(x), o);
  EXPECT_GT(max_abs(minus(to_matrix(rnd2.w1), to_matrix(rnd.w1))), 1e-3 * max_abs(w));
  // Full rank: W1 again.
  RngStream full_rng(7);
  WhitenedSvdOptions full;
  full.tau = 1.0;
  full.random_subspace = &full_rng;
  const Tensor w32 = testing::randn_tensor({24, 16}, 23, 0.05, DType::f32);
  const WhitenedSvdResult back = whitened_truncated_svd(w32, gram(x), full);
  EXPECT_EQ(back.rank, 16);
  EXPECT_LE(testing::relative_error(back.w1, w32).rel, 1e-6);
}

// An uncentred second moment with a strong mean direction (why the rank floor exists, docs/methods.md): tokens
// 10 mu + N(0, 0.3^2) put ~98% of W1 S's energy in one direction, so tau = 0.9 alone picks a rank
// of 1-2, and the floor ceil(min_rank_frac D) must hold it up.
TEST(WhitenedSvd, RankFloorHoldsWhenEnergyConcentrates) {
  const std::int64_t N = 400, D = 16;
  Matrix x = randn(N, D, 7, 0.3);
  Matrix mu = randn(1, D, 8);
  const double norm = frobenius_norm(mu);
  for (std::int64_t t = 0; t < N; ++t)
    for (std::int64_t j = 0; j < D; ++j) x(t, j) += 10.0 * mu(0, j) / norm;
  const Tensor w = testing::randn_tensor({24, D}, 9, 0.05, DType::f32);

  WhitenedSvdOptions no_floor;
  no_floor.min_rank_frac = 0.0;
  const WhitenedSvdResult free = whitened_truncated_svd(w, gram(x), no_floor);
  std::printf("strong mean direction: rank without floor %lld (energy %.4f)\n", static_cast<long long>(free.rank),
              free.energy_kept);
  EXPECT_LE(free.rank, 2) << "the construction should concentrate the energy";

  const WhitenedSvdResult floored = whitened_truncated_svd(w, gram(x), WhitenedSvdOptions{});  // min_rank_frac 0.5
  EXPECT_EQ(floored.rank, 8);
  EXPECT_GT(floored.energy_kept, free.energy_kept);
  WhitenedSvdOptions odd = no_floor;
  odd.min_rank_frac = 0.3;  // 0.3 * 16 = 4.8 -> 5
  EXPECT_EQ(whitened_truncated_svd(w, gram(x), odd).rank, 5);
}

// A known whitened spectrum: G = S0 S0^T with S0 lower triangular (so chol(G) = S0) and
// W1 = M S0^-1 with M = U diag(s) V^T, hence W1 S = M. sigma^2 = {40, 30, 20, 5, 3, 2} (total 100)
// gives cumulative energies 0.40, 0.70, 0.90, 0.95, 0.98, 1. Every tau below is at least 0.01 away
// from a boundary, far above the ~1e-13 error of the computed energies (cond(S0) ~ 10).
TEST(WhitenedSvd, RankFollowsTauOnAKnownSpectrum) {
  const std::int64_t F = 8, D = 6;
  const std::vector<double> s2 = {40, 30, 20, 5, 3, 2};
  std::vector<double> s;
  for (double v : s2) s.push_back(std::sqrt(v));
  Matrix s0(D, D);
  const Matrix r0 = randn(D, D, 21, 0.3);
  for (std::int64_t i = 0; i < D; ++i) {
    for (std::int64_t j = 0; j < i; ++j) s0(i, j) = r0(i, j);
    s0(i, i) = 1.0 + 0.1 * static_cast<double>(i);
  }
  const Matrix m = with_spectrum(F, D, s, 22);
  const Matrix w1 = solve_triangular(s0, Triangle::lower, m, Side::right);  // M S0^-1
  const Tensor g = to_tensor(matmul(s0, s0, false, true), DType::f64);

  struct Case { double tau, frac; std::int64_t rank; };
  const Case cases[] = {{0.10, 0.0, 1}, {0.50, 0.0, 2}, {0.69, 0.0, 2}, {0.71, 0.0, 3}, {0.89, 0.0, 3},
                        {0.91, 0.0, 4}, {0.96, 0.0, 5}, {0.99, 0.0, 6}, {1.00, 0.0, 6}, {0.50, 0.5, 3},
                        {0.10, 1.0, 6}, {0.00, 0.0, 0}};
  for (const Case& c : cases) {
    WhitenedSvdOptions o;
    o.tau = c.tau;
    o.min_rank_frac = c.frac;
    o.chol_eps = 0.0;
    const WhitenedSvdResult r = whitened_truncated_svd(to_tensor(w1, DType::f64), g, o);
    SCOPED_TRACE(::testing::Message() << "tau " << c.tau << " min_rank_frac " << c.frac);
    EXPECT_EQ(r.rank, c.rank);
    ASSERT_EQ(r.sigma.size(), s.size());
    for (std::size_t l = 0; l < s.size(); ++l) EXPECT_NEAR(r.sigma[l], s[l], 1e-12 * s[0]);
    double kept = 0.0;
    for (std::int64_t l = 0; l < c.rank; ++l) kept += s2[static_cast<std::size_t>(l)];
    EXPECT_NEAR(r.energy_kept, kept / 100.0, 1e-12);
    EXPECT_NEAR(r.dropped_sq, 100.0 - kept, 1e-11);
    // W1_r = (the rank-r truncation of M) S0^-1, built here from M's own factors (distinct
    // singular values: the truncation is unique). 1e-10 relative: cond(S0) eps-level errors.
    Matrix mr(F, D);
    if (c.rank > 0) {
      const Svd ms = svd(m);
      Matrix us = column_block(ms.u, 0, c.rank);
      for (std::int64_t i = 0; i < F; ++i)
        for (std::int64_t j = 0; j < c.rank; ++j) us(i, j) *= ms.sigma[j];
      mr = solve_triangular(s0, Triangle::lower, matmul(us, column_block(transpose(ms.vt), 0, c.rank), false, true),
                            Side::right);
    }
    EXPECT_LE(max_abs(minus(to_matrix(r.w1), mr)), 1e-10 * max_abs(w1));
  }
}

// tau = 1 against rounding: with sigma = {1, 1e-9}, sigma_2^2 = 1e-18 is below an ulp of the total
// (1 + 1e-18 == 1 in double), so a plain cumulative test would already reach tau = 1 at r = 1.
TEST(WhitenedSvd, TauOneKeepsSingularValuesBelowAnUlpOfTheEnergy) {
  Matrix w(2, 2);
  w(0, 0) = 1.0;
  w(1, 1) = 1e-9;
  const Tensor eye = to_tensor(Matrix::identity(2), DType::f64);
  WhitenedSvdOptions o;
  o.tau = 1.0;
  o.min_rank_frac = 0.0;
  o.chol_eps = 0.0;  // S = I: the whitened singular values are W1's
  const WhitenedSvdResult r = whitened_truncated_svd(to_tensor(w, DType::f64), eye, o);
  EXPECT_EQ(r.rank, 2);
  // S = I: W1_r = U Sigma V^T = W1 to the SVD's backward error (~2e-16 ||W1||); the 1e-9 entry is
  // kept (1e-3 of it: a dropped direction would leave 0 there).
  const Matrix got = to_matrix(r.w1);
  EXPECT_NEAR(got(0, 0), 1.0, 1e-15);
  EXPECT_NEAR(got(0, 1), 0.0, 1e-15);
  EXPECT_NEAR(got(1, 0), 0.0, 1e-15);
  EXPECT_NEAR(got(1, 1), 1e-9, 1e-12);
  o.tau = 1.0 - 1e-6;  // below 1: the tiny direction carries 1e-18 of the energy and is dropped
  EXPECT_EQ(whitened_truncated_svd(to_tensor(w, DType::f64), eye, o).rank, 1);
}

// Fewer tokens than D: G = X^T X has rank 5 < 16. Without jitter dpotrf fails (or leaves pivots
// at rounding level), so the fallback raises the jitter; with the configured 1e-5 it is not needed.
TEST(WhitenedSvd, SingularSecondMomentFallsBackWithANote) {
  const Matrix x = randn(5, 16, 31);
  const Tensor g = gram(x);
  const Tensor w = testing::randn_tensor({24, 16}, 32, 0.05, DType::f32);
  WhitenedSvdOptions o;
  o.chol_eps = 0.0;
  const WhitenedSvdResult r = whitened_truncated_svd(w, g, o);
  std::printf("rank-5 G, chol_eps 0: %s\n", r.note.c_str());
  EXPECT_TRUE(r.fallback);
  EXPECT_GT(r.jitter, 0.0);
  EXPECT_NE(r.note.find("jitter"), std::string::npos) << r.note;
  EXPECT_TRUE(all_finite(r.w1));
  EXPECT_GE(r.rank, 8);
  EXPECT_LE(r.rank, 16);

  const WhitenedSvdResult d = whitened_truncated_svd(w, g, WhitenedSvdOptions{});
  EXPECT_FALSE(d.fallback) << d.note;  // 1e-5 mean(diag G) I already makes G + j I definite
  EXPECT_TRUE(d.note.empty());
  EXPECT_TRUE(all_finite(d.w1));
}

// G = 0 (a cluster that received no token): mean(diag G) = 0, so the jitter is absolute: 1e-6 I,
// S = 1e-3 I, and the result is the plain truncated SVD of W1 (singular values 1e-3 of W1's).
TEST(WhitenedSvd, ZeroSecondMomentUsesAnAbsoluteJitter) {
  const Tensor w = testing::randn_tensor({24, 16}, 41, 0.05, DType::f32);
  const WhitenedSvdResult r = whitened_truncated_svd(w, Tensor::zeros({16, 16}, DType::f64, Device::cpu), WhitenedSvdOptions{});
  std::printf("G = 0: %s\n", r.note.c_str());
  EXPECT_TRUE(r.fallback);
  EXPECT_NEAR(r.jitter, 1e-6, 1e-21);
  EXPECT_NE(r.note.find("G = 0"), std::string::npos) << r.note;
  EXPECT_TRUE(all_finite(r.w1));
  const Svd ref = svd(to_matrix(w));
  for (std::size_t l = 0; l < ref.sigma.size(); ++l) EXPECT_NEAR(r.sigma[l], 1e-3 * ref.sigma[l], 1e-12 * 1e-3 * ref.sigma[0]);
}

// An indefinite G (eigenvalues 3 and -1): the jitter grows x10 from 1e-5 until G + j I is
// definite with pivots above rounding: j = 1 leaves a zero eigenvalue, j = 10 works (6 retries).
TEST(WhitenedSvd, IndefiniteSecondMomentNeedsALargeJitter) {
  Matrix g(2, 2, 2.0);
  g(0, 0) = g(1, 1) = 1.0;
  const WhitenedSvdResult r =
      whitened_truncated_svd(testing::randn_tensor({3, 2}, 1, 1.0, DType::f32), to_tensor(g, DType::f64), {});
  EXPECT_TRUE(r.fallback);
  EXPECT_NEAR(r.jitter, 10.0, 1e-12);
  EXPECT_NE(r.note.find("6 retries"), std::string::npos) << r.note;
  EXPECT_TRUE(all_finite(r.w1));
}

TEST(WhitenedSvd, ThrowsWhenNoJitterHelpsAndOnBadInput) {
  const Tensor w = testing::randn_tensor({3, 2}, 1, 1.0, DType::f32);
  // Zero diagonal, off-diagonal 1e3: eigenvalues +-1e3 need j > 1e3, beyond the last try (1e1).
  Matrix g(2, 2, 1e3);
  g(0, 0) = g(1, 1) = 0.0;
  try {
    whitened_truncated_svd(w, to_tensor(g, DType::f64), {});
    ADD_FAILURE() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not positive definite"), std::string::npos) << e.what();
  }
  const Tensor eye = to_tensor(Matrix::identity(2), DType::f64);
  Matrix bad = Matrix::identity(2);
  bad(1, 0) = std::nan("");
  EXPECT_THROW(whitened_truncated_svd(w, to_tensor(bad, DType::f64), {}), Error);  // non-finite
  bad = Matrix::identity(2);
  bad(1, 1) = -1.0;
  EXPECT_THROW(whitened_truncated_svd(w, to_tensor(bad, DType::f64), {}), Error);  // negative diagonal
  bad = Matrix::identity(2);
  bad(1, 0) = 0.5;
  EXPECT_THROW(whitened_truncated_svd(w, to_tensor(bad, DType::f64), {}), Error);  // not symmetric
  EXPECT_THROW(whitened_truncated_svd(w, to_tensor(Matrix::identity(3), DType::f64), {}), Error);  // D mismatch
  EXPECT_THROW(whitened_truncated_svd(Tensor::zeros({3}, DType::f32, Device::cpu), eye, {}), Error);                       // not 2-D
  for (WhitenedSvdOptions o : {WhitenedSvdOptions{1.5, 0.5, 1e-5}, WhitenedSvdOptions{0.9, -0.1, 1e-5},
                               WhitenedSvdOptions{0.9, 0.5, -1.0}})
    EXPECT_THROW(whitened_truncated_svd(w, eye, o), Error);
  EXPECT_NO_THROW(whitened_truncated_svd(w, eye, {}));  // the same inputs are fine otherwise
}

// --- drop_svd ---

// W [m, n] f32 with singular values k, k-1, ..., 1 (k = min(m, n)): every gap is 1.
Tensor spaced_spectrum(std::int64_t m, std::int64_t n, std::uint64_t seed) {
  const std::int64_t k = std::min(m, n);
  std::vector<double> s;
  for (std::int64_t i = 0; i < k; ++i) s.push_back(static_cast<double>(k - i));
  return to_tensor(with_spectrum(m, n, s, seed), DType::f32);
}

// The columns of a [rows, cols] up to sign: max over columns of min(|a_c - b_c|, |a_c + b_c|)_inf.
double max_column_diff_up_to_sign(const Matrix& a, const Matrix& b) {
  double worst = 0.0;
  for (std::int64_t c = 0; c < a.cols; ++c) {
    double plus = 0.0, minus_ = 0.0;
    for (std::int64_t i = 0; i < a.rows; ++i) {
      plus = std::max(plus, std::abs(a(i, c) - b(i, c)));
      minus_ = std::max(minus_, std::abs(a(i, c) + b(i, c)));
    }
    worst = std::max(worst, std::min(plus, minus_));
  }
  return worst;
}

// ||Q1 Q1^T - Q2 Q2^T||_F for orthonormal columns: 0 for the same subspace.
double subspace_distance(const Matrix& q1, const Matrix& q2) {
  return frobenius_norm(minus(matmul(q1, q1, false, true), matmul(q2, q2, false, true)));
}

Matrix cols(const Matrix& a, std::int64_t b, std::int64_t e) { return column_block(a, b, e); }
Matrix vcols(const Svd& s, std::int64_t b, std::int64_t e) { return column_block(transpose(s.vt), b, e); }

// f32 bounds. The result is U' S V'^T rounded to f32: ||E||_2 <= ||E||_F <= 2^-24 ||W||_F
// = 6e-8 sqrt(sum k^2) <= 3e-6 for k = 16. Weyl: each singular value moves by <= 3e-6 (<= 3e-6
// relative, the smallest is 1); Wedin: a singular vector whose singular value is 1 away from all
// others turns by <= 3e-6 / 1. Hence 1e-5 on singular values (relative), vectors and inner products.
class DropSvdShapes : public ::testing::TestWithParam<std::pair<int, int>> {};

TEST_P(DropSvdShapes, KeepsTheSpectrumAndTheTopVectorsAndRedrawsTheRest) {
  const auto [m, n] = GetParam();
  const std::int64_t k = std::min(m, n), keep = 12;  // round(0.75 * 16)
  const Tensor w = spaced_spectrum(m, n, 51);
  const Svd orig = svd(to_matrix(w));
  RngStream rng(77, 1000);
  const DropSvdResult res = drop_svd(w, 0.75, rng);
  ASSERT_EQ(res.kept, keep);
  EXPECT_EQ(res.w.dtype(), DType::f32);
  EXPECT_EQ(res.w.shape(), w.shape());
  EXPECT_EQ(rng.offset(), 1000u + 2u * static_cast<std::uint64_t>((m + n) * (k - keep)));

  // The result's own SVD: the whole spectrum is the original's.
  const Svd got = svd(to_matrix(res.w));
  double sv_err = 0.0;
  for (std::int64_t l = 0; l < k; ++l) sv_err = std::max(sv_err, std::abs(got.sigma[l] - orig.sigma[l]) / orig.sigma[l]);
  // Its top `keep` singular vectors are the original ones (up to sign).
  const double u_err = max_column_diff_up_to_sign(cols(got.u, 0, keep), cols(orig.u, 0, keep));
  const double v_err = max_column_diff_up_to_sign(vcols(got, 0, keep), vcols(orig, 0, keep));
  // Its other singular vectors are orthogonal to the original kept ones.
  const double u_orth = max_abs(matmul(cols(orig.u, 0, keep), cols(got.u, keep, k), true, false));
  const double v_orth = max_abs(matmul(vcols(orig, 0, keep), vcols(got, keep, k), true, false));
  std::printf("drop_svd [%d, %d]: sigma rel %.2e, kept u %.2e v %.2e, new vs kept u %.2e v %.2e\n", m, n, sv_err, u_err,
              v_err, u_orth, v_orth);
  EXPECT_LE(sv_err, 1e-5);
  EXPECT_LE(u_err, 1e-5);
  EXPECT_LE(v_err, 1e-5);
  EXPECT_LE(u_orth, 1e-5);
  EXPECT_LE(v_orth, 1e-5);

  // The factors used (f64, no f32 rounding: 1e-12): orthonormal, kept columns = the original's,
  // new columns orthogonal to them, and the result's tail vectors are these new ones.
  const Svd& f = res.factors;
  for (std::int64_t l = 0; l < k; ++l) EXPECT_NEAR(f.sigma[l], orig.sigma[l], 1e-12 * orig.sigma[0]);
  const Matrix fu = f.u, fv = transpose(f.vt);
  EXPECT_LE(max_abs(minus(matmul(fu, fu, true, false), Matrix::identity(k))), 1e-12);
  EXPECT_LE(max_abs(minus(matmul(fv, fv, true, false), Matrix::identity(k))), 1e-12);
  EXPECT_LE(max_abs(minus(cols(fu, 0, keep), cols(orig.u, 0, keep))), 1e-12);
  EXPECT_LE(max_abs(minus(cols(fv, 0, keep), vcols(orig, 0, keep))), 1e-12);
  EXPECT_LE(max_column_diff_up_to_sign(cols(got.u, keep, k), cols(fu, keep, k)), 1e-5);
  EXPECT_LE(max_column_diff_up_to_sign(vcols(got, keep, k), cols(fv, keep, k)), 1e-5);

  // The tail really was re-drawn: W moved by about the tail's energy (sqrt(2 (16+9+4+1)) / ||W||_F
  // ~ 0.2 for independent vectors), far above the f32 rounding (6e-8).
  EXPECT_GT(testing::relative_error(res.w, w).rel, 1e-2);
}

INSTANTIATE_TEST_SUITE_P(TallAndWide, DropSvdShapes, ::testing::Values(std::pair{24, 16}, std::pair{16, 24}));

TEST(DropSvd, StreamOffsetsGiveIndependentDeterministicDraws) {
  const Tensor w = spaced_spectrum(24, 16, 61);
  const std::uint64_t per_call = 2 * (24 + 16) * 4;  // 2 words per normal, (m + n)(k - kept) normals
  RngStream a(5), b(5, per_call), a_again(5);
  const DropSvdResult ra = drop_svd(w, 0.75, a);
  const DropSvdResult rb = drop_svd(w, 0.75, b);
  const DropSvdResult ra2 = drop_svd(w, 0.75, a_again);
  EXPECT_EQ(a.offset(), per_call);
  EXPECT_EQ(b.offset(), 2 * per_call);
  // Same stream position: bit-identical.
  EXPECT_EQ(ra.w.to_vector<float>(), ra2.w.to_vector<float>());
  // A second call on the same stream continues where the first ended: it equals the call at b's offset.
  const DropSvdResult next = drop_svd(w, 0.75, a_again);
  EXPECT_EQ(next.w.to_vector<float>(), rb.w.to_vector<float>());
  EXPECT_EQ(a_again.offset(), 2 * per_call);
  // Different offsets: different new left vectors. They are random 4-dim subspaces of the
  // 12-dim complement of the kept columns in R^24: expected distance sqrt(2 (4 - 16/12)) = 2.3.
  const Matrix ua = column_block(ra.factors.u, 12, 16), ub = column_block(rb.factors.u, 12, 16);
  const double dist = subspace_distance(ua, ub);
  std::printf("new-vector subspaces at two offsets: distance %.3f\n", dist);
  EXPECT_GT(dist, 0.5);
  // Another seed, same offset: different as well.
  RngStream c(6);
  EXPECT_GT(subspace_distance(ua, column_block(drop_svd(w, 0.75, c).factors.u, 12, 16)), 0.5);
}

TEST(DropSvd, KeepAllDrawsNothingAndKeepNoneRedrawsEverything) {
  const Tensor w = spaced_spectrum(10, 6, 71);
  RngStream rng(3, 40);
  const DropSvdResult all = drop_svd(w, 1.0, rng);
  EXPECT_EQ(all.kept, 6);
  EXPECT_EQ(rng.offset(), 40u);
  EXPECT_EQ(all.w.to_vector<float>(), w.to_vector<float>());

  const DropSvdResult none = drop_svd(w, 0.0, rng);
  EXPECT_EQ(none.kept, 0);
  EXPECT_EQ(rng.offset(), 40u + 2u * (10 + 6) * 6);
  const Svd got = svd(to_matrix(none.w));
  const Svd orig = svd(to_matrix(w));
  for (std::size_t l = 0; l < orig.sigma.size(); ++l) EXPECT_NEAR(got.sigma[l], orig.sigma[l], 1e-5 * orig.sigma[l]);
  // round(keep_frac k): 0.5 * 6 = 3, 0.75 * 6 = 4.5 -> 5 (half away from zero).
  EXPECT_EQ(drop_svd(w, 0.5, rng).kept, 3);
  EXPECT_EQ(drop_svd(w, 0.75, rng).kept, 5);
}

TEST(DropSvd, RejectsBadArguments) {
  RngStream rng(1);
  const Tensor w = spaced_spectrum(4, 3, 1);
  EXPECT_THROW(drop_svd(w, 1.5, rng), Error);
  EXPECT_THROW(drop_svd(w, -0.1, rng), Error);
  EXPECT_THROW(drop_svd(Tensor::zeros({2, 3, 4}, DType::f32, Device::cpu), 0.75, rng), Error);
  EXPECT_EQ(rng.offset(), 0u);  // nothing drawn on a rejected call
}

}  // namespace
}  // namespace upcycle::init
