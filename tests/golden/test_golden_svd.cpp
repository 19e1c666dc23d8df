// The float64 SVD (include/upcycle/init/linalg.hpp) and the whitened truncated SVD
// (include/upcycle/init/whitened_svd.hpp) against numpy, from the file tests/golden/gen_svd.py
// wrote (see its docstring for the layout and the cases). Usage: test_golden_svd FILE.h5.
//
// Bounds. Both sides run backward-stable LAPACK factorisations in double, so each result is exact
// for a matrix within ~n eps ||A|| (~1e-14 relative) of the input:
//  - singular values (Weyl): |sigma_l - sigma_l^ref| <= 1e-12 sigma_max. Per value, not relative
//    to sigma_l: the zero singular values of the rank-deficient case are rounding noise on both sides.
//  - singular vectors of non-zero, separated singular values (the generator keeps gaps >= 1e-3
//    sigma_max; Wedin: error <= eps ||A|| / gap ~ 1e-13), compared up to sign: 1e-10. Null-space
//    vectors are not unique; only their orthogonality to the reference's range is checked.
//  - whitened W1_r: the truncation is unique (s_r - s_{r+1} >= 1e-2 s_1) and S = chol(G) is
//    well-conditioned (cond ~ 2-3 for Gaussian X with N >= 5 D), so W1_r agrees to ~1e-13 of
//    max|W1_r|; asserted at 1e-10. Energies, dropped_sq and jitter: 1e-12 relative.
// A mismatch in the rank rule, the jitter, the whitening or a transpose gives errors of O(1e-2+).
// Measured errors are printed.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "upcycle/init/whitened_svd.hpp"
#include "upcycle/io/hdf5.hpp"

namespace upcycle {
namespace {

using init::Matrix;

std::string g_file;

double max_abs(const Matrix& a) {
  double m = 0.0;
  for (double v : a.data) m = std::max(m, std::abs(v));
  return m;
}

// Columns [0, count) of a and b, each up to sign: max over columns of min(|a - b|, |a + b|)_inf.
double columns_up_to_sign(const Matrix& a, const Matrix& b, std::int64_t count) {
  double worst = 0.0;
  for (std::int64_t c = 0; c < count; ++c) {
    double plus = 0.0, minus = 0.0;
    for (std::int64_t i = 0; i < a.rows; ++i) {
      plus = std::max(plus, std::abs(a(i, c) - b(i, c)));
      minus = std::max(minus, std::abs(a(i, c) + b(i, c)));
    }
    worst = std::max(worst, std::min(plus, minus));
  }
  return worst;
}

Matrix read(const h5::File& f, const std::string& path) { return init::to_matrix(h5::read_tensor(f, path, DType::f64)); }

std::vector<double> read_vector(const h5::File& f, const std::string& path) {
  return h5::read_tensor(f, path, DType::f64).to_vector<double>();
}

class GoldenSvd : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenSvd, MatchesNumpy) {
  ASSERT_FALSE(g_file.empty()) << "usage: test_golden_svd FILE.h5 (written by tests/golden/gen_svd.py)";
  const h5::File f = h5::File::open(g_file);
  const std::string base = "svd/" + GetParam();
  const Matrix a = read(f, base + "/a"), u_ref = read(f, base + "/u"), vt_ref = read(f, base + "/vt");
  const std::vector<double> s_ref = read_vector(f, base + "/sigma");
  const std::int64_t rank = h5::read_int_attribute(f, base, "rank");

  const init::Svd s = init::svd(a);
  ASSERT_EQ(s.sigma.size(), s_ref.size());
  double sv_err = 0.0;
  for (std::size_t l = 0; l < s_ref.size(); ++l) sv_err = std::max(sv_err, std::abs(s.sigma[l] - s_ref[l]));
  sv_err /= s_ref[0];
  const Matrix v = init::transpose(s.vt), v_ref = init::transpose(vt_ref);
  const double u_err = columns_up_to_sign(s.u, u_ref, rank);
  const double v_err = columns_up_to_sign(v, v_ref, rank);
  // Null-space columns (rank-deficient case): orthogonal to the reference's range.
  const std::int64_t k = static_cast<std::int64_t>(s_ref.size());
  double null_err = 0.0;
  if (rank < k) {
    const Matrix cross = init::matmul(init::column_block(u_ref, 0, rank), init::column_block(s.u, rank, k), true, false);
    const Matrix cross_v = init::matmul(init::column_block(v_ref, 0, rank), init::column_block(v, rank, k), true, false);
    null_err = std::max(max_abs(cross), max_abs(cross_v));
  }
  std::printf("%-15s [%lld, %lld] rank %lld: sigma max|diff|/sigma_max %.2e  U %.2e  V %.2e  null-space %.2e\n",
              GetParam().c_str(), static_cast<long long>(a.rows), static_cast<long long>(a.cols),
              static_cast<long long>(rank), sv_err, u_err, v_err, null_err);
  EXPECT_LE(sv_err, 1e-12);
  EXPECT_LE(u_err, 1e-10);
  EXPECT_LE(v_err, 1e-10);
  EXPECT_LE(null_err, 1e-10);
}

INSTANTIATE_TEST_SUITE_P(Cases, GoldenSvd,
                         ::testing::Values("tall", "wide", "square", "tall_large", "rank_deficient"));

class GoldenWhitenedSvd : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenWhitenedSvd, MatchesNumpy) {
  ASSERT_FALSE(g_file.empty()) << "usage: test_golden_svd FILE.h5 (written by tests/golden/gen_svd.py)";
  const h5::File f = h5::File::open(g_file);
  const std::string base = "whitened/" + GetParam();
  const Tensor w1 = h5::read_tensor(f, base + "/w1", DType::f64);
  const Tensor g = h5::read_tensor(f, base + "/g", DType::f64);
  const Matrix w1_r_ref = read(f, base + "/w1_r");
  const std::vector<double> s_ref = read_vector(f, base + "/sigma");
  init::WhitenedSvdOptions o;
  o.tau = h5::read_double_attribute(f, base, "tau");
  o.min_rank_frac = h5::read_double_attribute(f, base, "min_rank_frac");
  o.chol_eps = h5::read_double_attribute(f, base, "chol_eps");

  const init::WhitenedSvdResult r = init::whitened_truncated_svd(w1, g, o);
  EXPECT_FALSE(r.fallback) << r.note;
  EXPECT_EQ(r.rank, h5::read_int_attribute(f, base, "rank"));
  ASSERT_EQ(r.sigma.size(), s_ref.size());
  double sv_err = 0.0;
  for (std::size_t l = 0; l < s_ref.size(); ++l) sv_err = std::max(sv_err, std::abs(r.sigma[l] - s_ref[l]));
  sv_err /= s_ref[0];
  const Matrix got = init::to_matrix(r.w1);
  double diff = 0.0;
  for (std::size_t i = 0; i < got.data.size(); ++i) diff = std::max(diff, std::abs(got.data[i] - w1_r_ref.data[i]));
  const double w_err = diff / max_abs(w1_r_ref);
  const auto rel = [](double x, double ref) { return std::abs(x - ref) / std::abs(ref); };
  const double e_err = rel(r.energy_kept, h5::read_double_attribute(f, base, "energy_kept"));
  const double d_err = rel(r.dropped_sq, h5::read_double_attribute(f, base, "dropped_sq"));
  const double j_err = rel(r.jitter, h5::read_double_attribute(f, base, "jitter"));
  std::printf("%-13s rank %lld: sigma %.2e  W1_r max|diff|/max|ref| %.2e  energy %.2e  dropped %.2e  jitter %.2e\n",
              GetParam().c_str(), static_cast<long long>(r.rank), sv_err, w_err, e_err, d_err, j_err);
  EXPECT_LE(sv_err, 1e-12);
  EXPECT_LE(w_err, 1e-10);
  EXPECT_LE(e_err, 1e-12);
  EXPECT_LE(d_err, 1e-12);
  EXPECT_LE(j_err, 1e-12);
}

INSTANTIATE_TEST_SUITE_P(Cases, GoldenWhitenedSvd,
                         ::testing::Values("tau_decides", "floor_decides", "swiglu", "wide"));

}  // namespace
}  // namespace upcycle

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (argc >= 2) upcycle::g_file = argv[1];
  return RUN_ALL_TESTS();
}
