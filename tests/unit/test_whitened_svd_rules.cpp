// The rules both paths of the whitened SVD share (include/upcycle/init/whitened_svd_rules.hpp):
// the rank rule with its floor and cap, the jitter schedule and its notes, the pivot floor, the
// energies and the checks of G. Each is a plain function of a few numbers, so the expected values
// are written out here.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <string>
#include <vector>

#include "error_of.hpp"
#include "upcycle/init/whitened_svd_rules.hpp"

namespace upcycle::init {
namespace {

using testing::error_of;

std::vector<double> roots(const std::vector<double>& squares) {
  std::vector<double> s;
  for (double v : squares) s.push_back(std::sqrt(v));
  return s;
}

// sigma^2 = {40, 30, 20, 5, 3, 2}: cumulative energies 0.40, 0.70, 0.90, 0.95, 0.98, 1.
TEST(WhitenedSvdRules, RankIsTheSmallestPrefixReachingTauThenFloorAndCap) {
  const std::vector<double> s = roots({40, 30, 20, 5, 3, 2});
  EXPECT_EQ(whitened_svd_rank(s, 0.0, 0.0, 6), 0);
  EXPECT_EQ(whitened_svd_rank(s, 0.39, 0.0, 6), 1);
  EXPECT_EQ(whitened_svd_rank(s, 0.41, 0.0, 6), 2);
  EXPECT_EQ(whitened_svd_rank(s, 0.89, 0.0, 6), 3);
  EXPECT_EQ(whitened_svd_rank(s, 0.97, 0.0, 6), 5);
  EXPECT_EQ(whitened_svd_rank(s, 1.0, 0.0, 6), 6);
  EXPECT_EQ(whitened_svd_rank(s, 0.41, 0.5, 6), 3);    // floor ceil(0.5 * 6) = 3
  EXPECT_EQ(whitened_svd_rank(s, 0.41, 0.3, 10), 3);   // ceil(0.3 * 10) = 3 despite 0.3 * 10 = 3.0000000000000004
  EXPECT_EQ(whitened_svd_rank(s, 0.41, 1.0, 16), 6);   // the floor 16 is capped at min(F, D) = 6
  // tau = 1 counts every non-zero singular value, even those below an ulp of the energy.
  EXPECT_EQ(whitened_svd_rank({1.0, 1e-9, 0.0}, 1.0, 0.0, 3), 2);
  // W1 S = 0: no energy, rank 0 unless the floor asks for more.
  EXPECT_EQ(whitened_svd_rank({0.0, 0.0}, 0.9, 0.0, 2), 0);
  EXPECT_EQ(whitened_svd_rank({0.0, 0.0}, 0.9, 0.5, 2), 1);
}

TEST(WhitenedSvdRules, EnergiesOfATruncationAndOfASubspace) {
  const std::vector<double> s = roots({40, 30, 20, 5, 3, 2});
  const TruncationEnergy t = truncation_energy(s, 3);
  EXPECT_NEAR(t.energy_kept, 0.9, 1e-15);
  EXPECT_NEAR(t.dropped_sq, 10.0, 1e-13);
  EXPECT_EQ(truncation_energy(s, 6).dropped_sq, 0.0);
  EXPECT_EQ(truncation_energy({0.0, 0.0}, 1).energy_kept, 1.0);  // nothing to lose
  const TruncationEnergy q = subspace_energy(s, 25.0);
  EXPECT_NEAR(q.energy_kept, 0.25, 1e-15);
  EXPECT_NEAR(q.dropped_sq, 75.0, 1e-13);
  EXPECT_EQ(subspace_energy(s, 100.0 + 1e-12).dropped_sq, 0.0);  // never negative
}

// The jitters tried, in order: chol_eps mean(diag), then 10^k max(chol_eps, 1e-10) mean(diag) for
// k = 1 .. 8; with mean(diag) = 0 only the absolute 1e-6 .. 1e1.
TEST(WhitenedSvdRules, JitterScheduleAndNotes) {
  std::vector<double> tried;
  const auto refuse_until = [&](double accept_from) {
    return [&tried, accept_from](double j) {
      tried.push_back(j);
      return j >= accept_from;
    };
  };
  const CholeskyJitter first = choose_cholesky_jitter(2.0, 1e-5, 16, refuse_until(0.0));
  EXPECT_EQ(tried, std::vector<double>({2e-5}));
  EXPECT_FALSE(first.fallback);
  EXPECT_EQ(first.jitter, 2e-5);
  EXPECT_TRUE(first.note.empty());

  tried.clear();
  const CholeskyJitter third = choose_cholesky_jitter(2.0, 1e-5, 16, refuse_until(1e-2));
  ASSERT_EQ(tried.size(), 4u);
  EXPECT_DOUBLE_EQ(tried[1], 2e-4);
  EXPECT_DOUBLE_EQ(tried[2], 2e-3);
  EXPECT_DOUBLE_EQ(tried[3], 2e-2);
  EXPECT_TRUE(third.fallback);
  EXPECT_EQ(third.jitter, tried[3]);
  EXPECT_NE(third.note.find("G singular or indefinite"), std::string::npos) << third.note;
  EXPECT_NE(third.note.find("after 3 retries"), std::string::npos) << third.note;

  tried.clear();  // chol_eps = 0: the fallback starts from 1e-10 mean(diag)
  choose_cholesky_jitter(1.0, 0.0, 4, refuse_until(1e-12));
  EXPECT_EQ(tried.front(), 0.0);
  EXPECT_DOUBLE_EQ(tried[1], 1e-9);

  tried.clear();  // G = 0: no relative try, absolute jitters
  const CholeskyJitter zero = choose_cholesky_jitter(0.0, 1e-5, 4, refuse_until(0.0));
  EXPECT_EQ(tried, std::vector<double>({1e-6}));
  EXPECT_TRUE(zero.fallback);
  EXPECT_NE(zero.note.find("G = 0"), std::string::npos) << zero.note;
  EXPECT_NE(zero.note.find("after 1 retry"), std::string::npos) << zero.note;

  tried.clear();
  const std::string err = error_of([&] { choose_cholesky_jitter(1.0, 1e-5, 4, refuse_until(1e9)); });
  EXPECT_EQ(tried.size(), 9u);
  EXPECT_NE(err.find("not positive definite for any jitter j up to 1000"), std::string::npos) << err;
}

// Pivots are accepted strictly above 10 n eps max(diag G + j).
TEST(WhitenedSvdRules, PivotFloor) {
  const double floor = 10.0 * 4.0 * DBL_EPSILON * 3.0;
  EXPECT_TRUE(cholesky_pivots_safe({1.0, 1.0, 1.0, std::sqrt(floor) * 1.01}, 3.0));
  EXPECT_FALSE(cholesky_pivots_safe({1.0, 1.0, 1.0, std::sqrt(floor) * 0.99}, 3.0));
  EXPECT_FALSE(cholesky_pivots_safe({1.0, std::nan(""), 1.0, 1.0}, 3.0));
  EXPECT_EQ(max_jittered_diagonal({1.0, 3.0, 2.0}, 0.5), 3.5);
  EXPECT_EQ(mean_diagonal({1.0, 3.0, 2.0}), 2.0);
}

TEST(WhitenedSvdRules, SecondMomentChecksNameTheEntry) {
  EXPECT_EQ(check_second_moment_diagonal({1.0, 4.0, 0.0}), 4.0);
  EXPECT_NE(error_of([] {
              check_second_moment_diagonal({1.0, -2.0});
            }).find("diagonal entry 1 = -2"),
            std::string::npos);
  Matrix g = Matrix::identity(3);
  g(2, 0) = 1e-6;  // within 1e-5 max(diag): accumulation noise, accepted
  EXPECT_NO_THROW(check_second_moment(g));
  g(2, 0) = 1e-4;
  EXPECT_NE(error_of([&] { check_second_moment(g); }).find("G is not symmetric: G(2, 0)"), std::string::npos);
  EXPECT_NE(error_of([] { check_whitened_svd_options(WhitenedSvdOptions{0.9, 0.5, -1.0}); })
                .find("chol_eps must be finite and >= 0"),
            std::string::npos);
}

}  // namespace
}  // namespace upcycle::init
