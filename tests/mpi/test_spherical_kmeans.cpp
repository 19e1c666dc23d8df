// Spherical k-means over several ranks (include/upcycle/init/spherical_kmeans.hpp): the tokens split
// into contiguous shards over the world (CTest: 1, 2 and 4 ranks; also an uneven split in which
// rank 0 holds no token) give the result of a single-process run on all tokens: the same sizes and
// iteration history exactly, the same global assignment, centroids equal within one f32 spacing,
// and bitwise equal centroids on every rank. Every rank generates the whole data set from a seed
// and computes the single-process reference itself (SelfCommunicator).
//
// Bound for the centroids: the sample, the seeding and (given equal assignments) the per-cluster
// token sets do not depend on the sharding; only the order of the double sums does (chunks, then
// ranks), which moves a centroid coordinate by ~1e-15 (the f32 scores may differ in the last bit,
// see the objective below, but they only choose the assignment, which is compared exactly). Cast to f32, two such doubles round to the
// same float or to neighbours, so they differ by at most one f32 spacing below 1: 2^-23 (1.2e-7).
#include <gtest/gtest.h>

#include "error_of.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "upcycle/dist/world.hpp"
#include "upcycle/init/spherical_kmeans.hpp"

namespace upcycle {
namespace {

using init::KMeansOptions;
using testing::error_of;
using init::KMeansResult;
using init::spherical_kmeans;

const double kCentroidBound = std::ldexp(1.0, -23);

struct Data {
  std::int64_t n = 0, d = 0;
  std::vector<float> points;  // [n, d]
};

// K random unit directions plus Gaussian noise of norm ~`noise`, norms in [0.5, 20]. noise 0.03:
// well separated (2 iterations); noise 1.0: overlapping clusters (many iterations, many changes).
Data clustered(std::int64_t n, std::int64_t d, std::int64_t k, double noise, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> g(0.0, 1.0);
  std::vector<double> dirs(static_cast<std::size_t>(k * d));
  for (std::int64_t c = 0; c < k; ++c) {
    double s = 0;
    for (std::int64_t j = 0; j < d; ++j) s += std::pow(dirs[static_cast<std::size_t>(c * d + j)] = g(rng), 2);
    for (std::int64_t j = 0; j < d; ++j) dirs[static_cast<std::size_t>(c * d + j)] /= std::sqrt(s);
  }
  std::uniform_int_distribution<std::int64_t> label(0, k - 1);
  std::uniform_real_distribution<double> scale(0.5, 20.0);
  Data out;
  out.n = n;
  out.d = d;
  const double sd = noise / std::sqrt(static_cast<double>(d));
  for (std::int64_t t = 0; t < n; ++t) {
    const std::int64_t c = label(rng);
    const double s = scale(rng);
    for (std::int64_t j = 0; j < d; ++j)
      out.points.push_back(static_cast<float>(s * (dirs[static_cast<std::size_t>(c * d + j)] + sd * g(rng))));
  }
  return out;
}

// Three directions with `per` identical tokens each and two outliers whose ids hash last: with a
// sample of 8, k-means++ places only three of K = 5 centroids, and two clusters come out of the
// first assignment empty and are re-seeded (tests/unit/test_spherical_kmeans.cpp checks this in
// detail). The outliers sit on different ranks than most of the tokens, so the re-seeding's
// candidate exchange and vector all-reduce are exercised.
Data with_empty_clusters(std::int64_t per, std::uint64_t sample_seed) {
  const std::int64_t d = 16, n = 3 * per + 2;
  std::mt19937_64 rng(11);
  std::normal_distribution<double> g(0.0, 1.0);
  std::vector<std::vector<double>> dirs(5, std::vector<double>(static_cast<std::size_t>(d)));
  for (auto& v : dirs)
    for (double& x : v) x = g(rng);
  std::vector<std::int64_t> by_hash(static_cast<std::size_t>(n));
  std::iota(by_hash.begin(), by_hash.end(), std::int64_t{0});
  std::sort(by_hash.begin(), by_hash.end(), [&](std::int64_t a, std::int64_t b) {
    return init::kmeans_sample_hash(sample_seed, a) < init::kmeans_sample_hash(sample_seed, b);
  });
  std::vector<std::int64_t> label(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i)
    label[static_cast<std::size_t>(by_hash[static_cast<std::size_t>(i)])] = i < n - 2 ? i % 3 : 3 + (i - (n - 2));
  Data out;
  out.n = n;
  out.d = d;
  for (std::int64_t t = 0; t < n; ++t) {
    const float s = std::ldexp(1.0f, static_cast<int>(t % 5) - 2);
    for (double x : dirs[static_cast<std::size_t>(label[static_cast<std::size_t>(t)])])
      out.points.push_back(s * static_cast<float>(x));
  }
  return out;
}

class KmeansMpi : public ::testing::Test {
 protected:
  std::shared_ptr<Communicator> world = make_world_communicator();
  const int P = world->size();
  const int me = world->rank();

  // Shard boundaries: contiguous, near-equal.
  std::vector<std::int64_t> even_split(std::int64_t n) const {
    std::vector<std::int64_t> b;
    for (int p = 0; p <= P; ++p) b.push_back(n * p / P);
    return b;
  }
  // Rank 0 holds nothing, the others share the tokens unevenly (the last one the most).
  std::vector<std::int64_t> split_without_rank0(std::int64_t n) const {
    std::vector<std::int64_t> b{0, 0};
    const std::int64_t parts = static_cast<std::int64_t>(P - 1) * P / 2;  // weights 1, 2, .., P-1
    std::int64_t acc = 0;
    for (int p = 1; p < P; ++p) {
      acc += p;
      b.push_back(n * acc / parts);
    }
    return b;
  }

  // Runs the distributed k-means on this rank's shard [bounds[me], bounds[me+1]) and checks it
  // against the single-process run on all tokens.
  KMeansResult check_against_single(const Data& data, const KMeansOptions& o, const std::vector<std::int64_t>& bounds,
                            const std::string& what) {
    SCOPED_TRACE(what + " over " + std::to_string(P) + " rank(s)");
    const Tensor all = Tensor::from_vector(data.points, {data.n, data.d}, Device::cpu);
    std::vector<std::int64_t> ids(static_cast<std::size_t>(data.n));
    std::iota(ids.begin(), ids.end(), std::int64_t{0});
    SelfCommunicator self;
    const KMeansResult ref = spherical_kmeans(all, Tensor::from_vector(ids, {data.n}, Device::cpu), o, self);

    const std::int64_t lo = bounds[static_cast<std::size_t>(me)], hi = bounds[static_cast<std::size_t>(me) + 1];
    const std::vector<std::int64_t> my_ids(ids.begin() + lo, ids.begin() + hi);
    const KMeansResult got = spherical_kmeans(all.rows(lo, hi).clone(), Tensor::from_vector(my_ids, {hi - lo}, Device::cpu), o, *world);

    EXPECT_EQ(got.sizes, ref.sizes);
    EXPECT_EQ(got.converged, ref.converged);
    EXPECT_EQ(got.history.size(), ref.history.size());
    if (got.history.size() != ref.history.size()) return ref;
    for (std::size_t i = 0; i < ref.history.size(); ++i) {
      EXPECT_EQ(got.history[i].sizes, ref.history[i].sizes) << "iteration " << i + 1;
      EXPECT_EQ(got.history[i].changed, ref.history[i].changed) << "iteration " << i + 1;
      EXPECT_EQ(got.history[i].reseeded, ref.history[i].reseeded) << "iteration " << i + 1;
      // The mean of the f32 scores: BLAS computes a row's dot products along other paths at other
      // row positions in the shard, so a score can move by an f32 rounding step (~6e-8); the mean
      // moves by at most that (measured: <= 1e-10). One token in another cluster moves it by > 1e-5.
      EXPECT_NEAR(got.history[i].objective, ref.history[i].objective, 1e-7) << "iteration " << i + 1;
    }
    const auto ra = ref.assignment.to_vector<std::int64_t>();
    const auto ga = got.assignment.to_vector<std::int64_t>();
    EXPECT_EQ(static_cast<std::int64_t>(ga.size()), hi - lo);
    if (static_cast<std::int64_t>(ga.size()) != hi - lo) return ref;
    std::int64_t mismatched = 0;
    for (std::int64_t t = lo; t < hi; ++t) mismatched += ga[static_cast<std::size_t>(t - lo)] != ra[static_cast<std::size_t>(t)];
    EXPECT_EQ(mismatched, 0) << "tokens of this rank assigned differently from the single-process run";

    const auto rc = ref.centroids.to_vector<float>(), gc = got.centroids.to_vector<float>();
    EXPECT_EQ(gc.size(), rc.size());
    if (gc.size() != rc.size()) return ref;
    double diff = 0;
    for (std::size_t i = 0; i < rc.size(); ++i) diff = std::max(diff, double(std::abs(gc[i] - rc[i])));
    EXPECT_LE(diff, kCentroidBound);

    // Every rank holds the same centroids, bit for bit.
    Tensor gathered = Tensor::empty({P * o.clusters, data.d}, DType::f32, Device::cpu);
    world->all_gather(got.centroids, gathered);
    const auto g = gathered.to_vector<float>();
    for (int p = 1; p < P; ++p)
      EXPECT_TRUE(std::equal(g.begin(), g.begin() + static_cast<std::ptrdiff_t>(gc.size()),
                             g.begin() + static_cast<std::ptrdiff_t>(p * gc.size())))
          << "rank " << p << " holds other centroids than rank 0";
    return ref;
  }
};

TEST_F(KmeansMpi, SeparatedClustersMatchSingleProcess) {
  const Data data = clustered(3000, 32, 6, 0.03, 21);
  KMeansOptions o;
  o.clusters = 6;
  o.init_sample = 400;  // the sample draws from every shard
  check_against_single(data, o, even_split(data.n), "even split");
  if (P >= 2) check_against_single(data, o, split_without_rank0(data.n), "rank 0 empty");
}

TEST_F(KmeansMpi, OverlappingClustersMatchSingleProcessOverManyIterations) {
  const Data data = clustered(5000, 16, 8, 1.0, 22);
  KMeansOptions o;
  o.clusters = 8;
  o.max_iters = 40;
  o.init_sample = 1000;
  const KMeansResult ref = check_against_single(data, o, even_split(data.n), "even split");
  EXPECT_GE(ref.history.size(), 8u) << "the comparison should span many iterations";
  if (P >= 2) check_against_single(data, o, split_without_rank0(data.n), "rank 0 empty");
  // All tokens in the sample, and every iteration run.
  o.init_sample = 1 << 20;
  o.stop_when_stable = false;
  o.max_iters = 12;
  check_against_single(data, o, even_split(data.n), "full sample, fixed iterations");
}

TEST_F(KmeansMpi, ReseedingMatchesSingleProcess) {
  KMeansOptions o;
  o.clusters = 5;
  o.init_sample = 8;
  const Data data = with_empty_clusters(100, o.seed);
  const KMeansResult ref = check_against_single(data, o, even_split(data.n), "even split");
  EXPECT_EQ(ref.history.front().reseeded, 2);
  if (P >= 2) check_against_single(data, o, split_without_rank0(data.n), "rank 0 empty");
}


// A problem on one rank makes every rank throw (no rank is left waiting in a collective).
TEST_F(KmeansMpi, ErrorsOnOneRankThrowOnEveryRank) {
  const std::int64_t n = 6, d = 4;
  const int bad = P - 1;
  KMeansOptions o;
  o.clusters = 2;
  std::vector<std::int64_t> ids(static_cast<std::size_t>(n));
  std::iota(ids.begin(), ids.end(), std::int64_t{me * n});
  const Tensor id_t = Tensor::from_vector(ids, {n}, Device::cpu);
  Tensor x = Tensor::full({n, d}, 1.0, DType::f32, Device::cpu);

  // Zero-norm row (global id bad * n + 2) on the last rank.
  Tensor z = x.clone();
  if (me == bad) std::fill(z.data<float>() + 2 * d, z.data<float>() + 3 * d, 0.0f);
  EXPECT_NE(error_of([&] { spherical_kmeans(z, id_t, o, *world); })
                .find("global id " + std::to_string(bad * n + 2) + " has zero norm"),
            std::string::npos);

  // Ids that do not match the points on the last rank.
  const Tensor short_ids = me == bad ? id_t.rows(0, n - 1).clone() : id_t;
  const std::string msg = error_of([&] { spherical_kmeans(x, short_ids, o, *world); });
  EXPECT_NE(msg.find(me == bad ? "global_ids must be an i64 tensor [6]" : "rank " + std::to_string(bad) + " passed invalid global_ids"),
            std::string::npos)
      << msg;

  // Too few tokens in total.
  o.clusters = P * n + 1;
  EXPECT_NE(error_of([&] { spherical_kmeans(x, id_t, o, *world); })
                .find("need at least " + std::to_string(P * n + 1) + " tokens, got " + std::to_string(P * n)),
            std::string::npos);
  o.clusters = 2;

  if (P >= 2) {
    // Dims differ: the last rank passes D + 1.
    const Tensor xd = me == bad ? Tensor::full({n, d + 1}, 1.0, DType::f32, Device::cpu) : x;
    EXPECT_NE(error_of([&] { spherical_kmeans(xd, id_t, o, *world); })
                  .find("dims differ between ranks: rank 0 has D = 4, rank " + std::to_string(bad) + " has D = 5"),
              std::string::npos);
    // The same id on two ranks (both in the sample: n * P tokens, sample 8192).
    std::vector<std::int64_t> dup = ids;
    if (me == bad) dup[0] = 0;
    EXPECT_NE(error_of([&] { spherical_kmeans(x, Tensor::from_vector(dup, {n}, Device::cpu), o, *world); })
                  .find("global id 0 is held by two tokens"),
              std::string::npos);
  }
  // The world is still usable: a valid call succeeds everywhere.
  Tensor ok = Tensor::empty({n, d}, DType::f32, Device::cpu);
  std::mt19937_64 rng(static_cast<std::uint64_t>(me));
  std::normal_distribution<float> g;
  for (std::int64_t i = 0; i < n * d; ++i) ok.data<float>()[i] = g(rng);
  EXPECT_EQ(error_of([&] { spherical_kmeans(ok, id_t, o, *world); }), "");
}

}  // namespace
}  // namespace upcycle
