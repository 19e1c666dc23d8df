// The closed-form ridge few-shot probe (include/upcycle/train/few_shot_probe.hpp).
#include "upcycle/train/few_shot_probe.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "upcycle/core/error.hpp"
#include "upcycle/core/rng.hpp"

namespace upcycle {

namespace {

// X with A X = B for a symmetric positive definite A: A = L L^T (dpotrf), then two triangular
// solves. A Cholesky failure names the system: with ridge > 0 it can only come from non-finite
// or absurdly scaled features.
init::Matrix solve_spd(const init::Matrix& a, const init::Matrix& b) {
  const init::Matrix l = init::cholesky_lower(a);
  const init::Matrix z = init::solve_triangular(l, init::Triangle::lower, b, init::Side::left);
  return init::solve_triangular(l, init::Triangle::lower, z, init::Side::left, /*transpose_t=*/true);
}

}  // namespace

init::Matrix l2_normalize_rows(init::Matrix m) {
  for (std::int64_t i = 0; i < m.rows; ++i) {
    double s = 0.0;
    for (std::int64_t j = 0; j < m.cols; ++j) s += m(i, j) * m(i, j);
    if (s <= 0.0) continue;
    const double inv = 1.0 / std::sqrt(s);
    for (std::int64_t j = 0; j < m.cols; ++j) m(i, j) *= inv;
  }
  return m;
}

RidgeClassifier fit_ridge_classifier(const init::Matrix& features, const std::vector<std::int64_t>& labels,
                                     std::int64_t num_classes, double ridge, RidgeSolve solve) {
  const std::int64_t n = features.rows, D = features.cols, C = num_classes;
  UPCYCLE_CHECK(n >= 1 && D >= 1, "fit_ridge_classifier: no support features ([", n, ", ", D, "])");
  UPCYCLE_CHECK(static_cast<std::int64_t>(labels.size()) == n, "fit_ridge_classifier: ", labels.size(),
                " labels for ", n, " feature rows");
  UPCYCLE_CHECK(C >= 1, "fit_ridge_classifier: num_classes = ", C);
  UPCYCLE_CHECK(ridge > 0 && std::isfinite(ridge), "fit_ridge_classifier: ridge = ", ridge, " must be > 0");

  init::Matrix z = l2_normalize_rows(features);
  RidgeClassifier r;
  r.center.assign(static_cast<std::size_t>(D), 0.0);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < D; ++j) r.center[static_cast<std::size_t>(j)] += z(i, j);
  for (double& v : r.center) v /= static_cast<double>(n);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < D; ++j) z(i, j) -= r.center[static_cast<std::size_t>(j)];

  init::Matrix y(n, C);
  r.bias.assign(static_cast<std::size_t>(C), 0.0);
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t c = labels[static_cast<std::size_t>(i)];
    UPCYCLE_CHECK(c >= 0 && c < C, "fit_ridge_classifier: label ", c, " of example ", i, " outside [0, ", C, ")");
    y(i, c) = 1.0;
    r.bias[static_cast<std::size_t>(c)] += 1.0 / static_cast<double>(n);
  }
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t c = 0; c < C; ++c) y(i, c) -= r.bias[static_cast<std::size_t>(c)];

  r.used_dual = solve == RidgeSolve::dual || (solve == RidgeSolve::automatic && n < D);
  if (r.used_dual) {
    init::Matrix k = init::matmul(z, z, false, true);  // Z Z^T [n, n]
    for (std::int64_t i = 0; i < n; ++i) k(i, i) += ridge;
    r.weights = init::matmul(z, solve_spd(k, y), /*trans_a=*/true);  // Z^T alpha [D, C]
  } else {
    init::Matrix g = init::matmul(z, z, true, false);  // Z^T Z [D, D]
    for (std::int64_t j = 0; j < D; ++j) g(j, j) += ridge;
    r.weights = solve_spd(g, init::matmul(z, y, /*trans_a=*/true));
  }
  return r;
}

init::Matrix RidgeClassifier::scores(const init::Matrix& features) const {
  const std::int64_t D = weights.rows;
  UPCYCLE_CHECK(features.cols == D, "RidgeClassifier: features have ", features.cols, " columns, the probe ", D);
  init::Matrix z = l2_normalize_rows(features);
  for (std::int64_t i = 0; i < z.rows; ++i)
    for (std::int64_t j = 0; j < D; ++j) z(i, j) -= center[static_cast<std::size_t>(j)];
  init::Matrix s = init::matmul(z, weights);
  for (std::int64_t i = 0; i < s.rows; ++i)
    for (std::int64_t c = 0; c < s.cols; ++c) s(i, c) += bias[static_cast<std::size_t>(c)];
  return s;
}

std::vector<std::int64_t> RidgeClassifier::predict(const init::Matrix& features) const {
  const init::Matrix s = scores(features);
  std::vector<std::int64_t> out(static_cast<std::size_t>(s.rows), 0);
  for (std::int64_t i = 0; i < s.rows; ++i) {
    std::int64_t best = 0;
    for (std::int64_t c = 1; c < s.cols; ++c)
      if (s(i, c) > s(i, best)) best = c;
    out[static_cast<std::size_t>(i)] = best;
  }
  return out;
}

double accuracy(const std::vector<std::int64_t>& predicted, const std::vector<std::int64_t>& labels) {
  UPCYCLE_CHECK(predicted.size() == labels.size(), "accuracy: ", predicted.size(), " predictions for ",
                labels.size(), " labels");
  if (labels.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::int64_t correct = 0;
  for (std::size_t i = 0; i < labels.size(); ++i) correct += predicted[i] == labels[i] ? 1 : 0;
  return static_cast<double>(correct) / static_cast<double>(labels.size());
}

std::vector<std::int64_t> draw_few_shot(const std::vector<std::int64_t>& labels, std::int64_t num_classes,
                                        std::int64_t k, std::uint64_t seed, std::int64_t draw) {
  UPCYCLE_CHECK(num_classes >= 1 && k >= 1 && draw >= 0, "draw_few_shot: num_classes = ", num_classes, ", k = ", k,
                ", draw = ", draw);
  UPCYCLE_CHECK(k < (std::int64_t{1} << 32) && draw < (std::int64_t{1} << 32), "draw_few_shot: k = ", k,
                " or draw = ", draw, " does not fit 32 bits");
  // The draw's own key: one Philox block of run.seed (tagged so that it is not the stream of any
  // other use of the seed) at the counter (k, draw).
  constexpr std::uint64_t kFewShotTag = 0x6665'7773'686f'7473ull;  // "fewshots"
  std::uint32_t w[4];
  Philox4x32::generate(seed ^ kFewShotTag, (static_cast<std::uint64_t>(k) << 32) | static_cast<std::uint64_t>(draw), w);
  const std::uint64_t key = (static_cast<std::uint64_t>(w[1]) << 32) | w[0];

  std::vector<std::vector<std::pair<std::uint64_t, std::int64_t>>> by_class(static_cast<std::size_t>(num_classes));
  for (std::size_t i = 0; i < labels.size(); ++i) {
    const std::int64_t c = labels[i];
    UPCYCLE_CHECK(c >= 0 && c < num_classes, "draw_few_shot: label ", c, " of example ", i, " outside [0, ",
                  num_classes, ")");
    std::uint32_t u[4];
    Philox4x32::generate(key, static_cast<std::uint64_t>(i), u);
    by_class[static_cast<std::size_t>(c)].emplace_back((static_cast<std::uint64_t>(u[1]) << 32) | u[0],
                                                       static_cast<std::int64_t>(i));
  }
  std::vector<std::int64_t> out;
  out.reserve(static_cast<std::size_t>(num_classes * k));
  for (std::int64_t c = 0; c < num_classes; ++c) {
    auto& v = by_class[static_cast<std::size_t>(c)];
    if (static_cast<std::int64_t>(v.size()) < k)
      UPCYCLE_USAGE_ERROR("eval.few_shot_k = ", k, ": class ", c, " has only ", v.size(),
                          " training examples to draw from");
    std::partial_sort(v.begin(), v.begin() + k, v.end());  // (key, index): ties by the lower index
    for (std::int64_t j = 0; j < k; ++j) out.push_back(v[static_cast<std::size_t>(j)].second);
  }
  std::sort(out.begin(), out.end());
  return out;
}

MeanStd mean_and_sample_std(const std::vector<double>& values) {
  MeanStd r;
  if (values.empty()) {
    r.mean = r.std = std::numeric_limits<double>::quiet_NaN();
    return r;
  }
  for (double v : values) r.mean += v;
  r.mean /= static_cast<double>(values.size());
  if (values.size() < 2) return r;
  double ss = 0.0;
  for (double v : values) ss += (v - r.mean) * (v - r.mean);
  r.std = std::sqrt(ss / static_cast<double>(values.size() - 1));
  return r;
}

}  // namespace upcycle
