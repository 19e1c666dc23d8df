// The device path of the whitened truncated SVD (whitened_truncated_svd_on_device) and the
// float64 linear algebra it is written on (include/upcycle/init/device_linalg.hpp), run on host
// tensors: the same steps and the same column-major library arguments as on a GPU, with LAPACKE
// and CBLAS in place of cuSOLVER and cuBLAS. The GPU test (tests/gpu/test_cluster_upcycling_cuda)
// runs the same comparisons on cuda tensors.
//
// Bounds. On the planted inputs (tests/support/whitened_svd_parity.hpp) cond(S) <= 3 and the kept
// spectrum is separated from the dropped one by sigma_r^2 - sigma_{r+1}^2 >= sigma_1^2 / 30, so the
// two factorisations agree to ~ D eps sigma_1^2 / gap ~ 1e-13 on the kept projector and, after the
// solve with S, on W1_r (measured: <= 2e-14): 1e-10 leaves a wide margin and is far below any
// layout error (a transposed factor or a wrong triangle moves W1_r by O(1)). The routines' own
// tests read NaN where a triangle must not be read.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "error_of.hpp"
#include "gradcheck.hpp"
#include "upcycle/core/rng.hpp"
#include "upcycle/init/device_linalg.hpp"
#include "upcycle/init/whitened_svd.hpp"
#include "whitened_svd_parity.hpp"

namespace upcycle::init {
namespace {

using testing::error_of;
using testing::expect_same_svd;
using testing::planted_svd;
using testing::PlantedSvd;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// sigma^2 summing to 100 with cumulative energies 30, 50, 65, 75, 83, 89, 93, 96, 98, 99, 99.5,
// 99.8, 99.9, 99.95, 99.98, 100: the taus below are >= 0.5 % from every boundary.
std::vector<double> spectrum16() {
  std::vector<double> s;
  for (double v : {30.0, 20.0, 15.0, 10.0, 8.0, 6.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.3, 0.1, 0.05, 0.03, 0.02})
    s.push_back(std::sqrt(v));
  return s;
}

// A symmetric matrix [n, n] given by its lower triangle, NaN above (which no routine may read).
Tensor lower_only(const Matrix& a) {
  Matrix b = a;
  for (std::int64_t i = 0; i < b.rows; ++i)
    for (std::int64_t j = i + 1; j < b.cols; ++j) b(i, j) = kNaN;
  return to_tensor(b, DType::f64);
}

Matrix spd(std::int64_t n, std::uint64_t seed) {
  const Matrix x = to_matrix(testing::randn_tensor({3 * n, n}, seed));
  return matmul(x, x, true, false);
}

double max_abs_diff(const Matrix& a, const Matrix& b) {
  double m = 0.0;
  for (std::size_t i = 0; i < a.data.size(); ++i) m = std::max(m, std::abs(a.data[i] - b.data[i]));
  return m;
}

// --- device_linalg on host tensors ------------------------------------------------------------

// L L^T = A to ~ n eps ||A|| (backward stability of Cholesky; measured ~1e-15 relative), the strict
// upper triangle (NaN) neither read nor written, and the order of the first non-definite minor.
TEST(DeviceLinalg, CholeskyReadsAndWritesTheLowerTriangleOnly) {
  const Matrix a = spd(12, 1);
  Tensor t = lower_only(a);
  ASSERT_EQ(cholesky_lower_in_place(t), 0);
  Matrix l = to_matrix(t);
  for (std::int64_t i = 0; i < 12; ++i)
    for (std::int64_t j = i + 1; j < 12; ++j) {
      EXPECT_TRUE(std::isnan(l(i, j))) << "the strict upper triangle was written at " << i << ", " << j;
      l(i, j) = 0.0;
    }
  for (std::int64_t i = 0; i < 12; ++i) EXPECT_GT(l(i, i), 0.0);
  EXPECT_LE(max_abs_diff(matmul(l, l, false, true), a), 1e-12 * max_abs_diff(a, Matrix(12, 12)));
  // The leading 3 x 3 minor is indefinite: info 3.
  Matrix bad = Matrix::identity(4);
  bad(2, 2) = -1.0;
  Tensor b = lower_only(bad);
  EXPECT_EQ(cholesky_lower_in_place(b), 3);
}

TEST(DeviceLinalg, TriangularProductAndSolveReadOnlyTheLowerTriangle) {
  Matrix l = to_matrix(testing::randn_tensor({7, 7}, 2));
  for (std::int64_t i = 0; i < 7; ++i) {
    l(i, i) = 2.0 + std::abs(l(i, i));
    for (std::int64_t j = i + 1; j < 7; ++j) l(i, j) = 0.0;
  }
  const Matrix b = to_matrix(testing::randn_tensor({5, 7}, 3));
  const Tensor lt = lower_only(l);  // NaN above the diagonal
  Tensor out = Tensor::empty({5, 7}, DType::f64, Device::cpu);
  multiply_lower_right(to_tensor(b, DType::f64), lt, out);
  EXPECT_LE(max_abs_diff(to_matrix(out), matmul(b, l)), 1e-13);
  Tensor x = to_tensor(b, DType::f64);
  solve_lower_right_in_place(x, lt);
  EXPECT_LE(max_abs_diff(matmul(to_matrix(x), l), b), 1e-13);
  EXPECT_NE(error_of([&] {
              multiply_lower_right(to_tensor(b, DType::f64), to_tensor(Matrix::identity(5), DType::f64), out);
            }).find("do not fit out = b L"),
            std::string::npos);
  Tensor f32 = Tensor::zeros({5, 7}, DType::f32, Device::cpu);
  EXPECT_NE(error_of([&] { solve_lower_right_in_place(f32, lt); }).find("b must be a 2-D f64 matrix"),
            std::string::npos);
}

// Eigenvalues ascending, rows orthonormal eigenvectors: ||A v - lambda v|| <= ~n eps ||A||.
TEST(DeviceLinalg, SymmetricEigenGivesAscendingValuesAndEigenvectorRows) {
  const Matrix a = spd(10, 4);
  Tensor v = lower_only(a);
  Tensor w = Tensor::empty({10}, DType::f64, Device::cpu);
  symmetric_eigen_in_place(v, w);
  const std::vector<double> lambda = w.to_vector<double>();
  const Matrix vm = to_matrix(v);
  const double scale = lambda.back();
  for (std::int64_t i = 0; i < 10; ++i) {
    if (i > 0) {
      EXPECT_LE(lambda[static_cast<std::size_t>(i - 1)], lambda[static_cast<std::size_t>(i)]);
    }
    for (std::int64_t r = 0; r < 10; ++r) {
      double av = 0.0;
      for (std::int64_t c = 0; c < 10; ++c) av += a(r, c) * vm(i, c);
      EXPECT_NEAR(av, lambda[static_cast<std::size_t>(i)] * vm(i, r), 1e-12 * scale) << "eigenpair " << i;
    }
    for (std::int64_t j = 0; j < 10; ++j) {
      double dot = 0.0;
      for (std::int64_t c = 0; c < 10; ++c) dot += vm(i, c) * vm(j, c);
      EXPECT_NEAR(dot, i == j ? 1.0 : 0.0, 1e-13);
    }
  }
}

// --- the device path against the host path ----------------------------------------------------

TEST(WhitenedSvdOnDevice, MatchesTheHostPathOnAPlantedSpectrum) {
  struct Case {
    double tau, frac, chol_eps;
  };
  const Case cases[] = {{0.9, 0.0, 0.0},  {0.9, 0.5, 1e-5},   {0.55, 0.0, 1e-5}, {0.985, 0.0, 0.0},
                        {1.0, 0.0, 1e-5}, {0.3, 0.75, 1e-5}, {0.0, 0.0, 1e-5}};
  const PlantedSvd p = planted_svd(64, 16, spectrum16(), 10);
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << "tau " << c.tau << " min_rank_frac " << c.frac << " chol_eps " << c.chol_eps);
    WhitenedSvdOptions o;
    o.tau = c.tau;
    o.min_rank_frac = c.frac;
    o.chol_eps = c.chol_eps;
    const WhitenedSvdResult host = whitened_truncated_svd(p.w1, p.g, o);
    const WhitenedSvdResult dev = whitened_truncated_svd_on_device(p.w1, p.g, o);
    expect_same_svd(host, dev, p.g, 1e-10);
    EXPECT_EQ(dev.w1.device(), Device::cpu);
  }
  // The planted ranks, so that the comparisons above covered r = 0, a middle rank and r = D.
  WhitenedSvdOptions o;
  o.min_rank_frac = 0.0;
  o.chol_eps = 0.0;
  EXPECT_EQ(whitened_truncated_svd_on_device(p.w1, p.g, o).rank, 7);
  o.tau = 1.0;
  EXPECT_EQ(whitened_truncated_svd_on_device(p.w1, p.g, o).rank, 16);
  o.tau = 0.0;
  EXPECT_EQ(whitened_truncated_svd_on_device(p.w1, p.g, o).rank, 0);
}

// F < D (a narrow FFN, or few rows): min(F, D) = F singular values, the Gram matrix has D - F zero
// eigenvalues that must not be counted. And an f32 W1 (the upcycler's dtype): W1_r rounded to f32
// on both sides, so 2^-24 relative per element (Frobenius: the same bound).
TEST(WhitenedSvdOnDevice, MatchesTheHostPathForFewerRowsThanColumnsAndForF32) {
  std::vector<double> s;
  for (double v : {9.0, 5.0, 2.0, 1.0, 0.4, 0.2, 0.1, 0.05}) s.push_back(std::sqrt(v));
  const PlantedSvd narrow = planted_svd(8, 12, s, 20);
  for (double tau : {0.8, 1.0}) {
    WhitenedSvdOptions o;
    o.tau = tau;
    o.min_rank_frac = 0.25;
    const WhitenedSvdResult host = whitened_truncated_svd(narrow.w1, narrow.g, o);
    const WhitenedSvdResult dev = whitened_truncated_svd_on_device(narrow.w1, narrow.g, o);
    ASSERT_EQ(dev.sigma.size(), 8u);
    expect_same_svd(host, dev, narrow.g, 1e-10);
  }
  const PlantedSvd p32 = planted_svd(64, 16, spectrum16(), 30, DType::f32);
  const WhitenedSvdResult host = whitened_truncated_svd(p32.w1, p32.g, WhitenedSvdOptions{});
  const WhitenedSvdResult dev = whitened_truncated_svd_on_device(p32.w1, p32.g, WhitenedSvdOptions{});
  EXPECT_EQ(dev.w1.dtype(), DType::f32);
  expect_same_svd(host, dev, p32.g, 2e-7);
}

// The random-subspace control: the same Q from the same stream on both paths, so the same W1_r
// and the same energy; and both leave the stream at the same offset.
TEST(WhitenedSvdOnDevice, RandomSubspaceControlKeepsTheHostPathsBasis) {
  const PlantedSvd p = planted_svd(64, 16, spectrum16(), 40);
  RngStream a(77, 5), b(77, 5);
  WhitenedSvdOptions oa, ob;
  oa.random_subspace = &a;
  ob.random_subspace = &b;
  const WhitenedSvdResult host = whitened_truncated_svd(p.w1, p.g, oa);
  const WhitenedSvdResult dev = whitened_truncated_svd_on_device(p.w1, p.g, ob);
  EXPECT_EQ(a.offset(), b.offset());
  EXPECT_GT(a.offset(), 5u);
  expect_same_svd(host, dev, p.g, 1e-10);
  const WhitenedSvdResult best = whitened_truncated_svd_on_device(p.w1, p.g, WhitenedSvdOptions{});
  EXPECT_EQ(dev.rank, best.rank);
  EXPECT_LT(dev.energy_kept, best.energy_kept - 0.01);  // a random subspace keeps clearly less
}

// The fallbacks take the same jitter on both paths (the rule and the pivot floor are shared) and
// write the same note. A singular G (5 tokens in 16 dims, chol_eps = 0) is factored with jitter
// 1e-9 mean(diag G): cond(S) ~ 1e5 amplifies the paths' rounding in the solve and the wide spread
// of W1 S's spectrum (sigma_1^2 / gap ~ 1e3) in the Gram matrix, so W1_r and the kept subspace
// agree to ~ cond(S) D eps sigma_1^2 / gap ~ 4e-7 there (measured 2.3e-7 and 8e-7): bound 1e-5.
// The rank, the jitter and the note agree exactly.
TEST(WhitenedSvdOnDevice, FallbacksTakeTheSameJitterAndNote) {
  const Matrix x = to_matrix(testing::randn_tensor({5, 16}, 31));
  const Tensor g = to_tensor(matmul(x, x, true, false), DType::f64);
  const Tensor w = testing::randn_tensor({24, 16}, 32, 0.05, DType::f64);
  WhitenedSvdOptions o;
  o.chol_eps = 0.0;
  const WhitenedSvdResult host = whitened_truncated_svd(w, g, o), dev = whitened_truncated_svd_on_device(w, g, o);
  EXPECT_TRUE(dev.fallback);
  EXPECT_FALSE(dev.note.empty());
  expect_same_svd(host, dev, g, 1e-5);

  const Tensor zero = Tensor::zeros({16, 16}, DType::f64, Device::cpu);
  const WhitenedSvdResult hz = whitened_truncated_svd(w, zero, {}), dz = whitened_truncated_svd_on_device(w, zero, {});
  EXPECT_EQ(dz.jitter, 1e-6);
  expect_same_svd(hz, dz, zero, 1e-10);

  Matrix indefinite(2, 2, 2.0);
  indefinite(0, 0) = indefinite(1, 1) = 1.0;
  const Tensor gi = to_tensor(indefinite, DType::f64), wi = testing::randn_tensor({3, 2}, 1, 1.0, DType::f64);
  const WhitenedSvdResult hi = whitened_truncated_svd(wi, gi, {}), di = whitened_truncated_svd_on_device(wi, gi, {});
  EXPECT_NE(di.note.find("6 retries"), std::string::npos) << di.note;
  expect_same_svd(hi, di, gi, 1e-10);
}

// Bad input fails with the host path's messages: the shared checks throw from the same place.
TEST(WhitenedSvdOnDevice, RejectsBadInputWithTheHostPathsMessages) {
  const Tensor w = testing::randn_tensor({3, 2}, 1, 1.0, DType::f32);
  auto both = [&](const Matrix& g, const WhitenedSvdOptions& o) {
    const std::string host = error_of([&] { whitened_truncated_svd(w, to_tensor(g, DType::f64), o); });
    const std::string dev = error_of([&] { whitened_truncated_svd_on_device(w, to_tensor(g, DType::f64), o); });
    EXPECT_FALSE(host.empty());
    EXPECT_EQ(dev, host);
    return dev;
  };
  Matrix bad = Matrix::identity(2);
  bad(1, 0) = 0.5;
  EXPECT_NE(both(bad, {}).find("G is not symmetric: G(1, 0) = 0.5"), std::string::npos);
  bad = Matrix::identity(2);
  bad(1, 0) = kNaN;
  EXPECT_NE(both(bad, {}).find("G(1, 0) is not finite"), std::string::npos);
  bad = Matrix::identity(2);
  bad(1, 1) = -1.0;
  EXPECT_NE(both(bad, {}).find("diagonal entry 1 = -1"), std::string::npos);
  Matrix far(2, 2, 1e3);
  far(0, 0) = far(1, 1) = 0.0;
  EXPECT_NE(both(far, {}).find("not positive definite for any jitter"), std::string::npos);
  EXPECT_NE(both(Matrix::identity(2), WhitenedSvdOptions{1.5, 0.5, 1e-5}).find("tau must be in [0, 1]"),
            std::string::npos);
  EXPECT_NE(error_of([&] { whitened_truncated_svd_on_device(w, to_tensor(Matrix::identity(3), DType::f64), {}); })
                .find("second moment must be [D, D] = [2, 2]"),
            std::string::npos);
}

}  // namespace
}  // namespace upcycle::init
