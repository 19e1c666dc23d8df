// Spherical k-means (include/upcycle/init/spherical_kmeans.hpp) in one process: planted clusters
// are recovered exactly, the centroids are the normalised sums of the unit tokens, the objective
// never decreases, empty clusters are re-seeded, the result does not depend on the thread count or
// on the order of the rows, and bad inputs throw with messages that name the problem.
//
// Planted data: K random unit directions in D dims; token t = s_t * normalise(dir_c + n_t), with
// per-coordinate noise 0.03 / sqrt(D) (|n_t| ~ 0.03, about 1.7 degrees) and norms s_t in [0.5, 20].
// Two tokens of one cluster are then at squared distance ~ 2 * 0.03^2 = 0.002 against ~ 1 or more
// across clusters, so k-means++ puts its K seeds into K different clusters and Lloyd recovers them.
#include <gtest/gtest.h>

#include "error_of.hpp"
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "upcycle/backend/threads.hpp"
#include "upcycle/init/spherical_kmeans.hpp"

namespace upcycle {
namespace {

using init::KMeansOptions;
using testing::error_of;
using init::KMeansResult;
using init::spherical_kmeans;

struct Planted {
  std::int64_t n = 0, d = 0, k = 0;
  std::vector<float> points;          // [n, d]
  std::vector<std::int64_t> labels;   // [n]
  std::vector<double> directions;     // [k, d], unit
};

std::vector<double> unit_random(std::mt19937_64& rng, std::int64_t d) {
  std::normal_distribution<double> g(0.0, 1.0);
  std::vector<double> v(static_cast<std::size_t>(d));
  double s = 0;
  for (double& x : v) {
    x = g(rng);
    s += x * x;
  }
  for (double& x : v) x /= std::sqrt(s);
  return v;
}

Planted planted(std::int64_t n, std::int64_t d, std::int64_t k, std::uint64_t seed, double noise_norm = 0.03) {
  Planted p;
  p.n = n;
  p.d = d;
  p.k = k;
  std::mt19937_64 rng(seed);
  for (std::int64_t c = 0; c < k; ++c) {
    const auto v = unit_random(rng, d);
    p.directions.insert(p.directions.end(), v.begin(), v.end());
  }
  std::normal_distribution<double> noise(0.0, noise_norm / std::sqrt(static_cast<double>(d)));
  std::uniform_real_distribution<double> scale(0.5, 20.0);
  std::uniform_int_distribution<std::int64_t> label(0, k - 1);
  for (std::int64_t t = 0; t < n; ++t) {
    // Every cluster gets tokens: the first k tokens are one per cluster.
    const std::int64_t c = t < k ? t : label(rng);
    std::vector<double> v(static_cast<std::size_t>(d));
    double s = 0;
    for (std::int64_t j = 0; j < d; ++j) {
      v[static_cast<std::size_t>(j)] = p.directions[static_cast<std::size_t>(c * d + j)] + noise(rng);
      s += v[static_cast<std::size_t>(j)] * v[static_cast<std::size_t>(j)];
    }
    const double f = scale(rng) / std::sqrt(s);
    for (double x : v) p.points.push_back(static_cast<float>(x * f));
    p.labels.push_back(c);
  }
  return p;
}

Tensor points_tensor(const Planted& p) { return Tensor::from_vector(p.points, {p.n, p.d}, Device::cpu); }
Tensor iota_ids(std::int64_t n, std::int64_t first = 0) {
  std::vector<std::int64_t> ids(static_cast<std::size_t>(n));
  std::iota(ids.begin(), ids.end(), first);
  return Tensor::from_vector(ids, {n}, Device::cpu);
}

KMeansResult run(const Tensor& x, const Tensor& ids, const KMeansOptions& o) {
  SelfCommunicator self;
  return spherical_kmeans(x, ids, o, self);
}

// The cluster of each label when every cluster holds exactly one label and every label one cluster
// (purity 1 up to a permutation); fails the test otherwise.
std::vector<std::int64_t> label_to_cluster(const std::vector<std::int64_t>& labels, const Tensor& assignment,
                                           std::int64_t k) {
  const auto a = assignment.to_vector<std::int64_t>();
  std::vector<std::int64_t> map(static_cast<std::size_t>(k), -1);
  std::set<std::int64_t> used;
  for (std::size_t t = 0; t < labels.size(); ++t) {
    auto& m = map[static_cast<std::size_t>(labels[t])];
    if (m < 0) {
      m = a[t];
      EXPECT_TRUE(used.insert(m).second) << "cluster " << m << " holds two planted labels";
    }
    EXPECT_EQ(a[t], m) << "token " << t << " of label " << labels[t] << " is not in that label's cluster";
  }
  return map;
}

// Exact spherical-k-means centroid of a set of tokens: normalise(sum u_t / ||u_t||), in double
// from the f32 inputs.
std::vector<double> normalised_sum(const Planted& p, const Tensor& assignment, std::int64_t cluster) {
  const auto a = assignment.to_vector<std::int64_t>();
  std::vector<double> s(static_cast<std::size_t>(p.d), 0.0);
  for (std::int64_t t = 0; t < p.n; ++t) {
    if (a[static_cast<std::size_t>(t)] != cluster) continue;
    double q = 0;
    for (std::int64_t j = 0; j < p.d; ++j) q += double(p.points[t * p.d + j]) * p.points[t * p.d + j];
    for (std::int64_t j = 0; j < p.d; ++j) s[static_cast<std::size_t>(j)] += p.points[t * p.d + j] / std::sqrt(q);
  }
  double q = 0;
  for (double v : s) q += v * v;
  for (double& v : s) v /= std::sqrt(q);
  return s;
}

// Mean over tokens of max_e mu_e . u_t / ||u_t|| in double.
double mean_best_cosine(const Planted& p, const Tensor& centroids) {
  const auto c = centroids.to_vector<float>();
  const std::int64_t k = centroids.dim(0);
  double total = 0;
  for (std::int64_t t = 0; t < p.n; ++t) {
    double q = 0;
    for (std::int64_t j = 0; j < p.d; ++j) q += double(p.points[t * p.d + j]) * p.points[t * p.d + j];
    double best = -2;
    for (std::int64_t e = 0; e < k; ++e) {
      double dot = 0;
      for (std::int64_t j = 0; j < p.d; ++j) dot += double(c[e * p.d + j]) * p.points[t * p.d + j];
      best = std::max(best, dot / std::sqrt(q));
    }
    total += best;
  }
  return total / static_cast<double>(p.n);
}

struct Case {
  std::int64_t k, d, n;
};
void PrintTo(const Case& c, std::ostream* os) { *os << "K=" << c.k << " D=" << c.d << " n=" << c.n; }

class PlantedClusters : public ::testing::TestWithParam<Case> {};

TEST_P(PlantedClusters, RecoveredExactlyWithNormalisedSumCentroids) {
  const Case c = GetParam();
  const Planted p = planted(c.n, c.d, c.k, 100 + static_cast<std::uint64_t>(c.k));
  KMeansOptions o;
  o.clusters = c.k;
  o.init_sample = 512;  // smaller than n: the seeding works on a sample
  const KMeansResult r = run(points_tensor(p), iota_ids(p.n), o);

  ASSERT_EQ(r.centroids.shape(), Shape({c.k, c.d}));
  ASSERT_EQ(r.assignment.shape(), Shape({c.n}));
  EXPECT_TRUE(r.converged);
  EXPECT_LT(static_cast<std::int64_t>(r.history.size()), o.max_iters);
  const auto map = label_to_cluster(p.labels, r.assignment, c.k);

  // Sizes: the planted label counts, through the permutation.
  std::vector<std::int64_t> want(static_cast<std::size_t>(c.k), 0);
  for (std::int64_t l : p.labels) ++want[static_cast<std::size_t>(map[static_cast<std::size_t>(l)])];
  EXPECT_EQ(r.sizes, want);

  const auto cent = r.centroids.to_vector<float>();
  for (std::int64_t l = 0; l < c.k; ++l) {
    const std::int64_t e = map[static_cast<std::size_t>(l)];
    // Centroid = normalise(sum of the unit tokens): f32 rounding of the unit rows and the final
    // cast leave ~2e-8 (measured); a sum of the raw (unnormalised) tokens or a stale seed is off
    // by > 1e-3.
    const auto exact = normalised_sum(p, r.assignment, e);
    double dot = 0, max_diff = 0;
    for (std::int64_t j = 0; j < c.d; ++j) {
      max_diff = std::max(max_diff, std::abs(cent[e * c.d + j] - exact[static_cast<std::size_t>(j)]));
      dot += cent[e * c.d + j] * p.directions[static_cast<std::size_t>(l * c.d + j)];
    }
    EXPECT_LE(max_diff, 1e-7) << "cluster " << e;
    // Angle to the planted direction: the mean of ~n/k noise vectors of norm 0.03 leaves about
    // 0.03 / sqrt(n/k) <= 0.0025 rad (0.15 deg) for these cases; a single seed token is ~1.7 deg off.
    const double angle_deg = std::acos(std::min(1.0, dot)) * 180.0 / M_PI;
    EXPECT_LT(angle_deg, 0.5) << "cluster " << e << " (label " << l << ")";
  }
}

INSTANTIATE_TEST_SUITE_P(kmeans, PlantedClusters,
                         ::testing::Values(Case{4, 16, 1500}, Case{6, 32, 2500}, Case{8, 64, 4000}),
                         [](const ::testing::TestParamInfo<Case>& i) {
                           return "K" + std::to_string(i.param.k) + "_D" + std::to_string(i.param.d);
                         });

// Noisy clusters in many dims: noise of norm 0.5 puts a token at cosine ~0.89 to its direction and
// two tokens of one cluster at cosine ~0.8 to each other (squared distance 0.4, against ~2 across
// clusters). Plain k-means++ then often seeds two centroids in one cluster (at the last of 8 steps
// with probability ~ 7 * 0.4 / (7 * 0.4 + 2) ~ 0.6; measured: 61 of 100 seeds merge two clusters)
// and Lloyd does not undo it; the greedy seeding must find one seed per cluster, and the margin
// (0.89 against ~0 +- 0.06) then makes the clusters exact.
TEST(kmeans, NoisyHighDimensionalClustersAreRecovered) {
  for (std::uint64_t seed : {1u, 2u, 3u, 4u}) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    const Planted p = planted(4000, 256, 8, 40 + seed, 0.5);
    KMeansOptions o;
    o.clusters = 8;
    o.seed = seed;
    const KMeansResult r = run(points_tensor(p), iota_ids(p.n), o);
    EXPECT_TRUE(r.converged);
    label_to_cluster(p.labels, r.assignment, 8);
  }
}

// Overlapping clusters (noise larger than the separation) need many iterations: the objective
// must never decrease. In exact arithmetic the assignment step and the update step each can only
// raise sum_t mu_c(t) . u_t. The objective is a mean of f32 dot products, so 1e-7 is allowed for
// rounding (this run takes ~115 iterations; its smallest step up is ~6e-7, and no step is down).
// The history must also be self-consistent.
TEST(kmeans, ObjectiveNeverDecreasesAndHistoryIsConsistent) {
  const std::int64_t n = 6000, d = 8, k = 8;
  std::mt19937_64 rng(7);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> x(static_cast<std::size_t>(n * d));
  for (float& v : x) v = g(rng);
  Planted p;
  p.n = n;
  p.d = d;
  p.k = k;
  p.points = x;
  KMeansOptions o;
  o.clusters = k;
  o.max_iters = 200;
  const KMeansResult r = run(points_tensor(p), iota_ids(n), o);
  ASSERT_GE(r.history.size(), 5u) << "unstructured data should take several iterations";
  EXPECT_TRUE(r.converged);
  EXPECT_EQ(r.history.front().changed, n);  // every token starts unassigned
  EXPECT_EQ(r.history.back().changed, 0);
  for (std::size_t i = 0; i < r.history.size(); ++i) {
    const auto& it = r.history[i];
    EXPECT_EQ(it.iter, static_cast<std::int64_t>(i) + 1);
    EXPECT_EQ(std::accumulate(it.sizes.begin(), it.sizes.end(), std::int64_t{0}), n);
    if (i > 0) {
      EXPECT_GE(it.objective, r.history[i - 1].objective - 1e-7) << "iteration " << it.iter;
    }
    if (i + 1 < r.history.size()) {
      EXPECT_GT(it.changed, 0) << "stopped late at iteration " << it.iter;
    }
  }
  EXPECT_GT(r.history.back().objective, r.history.front().objective + 1e-3);
  // At convergence the last objective is the mean best cosine to the returned centroids.
  EXPECT_NEAR(r.history.back().objective, mean_best_cosine(p, r.centroids), 1e-6);
  // Unit rows.
  const auto c = r.centroids.to_vector<float>();
  for (std::int64_t e = 0; e < k; ++e) {
    double q = 0;
    for (std::int64_t j = 0; j < d; ++j) q += double(c[e * d + j]) * c[e * d + j];
    EXPECT_NEAR(std::sqrt(q), 1.0, 1e-6);
  }
  // Every token sits with a centroid of (within f32 rounding of the scores) the highest cosine.
  const auto a = r.assignment.to_vector<std::int64_t>();
  std::int64_t not_best = 0;
  for (std::int64_t t = 0; t < n; ++t) {
    double best = -2, mine = 0;
    for (std::int64_t e = 0; e < k; ++e) {
      double dot = 0;
      for (std::int64_t j = 0; j < d; ++j) dot += double(c[e * d + j]) * x[static_cast<std::size_t>(t * d + j)];
      best = std::max(best, dot);
      if (e == a[static_cast<std::size_t>(t)]) mine = dot;
    }
    not_best += mine < best - 1e-5 * std::max(1.0, std::abs(best));
  }
  EXPECT_EQ(not_best, 0);
  EXPECT_EQ(r.sizes, r.history.back().sizes);

  // stop_when_stable = false runs every iteration and repeats the fixed point.
  o.stop_when_stable = false;
  o.max_iters = static_cast<std::int64_t>(r.history.size()) + 3;
  const KMeansResult all = run(points_tensor(p), iota_ids(n), o);
  EXPECT_FALSE(all.converged);
  ASSERT_EQ(static_cast<std::int64_t>(all.history.size()), o.max_iters);
  EXPECT_EQ(all.history.back().changed, 0);
  EXPECT_EQ(all.assignment.to_vector<std::int64_t>(), r.assignment.to_vector<std::int64_t>());
  EXPECT_EQ(all.centroids.to_vector<float>(), r.centroids.to_vector<float>());
}

// Three directions A, B, C with 100 identical tokens each (taking turns in hash order; norms vary by powers
// of two, so the unit rows are bitwise equal) and two outlier tokens, the ids that hash last, so
// the 8-token k-means++ sample holds exactly three distinct rows (checked below): the seeding can
// place only three of K = 5 centroids, the other two sit out the first assignment and come out of
// it empty. They must take the two outliers (the tokens farthest from their centroids, one each),
// after which the five clusters are exactly {A}, {B}, {C}, {o1}, {o2}.
TEST(kmeans, EmptyClustersAreReseededWithTheFarthestTokens) {
  const std::int64_t d = 16, k = 5, n = 302;
  std::mt19937_64 rng(11);
  std::vector<std::vector<double>> dirs;
  for (int i = 0; i < 5; ++i) dirs.push_back(unit_random(rng, d));
  KMeansOptions o;
  o.clusters = k;
  o.init_sample = 8;
  std::vector<std::int64_t> by_hash(static_cast<std::size_t>(n));
  std::iota(by_hash.begin(), by_hash.end(), std::int64_t{0});
  std::sort(by_hash.begin(), by_hash.end(), [&](std::int64_t a, std::int64_t b) {
    return init::kmeans_sample_hash(o.seed, a) < init::kmeans_sample_hash(o.seed, b);
  });
  std::vector<std::int64_t> label(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) label[static_cast<std::size_t>(by_hash[static_cast<std::size_t>(i)])] = i < n - 2 ? i % 3 : 3 + (i - (n - 2));
  std::set<std::int64_t> sampled;
  for (int i = 0; i < 8; ++i) sampled.insert(label[static_cast<std::size_t>(by_hash[static_cast<std::size_t>(i)])]);
  ASSERT_EQ(sampled, (std::set<std::int64_t>{0, 1, 2})) << "construction: the sample must see A, B and C only";
  Planted p;
  p.n = n;
  p.d = d;
  p.k = k;
  p.labels = label;
  for (std::int64_t t = 0; t < n; ++t) {
    const float s = std::ldexp(1.0f, static_cast<int>(t % 5) - 2);  // 1/4 .. 4
    const auto& dir = dirs[static_cast<std::size_t>(label[static_cast<std::size_t>(t)])];
    for (std::int64_t j = 0; j < d; ++j) p.points.push_back(s * static_cast<float>(dir[static_cast<std::size_t>(j)]));
  }
  const KMeansResult r = run(points_tensor(p), iota_ids(n), o);
  ASSERT_FALSE(r.history.empty());
  EXPECT_EQ(r.history.front().reseeded, 2);
  std::int64_t reseeded = 0;
  for (const auto& it : r.history) {
    reseeded += it.reseeded;
    for (std::int64_t s : it.sizes) EXPECT_GT(s, 0) << "iteration " << it.iter << " reports an empty cluster";
  }
  EXPECT_EQ(reseeded, 2) << "re-seeding repeated: the reseeded clusters did not hold";
  EXPECT_TRUE(r.converged);
  const auto map = label_to_cluster(p.labels, r.assignment, k);
  const std::vector<std::int64_t> sizes = r.sizes;
  EXPECT_EQ(sizes[static_cast<std::size_t>(map[3])], 1);
  EXPECT_EQ(sizes[static_cast<std::size_t>(map[4])], 1);
}

// Fewer distinct directions than K can never fill K clusters stably; re-seeding still leaves no
// cluster empty in any reported iteration, and the run ends.
TEST(kmeans, FewerDistinctDirectionsThanKStillReportsNoEmptyCluster) {
  const std::int64_t d = 8, k = 4, n = 90;
  std::mt19937_64 rng(5);
  std::vector<std::vector<double>> dirs;
  for (int i = 0; i < 3; ++i) dirs.push_back(unit_random(rng, d));
  std::vector<float> x;
  for (std::int64_t t = 0; t < n; ++t)
    for (std::int64_t j = 0; j < d; ++j) x.push_back(static_cast<float>(dirs[static_cast<std::size_t>(t % 3)][static_cast<std::size_t>(j)]));
  KMeansOptions o;
  o.clusters = k;
  o.max_iters = 6;
  const KMeansResult r = run(Tensor::from_vector(x, {n, d}, Device::cpu), iota_ids(n), o);
  EXPECT_GT(r.history.front().reseeded, 0);
  for (const auto& it : r.history)
    for (std::int64_t s : it.sizes) EXPECT_GT(s, 0) << "iteration " << it.iter;
  for (std::int64_t s : r.sizes) EXPECT_GT(s, 0);
}

// The reductions use fixed chunks, so the thread count cannot change a bit of the result.
TEST(kmeans, ThreadCountDoesNotChangeTheResult) {
  const Planted p = planted(5000, 24, 6, 3);
  KMeansOptions o;
  o.clusters = 6;
  o.max_iters = 8;
  o.stop_when_stable = false;
  const int before = omp_get_max_threads();
  configure_cpu_threads(1);
  const KMeansResult one = run(points_tensor(p), iota_ids(p.n), o);
  configure_cpu_threads(3);
  const KMeansResult three = run(points_tensor(p), iota_ids(p.n), o);
  configure_cpu_threads(before);
  EXPECT_EQ(one.centroids.to_vector<float>(), three.centroids.to_vector<float>());
  EXPECT_EQ(one.assignment.to_vector<std::int64_t>(), three.assignment.to_vector<std::int64_t>());
  for (std::size_t i = 0; i < one.history.size(); ++i) EXPECT_EQ(one.history[i].objective, three.history[i].objective);
}

// The sample and the seeding follow the ids, not the row order: shuffled rows (with their ids) give
// the same clusters per id, and centroids equal up to the order of the double sums (~1e-16,
// visible at most as one f32 rounding step, 6e-8).
TEST(kmeans, RowOrderDoesNotMatter) {
  const Planted p = planted(3000, 20, 5, 9);
  std::vector<std::int64_t> perm(static_cast<std::size_t>(p.n));
  std::iota(perm.begin(), perm.end(), std::int64_t{0});
  std::shuffle(perm.begin(), perm.end(), std::mt19937_64(1));
  std::vector<float> x;
  for (std::int64_t t : perm) x.insert(x.end(), p.points.begin() + t * p.d, p.points.begin() + (t + 1) * p.d);
  KMeansOptions o;
  o.clusters = 5;
  o.init_sample = 300;
  o.max_iters = 6;
  o.stop_when_stable = false;
  const KMeansResult a = run(points_tensor(p), iota_ids(p.n), o);
  const KMeansResult b = run(Tensor::from_vector(x, {p.n, p.d}, Device::cpu), Tensor::from_vector(perm, {p.n}, Device::cpu), o);
  const auto ca = a.centroids.to_vector<float>(), cb = b.centroids.to_vector<float>();
  double max_diff = 0;
  for (std::size_t i = 0; i < ca.size(); ++i) max_diff = std::max(max_diff, double(std::abs(ca[i] - cb[i])));
  EXPECT_LE(max_diff, 1e-7);
  const auto aa = a.assignment.to_vector<std::int64_t>(), ab = b.assignment.to_vector<std::int64_t>();
  for (std::int64_t i = 0; i < p.n; ++i)
    EXPECT_EQ(ab[static_cast<std::size_t>(i)], aa[static_cast<std::size_t>(perm[static_cast<std::size_t>(i)])]);
  EXPECT_EQ(a.sizes, b.sizes);
}


TEST(kmeans, BadInputsThrowWithMessagesThatNameTheProblem) {
  const Planted p = planted(10, 4, 2, 1);
  const Tensor x = points_tensor(p), ids = iota_ids(10);
  KMeansOptions o;
  o.clusters = 0;
  EXPECT_NE(error_of([&] { run(x, ids, o); }).find("K (clusters) must be >= 1, got 0"), std::string::npos);
  o.clusters = 11;
  EXPECT_NE(error_of([&] { run(x, ids, o); }).find("K = 11 clusters need at least 11 tokens, got 10"),
            std::string::npos);
  o.clusters = 2;
  EXPECT_NE(error_of([&] { run(x, iota_ids(9), o); }).find("global_ids must be an i64 tensor [10]"),
            std::string::npos);
  EXPECT_NE(error_of([&] { run(x, Tensor::zeros({10}, DType::i32, Device::cpu), o); }).find("global_ids must be an i64"),
            std::string::npos);
  EXPECT_NE(error_of([&] { run(x.reshape({40}), ids, o); }).find("points must be a [n, D] f32 tensor"),
            std::string::npos);

  std::vector<float> bad = p.points;
  for (int j = 0; j < 4; ++j) bad[7 * 4 + j] = 0.0f;  // row 7, id 107
  const Tensor bad_x = Tensor::from_vector(bad, {10, 4}, Device::cpu);
  EXPECT_NE(error_of([&] { run(bad_x, iota_ids(10, 100), o); }).find("global id 107 has zero norm"),
            std::string::npos);
  bad = p.points;
  bad[3 * 4 + 1] = NAN;
  EXPECT_NE(error_of([&] { run(Tensor::from_vector(bad, {10, 4}, Device::cpu), ids, o); }).find("global id 3 has a non-finite"),
            std::string::npos);

  std::vector<std::int64_t> dup(10);
  std::iota(dup.begin(), dup.end(), std::int64_t{0});
  dup[9] = 4;
  EXPECT_NE(error_of([&] { run(x, Tensor::from_vector(dup, {10}, Device::cpu), o); }).find("global id 4 is held by two tokens"),
            std::string::npos);
  // And a valid call on the same data works.
  EXPECT_EQ(error_of([&] { run(x, ids, o); }), "");
}

}  // namespace
}  // namespace upcycle
