// The closed-form ridge few-shot probe (include/upcycle/train/few_shot_probe.hpp): against the
// normal equations solved here by Gauss-Jordan elimination in double, the optimality condition of
// the ridge objective, the primal/dual identity, planted separable data, and the few-shot draw.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "upcycle/core/error.hpp"
#include "upcycle/core/rng.hpp"
#include "upcycle/train/few_shot_probe.hpp"

using namespace upcycle;

namespace {

// Gaussian noise from a Philox stream (Box-Muller), for reproducible synthetic features.
double normal(std::uint64_t seed, std::uint64_t i) {
  const double u1 = (static_cast<double>(Philox4x32::word(seed, 2 * i) >> 8) + 0.5) / 16777216.0;
  const double u2 = static_cast<double>(Philox4x32::word(seed, 2 * i + 1) >> 8) / 16777216.0;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

init::Matrix random_matrix(std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
  init::Matrix m(rows, cols);
  for (std::int64_t i = 0; i < rows * cols; ++i) m.data[static_cast<std::size_t>(i)] = normal(seed, static_cast<std::uint64_t>(i));
  return m;
}

// X with A X = B by Gauss-Jordan elimination with partial pivoting (A square, small).
std::vector<std::vector<double>> gauss_solve(std::vector<std::vector<double>> a, std::vector<std::vector<double>> b) {
  const std::size_t n = a.size(), m = b[0].size();
  for (std::size_t c = 0; c < n; ++c) {
    std::size_t piv = c;
    for (std::size_t r = c + 1; r < n; ++r)
      if (std::abs(a[r][c]) > std::abs(a[piv][c])) piv = r;
    std::swap(a[c], a[piv]);
    std::swap(b[c], b[piv]);
    for (std::size_t r = 0; r < n; ++r) {
      if (r == c) continue;
      const double f = a[r][c] / a[c][c];
      for (std::size_t j = 0; j < n; ++j) a[r][j] -= f * a[c][j];
      for (std::size_t j = 0; j < m; ++j) b[r][j] -= f * b[c][j];
    }
  }
  for (std::size_t r = 0; r < n; ++r)
    for (std::size_t j = 0; j < m; ++j) b[r][j] /= a[r][r];
  return b;
}

}  // namespace

// A 4 x 3 problem with 2 classes written out: normalise, centre, one-hot minus the class shares,
// W = (Z^T Z + lambda I)^-1 Z^T Yc by elimination; the probe's weights, bias and scores match.
TEST(FewShotProbe, MatchesTheNormalEquationsWrittenOut) {
  const std::vector<std::vector<double>> x = {{3, 0, 4}, {1, 2, 2}, {0, -1, 0}, {2, 1, -2}};
  const std::vector<std::int64_t> y = {0, 0, 1, 1};
  const double lambda = 0.7;
  const std::size_t n = 4, D = 3, C = 2;
  std::vector<std::vector<double>> z = x;
  for (auto& row : z) {
    double s = 0;
    for (double v : row) s += v * v;
    for (double& v : row) v /= std::sqrt(s);
  }
  std::vector<double> m(D, 0.0);
  for (const auto& row : z)
    for (std::size_t j = 0; j < D; ++j) m[j] += row[j] / n;
  for (auto& row : z)
    for (std::size_t j = 0; j < D; ++j) row[j] -= m[j];
  // Class shares are 1/2 each: Yc = +-1/2.
  std::vector<std::vector<double>> yc(n, std::vector<double>(C));
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t c = 0; c < C; ++c) yc[i][c] = (y[i] == static_cast<std::int64_t>(c) ? 1.0 : 0.0) - 0.5;
  std::vector<std::vector<double>> a(D, std::vector<double>(D, 0.0)), b(D, std::vector<double>(C, 0.0));
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t p = 0; p < D; ++p) {
      for (std::size_t q = 0; q < D; ++q) a[p][q] += z[i][p] * z[i][q];
      for (std::size_t c = 0; c < C; ++c) b[p][c] += z[i][p] * yc[i][c];
    }
  for (std::size_t p = 0; p < D; ++p) a[p][p] += lambda;
  const auto w = gauss_solve(a, b);

  init::Matrix features(4, 3);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < D; ++j) features(static_cast<std::int64_t>(i), static_cast<std::int64_t>(j)) = x[i][j];
  for (RidgeSolve solve : {RidgeSolve::primal, RidgeSolve::dual, RidgeSolve::automatic}) {
    const RidgeClassifier r = fit_ridge_classifier(features, y, 2, lambda, solve);
    ASSERT_EQ(r.weights.rows, 3);
    ASSERT_EQ(r.weights.cols, 2);
    for (std::size_t p = 0; p < D; ++p)
      for (std::size_t c = 0; c < C; ++c)
        EXPECT_NEAR(r.weights(static_cast<std::int64_t>(p), static_cast<std::int64_t>(c)), w[p][c], 1e-12);
    for (std::size_t j = 0; j < D; ++j) EXPECT_NEAR(r.center[j], m[j], 1e-15);
    EXPECT_NEAR(r.bias[0], 0.5, 1e-15);
    EXPECT_NEAR(r.bias[1], 0.5, 1e-15);
    // Scores of a new point: (x/|x| - m) W + 1/2, by hand.
    init::Matrix q(1, 3);
    q(0, 0) = 1, q(0, 1) = -2, q(0, 2) = 2;  // norm 3
    const init::Matrix s = r.scores(q);
    for (std::size_t c = 0; c < C; ++c) {
      double want = 0.5;
      for (std::size_t j = 0; j < D; ++j) want += (q(0, static_cast<std::int64_t>(j)) / 3.0 - m[j]) * w[j][c];
      EXPECT_NEAR(s(0, static_cast<std::int64_t>(c)), want, 1e-12);
    }
  }
  // n = 4 > D = 3: the automatic choice solves the primal D x D system; the dual when n < D.
  EXPECT_FALSE(fit_ridge_classifier(features, y, 2, lambda).used_dual);
}

// The fitted W makes the gradient of ||Z W - Yc||^2 + lambda ||W||^2 vanish (checked from the
// definition, with Z and Yc rebuilt from the probe's own centre and bias).
TEST(FewShotProbe, SatisfiesTheRidgeOptimalityCondition) {
  const init::Matrix x = random_matrix(9, 6, 11);
  const std::vector<std::int64_t> y = {0, 1, 2, 0, 1, 2, 0, 1, 1};
  const double lambda = 0.3;
  const RidgeClassifier r = fit_ridge_classifier(x, y, 3, lambda);
  init::Matrix z = l2_normalize_rows(x);
  for (std::int64_t i = 0; i < z.rows; ++i)
    for (std::int64_t j = 0; j < z.cols; ++j) z(i, j) -= r.center[static_cast<std::size_t>(j)];
  init::Matrix resid = init::matmul(z, r.weights);
  for (std::int64_t i = 0; i < resid.rows; ++i)
    for (std::int64_t c = 0; c < 3; ++c)
      resid(i, c) -= (y[static_cast<std::size_t>(i)] == c ? 1.0 : 0.0) - r.bias[static_cast<std::size_t>(c)];
  const init::Matrix grad = init::matmul(z, resid, true);
  for (std::int64_t j = 0; j < grad.rows; ++j)
    for (std::int64_t c = 0; c < 3; ++c) EXPECT_NEAR(grad(j, c) + lambda * r.weights(j, c), 0.0, 1e-12);
  // The bias is the class share: 3/9, 4/9, 2/9.
  EXPECT_NEAR(r.bias[0], 3.0 / 9, 1e-15);
  EXPECT_NEAR(r.bias[1], 4.0 / 9, 1e-15);
  EXPECT_NEAR(r.bias[2], 2.0 / 9, 1e-15);
}

// (Z^T Z + l I)^-1 Z^T = Z^T (Z Z^T + l I)^-1: the two systems give the same classifier, with more
// examples than dimensions and with fewer.
TEST(FewShotProbe, PrimalAndDualAgree) {
  for (auto [n, D] : {std::pair<std::int64_t, std::int64_t>{30, 5}, {7, 12}, {10, 10}}) {
    const init::Matrix x = random_matrix(n, D, static_cast<std::uint64_t>(100 + n));
    std::vector<std::int64_t> y;
    for (std::int64_t i = 0; i < n; ++i) y.push_back(i % 4);
    const RidgeClassifier p = fit_ridge_classifier(x, y, 4, 0.5, RidgeSolve::primal);
    const RidgeClassifier d = fit_ridge_classifier(x, y, 4, 0.5, RidgeSolve::dual);
    EXPECT_FALSE(p.used_dual);
    EXPECT_TRUE(d.used_dual);
    EXPECT_EQ(fit_ridge_classifier(x, y, 4, 0.5).used_dual, n < D) << n << " x " << D;
    double scale = 0.0;
    for (double v : p.weights.data) scale = std::max(scale, std::abs(v));
    ASSERT_GT(scale, 1e-3);
    for (std::size_t i = 0; i < p.weights.data.size(); ++i)
      EXPECT_NEAR(p.weights.data[i], d.weights.data[i], 1e-10 * scale) << n << " x " << D << " element " << i;
    const init::Matrix test = random_matrix(50, D, 999);
    EXPECT_EQ(p.predict(test), d.predict(test));
  }
}

// Planted classes: each class a direction plus small noise (and a random positive scale, which
// the normalisation removes); 1 and 5 labelled examples per class separate 200 fresh test points.
TEST(FewShotProbe, PerfectOnLinearlySeparablePlantedData) {
  const std::int64_t C = 5, D = 16;
  const init::Matrix centers = random_matrix(C, D, 5);
  auto sample = [&](std::int64_t count, std::uint64_t seed, std::vector<std::int64_t>& labels) {
    init::Matrix m(count, D);
    const init::Matrix noise = random_matrix(count, D, seed);
    for (std::int64_t i = 0; i < count; ++i) {
      const std::int64_t c = i % C;
      labels.push_back(c);
      const double scale = 0.5 + static_cast<double>(Philox4x32::uniform(seed + 1, static_cast<std::uint64_t>(i)));
      for (std::int64_t j = 0; j < D; ++j) m(i, j) = scale * (centers(c, j) + 0.05 * noise(i, j));
    }
    return m;
  };
  std::vector<std::int64_t> test_labels;
  const init::Matrix test = sample(200, 77, test_labels);
  for (std::int64_t k : {1, 5}) {
    std::vector<std::int64_t> labels;
    const init::Matrix support = sample(k * C, 10 + static_cast<std::uint64_t>(k), labels);
    for (double ridge : {1e-3, 1.0, 10.0}) {
      const RidgeClassifier r = fit_ridge_classifier(support, labels, C, ridge);
      EXPECT_EQ(accuracy(r.predict(test), test_labels), 1.0) << "k = " << k << ", ridge = " << ridge;
    }
  }
}

TEST(FewShotProbe, NormalisationAndAccuracyHelpers) {
  init::Matrix m(2, 2);
  m(0, 0) = 3, m(0, 1) = -4;  // row 1 stays zero
  const init::Matrix n = l2_normalize_rows(m);
  EXPECT_DOUBLE_EQ(n(0, 0), 0.6);
  EXPECT_DOUBLE_EQ(n(0, 1), -0.8);
  EXPECT_EQ(n(1, 0), 0.0);
  EXPECT_EQ(n(1, 1), 0.0);
  EXPECT_DOUBLE_EQ(accuracy({0, 1, 2, 2}, {0, 1, 1, 2}), 0.75);
  EXPECT_TRUE(std::isnan(accuracy({}, {})));
  EXPECT_THROW(accuracy({0}, {0, 1}), Error);
  const MeanStd ms = mean_and_sample_std({0.5, 0.7, 0.9});
  EXPECT_NEAR(ms.mean, 0.7, 1e-15);
  EXPECT_NEAR(ms.std, 0.2, 1e-15);  // sqrt((0.04 + 0 + 0.04) / 2)
  const MeanStd one = mean_and_sample_std({0.25});
  EXPECT_EQ(one.mean, 0.25);
  EXPECT_EQ(one.std, 0.0);
  // Bad arguments throw instead of returning garbage.
  std::vector<std::int64_t> y = {0, 3};
  EXPECT_THROW(fit_ridge_classifier(random_matrix(2, 3, 1), y, 2, 1.0), Error);  // label 3 of 2 classes
  y = {0, 1};
  EXPECT_THROW(fit_ridge_classifier(random_matrix(2, 3, 1), y, 2, 0.0), Error);  // ridge must be > 0
}

// The draw: k distinct examples of each class, deterministic in (seed, k, draw), different for
// another draw or seed, and a class with fewer than k examples is a usage error.
TEST(FewShotProbe, DrawPicksKPerClassDeterministically) {
  std::vector<std::int64_t> labels;
  for (std::int64_t i = 0; i < 600; ++i) labels.push_back((i * 7) % 3);
  const auto a = draw_few_shot(labels, 3, 5, 42, 0);
  ASSERT_EQ(a.size(), 15u);
  EXPECT_TRUE(std::is_sorted(a.begin(), a.end()));
  EXPECT_EQ(std::set<std::int64_t>(a.begin(), a.end()).size(), 15u);
  std::vector<int> per_class(3, 0);
  for (std::int64_t i : a) ++per_class[static_cast<std::size_t>(labels[static_cast<std::size_t>(i)])];
  EXPECT_EQ(per_class, (std::vector<int>{5, 5, 5}));
  EXPECT_EQ(draw_few_shot(labels, 3, 5, 42, 0), a);
  EXPECT_NE(draw_few_shot(labels, 3, 5, 42, 1), a);
  EXPECT_NE(draw_few_shot(labels, 3, 5, 43, 0), a);
  // Every example of a class is drawn when k equals its size.
  const std::vector<std::int64_t> small = {0, 1, 0, 1, 1};
  EXPECT_EQ(draw_few_shot(small, 2, 2, 1, 0).size(), 4u);
  EXPECT_THROW(draw_few_shot(small, 2, 3, 1, 0), UsageError);
  // Over many draws every example of a class gets picked (the draw is not stuck on a subset).
  std::set<std::int64_t> seen;
  for (std::int64_t d = 0; d < 400; ++d)
    for (std::int64_t i : draw_few_shot(labels, 3, 1, 42, d)) seen.insert(i);
  EXPECT_GT(seen.size(), 300u);
}
