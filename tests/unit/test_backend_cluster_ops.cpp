// The CPU backend's clustering kernels (Backend::normalize_rows, Backend::cluster_sums) against
// plain loops written here, and the k = 1 path of Backend::topk (the k-means argmax) against the
// first index of argsort. The CPU kernels are the oracle the CUDA ones are compared with
// (tests/gpu/backend_op_suite.cpp), so their contracts are pinned bit for bit where they fix the
// arithmetic: a row's squares summed in index order; cluster sums in chunks of chunk_rows rows,
// rows in order, partials in chunk order.
#include <gtest/gtest.h>

#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "error_of.hpp"
#include "upcycle/backend/backend.hpp"
#include "upcycle/backend/threads.hpp"

namespace upcycle {
namespace {

using testing::error_of;

Backend& cpu() { return backend_for(Device::cpu); }

template <class T>
bool same_bits(T a, T b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

template <class T>
void normalize_matches_plain_loops() {
  const std::int64_t n = 9, d = 37;
  std::mt19937_64 rng(3);
  std::normal_distribution<double> g(0.0, 2.0);
  std::vector<T> x(static_cast<std::size_t>(n * d));
  for (T& v : x) v = static_cast<T>(g(rng));
  const double inf = std::numeric_limits<double>::infinity();
  for (std::int64_t j = 0; j < d; ++j) x[static_cast<std::size_t>(1 * d + j)] = T(0);          // zero row
  x[static_cast<std::size_t>(2 * d + 5)] = static_cast<T>(inf);                                    // inf
  x[static_cast<std::size_t>(3 * d + 6)] = static_cast<T>(std::numeric_limits<double>::quiet_NaN());  // NaN
  x[static_cast<std::size_t>(4 * d + 7)] = static_cast<T>(-inf);
  const Tensor xt = Tensor::from_vector(x, {n, d}, Device::cpu);
  Tensor out = Tensor::empty({n, d}, dtype_of<T>::value, Device::cpu);
  Tensor norms = Tensor::empty({n}, DType::f64, Device::cpu);
  cpu().normalize_rows(xt, out, norms);
  const std::vector<T> u = out.to_vector<T>();
  const std::vector<double> nn = norms.to_vector<double>();
  for (std::int64_t r = 0; r < n; ++r) {
    double s = 0;
    for (std::int64_t j = 0; j < d; ++j) s += static_cast<double>(x[r * d + j]) * static_cast<double>(x[r * d + j]);
    const double norm = std::sqrt(s);
    if (r == 1) {
      EXPECT_EQ(nn[1], 0.0);
    } else if (r == 2 || r == 4) {
      EXPECT_EQ(nn[static_cast<std::size_t>(r)], inf);
    } else if (r == 3) {
      EXPECT_TRUE(std::isnan(nn[3]));
    } else {
      EXPECT_TRUE(same_bits(nn[static_cast<std::size_t>(r)], norm)) << "row " << r;
    }
    const bool scalable = std::isfinite(norm) && norm != 0.0;
    double len = 0;
    for (std::int64_t j = 0; j < d; ++j) {
      const T want = scalable ? static_cast<T>(static_cast<double>(x[r * d + j]) * (1.0 / norm)) : T(0);
      ASSERT_TRUE(same_bits(u[static_cast<std::size_t>(r * d + j)], want)) << "row " << r << " col " << j;
      len += static_cast<double>(want) * static_cast<double>(want);
    }
    // A unit row has length 1 up to the rounding of its d elements to T.
    if (scalable) {
      EXPECT_NEAR(std::sqrt(len), 1.0, 4.0 * std::numeric_limits<T>::epsilon());
    }
  }
  // In place (out is x): the same values.
  Tensor y = xt.clone();
  cpu().normalize_rows(y, y, norms);
  EXPECT_EQ(y.to_vector<T>(), u);
}

TEST(NormalizeRows, MatchesPlainLoopsAndZeroesRowsWithoutADirection) {
  normalize_matches_plain_loops<float>();
  normalize_matches_plain_loops<double>();
}

TEST(NormalizeRows, RejectsMismatchedArguments) {
  const Tensor x = Tensor::zeros({4, 3}, DType::f32, Device::cpu);
  Tensor out = Tensor::zeros({4, 3}, DType::f64, Device::cpu), norms = Tensor::zeros({4}, DType::f64, Device::cpu);
  EXPECT_NE(error_of([&] { cpu().normalize_rows(x, out, norms); }).find("normalize_rows: out must be f32[4, 3]"),
            std::string::npos);
  Tensor out32 = Tensor::zeros({4, 3}, DType::f32, Device::cpu),
         short_norms = Tensor::zeros({3}, DType::f64, Device::cpu);
  EXPECT_NE(error_of([&] { cpu().normalize_rows(x, out32, short_norms); }).find("norms must be f64 [4]"),
            std::string::npos);
}

struct SumsInput {
  std::int64_t n, d, k;
  std::vector<double> x, score;
  std::vector<std::int64_t> a, prev;
};

SumsInput sums_input(std::int64_t n, std::int64_t d, std::int64_t k, std::uint64_t seed) {
  SumsInput in{n, d, k, {}, {}, {}, {}};
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> g(0.2, 5.0);
  std::uniform_int_distribution<std::int64_t> c(0, k - 1), p(-1, k - 1);
  for (std::int64_t i = 0; i < n * d; ++i) in.x.push_back(g(rng));
  for (std::int64_t t = 0; t < n; ++t) {
    in.score.push_back(g(rng));
    in.a.push_back(c(rng));
    in.prev.push_back(t % 4 == 0 ? in.a.back() : p(rng));
  }
  return in;
}

std::vector<double> cluster_sums(const SumsInput& in, std::int64_t chunk_rows) {
  Tensor out = Tensor::empty({in.k * in.d + in.k + 2}, DType::f64, Device::cpu);
  cpu().cluster_sums(Tensor::from_vector(in.x, {in.n, in.d}, Device::cpu),
                     Tensor::from_vector(in.score, {in.n}, Device::cpu), Tensor::from_vector(in.a, {in.n}, Device::cpu),
                     Tensor::from_vector(in.prev, {in.n}, Device::cpu), in.k, chunk_rows, out);
  return out.to_vector<double>();
}

// The contract's order, written out: per chunk of chunk_rows rows, sums in row order from 0.0;
// the chunk partials in chunk order from 0.0.
std::vector<double> chunked_reference(const SumsInput& in, std::int64_t chunk_rows) {
  const std::int64_t stride = in.k * in.d + in.k + 2;
  std::vector<double> total(static_cast<std::size_t>(stride), 0.0);
  for (std::int64_t t0 = 0; t0 < in.n; t0 += chunk_rows) {
    std::vector<double> part(static_cast<std::size_t>(stride), 0.0);
    for (std::int64_t t = t0; t < std::min(in.n, t0 + chunk_rows); ++t) {
      const std::int64_t e = in.a[static_cast<std::size_t>(t)];
      for (std::int64_t j = 0; j < in.d; ++j) part[static_cast<std::size_t>(e * in.d + j)] += in.x[t * in.d + j];
      part[static_cast<std::size_t>(in.k * in.d + e)] += 1.0;
      part[static_cast<std::size_t>(in.k * in.d + in.k)] += in.score[static_cast<std::size_t>(t)];
      part[static_cast<std::size_t>(in.k * in.d + in.k + 1)] +=
          in.a[static_cast<std::size_t>(t)] != in.prev[static_cast<std::size_t>(t)];
    }
    for (std::size_t i = 0; i < total.size(); ++i) total[i] += part[i];
  }
  return total;
}

TEST(ClusterSums, FollowsTheContractsOrderBitForBit) {
  const SumsInput in = sums_input(3001, 13, 5, 11);
  for (std::int64_t chunk_rows : {1, 7, 1024, 3001, 100000}) {
    const std::vector<double> got = cluster_sums(in, chunk_rows), want = chunked_reference(in, chunk_rows);
    ASSERT_EQ(got.size(), want.size());
    for (std::size_t i = 0; i < got.size(); ++i)
      ASSERT_TRUE(same_bits(got[i], want[i])) << "element " << i << " chunk_rows " << chunk_rows << ": " << got[i]
                                              << " vs " << want[i];
  }
  // The order matters for f64 data (else the bits above would prove nothing): one pass and 1024-row
  // chunks round differently somewhere.
  const std::vector<double> one = cluster_sums(in, 3001), chunked = cluster_sums(in, 1024);
  std::int64_t differ = 0;
  for (std::size_t i = 0; i < one.size(); ++i) differ += !same_bits(one[i], chunked[i]);
  EXPECT_GT(differ, 0);
}

TEST(ClusterSums, SizesScoreAndChangedCountsAreExact) {
  const SumsInput in = sums_input(2500, 4, 7, 12);
  const std::vector<double> got = cluster_sums(in, 64);
  std::vector<double> sizes(7, 0.0);
  double changed = 0;
  for (std::size_t t = 0; t < in.a.size(); ++t) {
    sizes[static_cast<std::size_t>(in.a[t])] += 1;
    changed += in.a[t] != in.prev[t];
  }
  for (std::int64_t e = 0; e < 7; ++e)
    EXPECT_EQ(got[static_cast<std::size_t>(7 * 4 + e)], sizes[static_cast<std::size_t>(e)]);
  EXPECT_EQ(got[7 * 4 + 7 + 1], changed);
  EXPECT_GT(changed, 1000);
  EXPECT_LT(changed, 2500);
}

TEST(ClusterSums, ThreadCountDoesNotChangeABit) {
  const SumsInput in = sums_input(20000, 9, 6, 13);
  const int before = omp_get_max_threads();
  configure_cpu_threads(1);
  const std::vector<double> one = cluster_sums(in, 1024);
  configure_cpu_threads(3);
  const std::vector<double> three = cluster_sums(in, 1024);
  configure_cpu_threads(before);
  ASSERT_EQ(one.size(), three.size());
  for (std::size_t i = 0; i < one.size(); ++i) EXPECT_TRUE(same_bits(one[i], three[i])) << i;
}

TEST(ClusterSums, NoPointsGiveZerosAndBadArgumentsThrow) {
  const SumsInput none = sums_input(0, 3, 2, 1);
  for (double v : cluster_sums(none, 16)) EXPECT_TRUE(same_bits(v, 0.0));

  SumsInput in = sums_input(10, 2, 3, 2);
  in.a[6] = 3;
  EXPECT_NE(
      error_of([&] { cluster_sums(in, 4); }).find("cluster_sums: assignment 3 at position 6 is out of range [0, 3)"),
      std::string::npos);
  in.a[6] = -1;
  EXPECT_NE(error_of([&] { cluster_sums(in, 4); }).find("assignment -1 at position 6"), std::string::npos);
  in.a[6] = 0;
  EXPECT_NE(error_of([&] { cluster_sums(in, 0); }).find("chunk_rows must be >= 1"), std::string::npos);
  const Tensor x = Tensor::zeros({10, 2}, DType::f64, Device::cpu), s = Tensor::zeros({10}, DType::f64, Device::cpu);
  const Tensor a = Tensor::zeros({10}, DType::i64, Device::cpu), a32 = Tensor::zeros({10}, DType::i32, Device::cpu);
  Tensor out = Tensor::zeros({3 * 2 + 3 + 2}, DType::f64, Device::cpu),
         short_out = Tensor::zeros({10}, DType::f64, Device::cpu);
  EXPECT_NE(error_of([&] { cpu().cluster_sums(x, s, a32, a, 3, 4, out); }).find("assignment must be i64 [10]"),
            std::string::npos);
  EXPECT_NE(error_of([&] { cpu().cluster_sums(x, s, a, a, 3, 4, short_out); }).find("out must be f64 [11]"),
            std::string::npos);
  EXPECT_NE(error_of([&] { cpu().cluster_sums(x, Tensor::zeros({10}, DType::f32, Device::cpu), a, a, 3, 4, out); })
                .find("score must be f64 [10]"),
            std::string::npos);
}

// topk with k = 1 scans instead of sorting: it must still be the first index of the descending
// order (NaN above every number, -0 == +0, ties to the lower index).
template <class T>
void topk_one_is_the_first_of_argsort() {
  const T nan = std::numeric_limits<T>::quiet_NaN(), inf = std::numeric_limits<T>::infinity();
  const std::vector<std::vector<T>> rows = {
      {1, 3, 3, 2},       {-0.0, 0.0, -1, -2}, {0.0, -0.0},        {-inf, -inf, -inf}, {2, nan, 5, nan},
      {nan, 1, nan},      {inf, 7, inf},       {-3, -1, -1, -2},   {4},                {1, 2, 3, 4, 5, 6, 7, 8, 9}};
  for (const auto& r : rows) {
    const std::int64_t c = static_cast<std::int64_t>(r.size());
    const Tensor x = Tensor::from_vector(r, {1, c}, Device::cpu);
    Tensor v = Tensor::empty({1, 1}, dtype_of<T>::value, Device::cpu),
           i = Tensor::empty({1, 1}, DType::i64, Device::cpu);
    Tensor order = Tensor::empty({1, c}, DType::i64, Device::cpu);
    cpu().topk(x, 1, v, i);
    cpu().argsort(x, true, order);
    const std::int64_t want = order.to_vector<std::int64_t>()[0];
    EXPECT_EQ(i.to_vector<std::int64_t>()[0], want) << "row starting " << r[0] << " of " << c;
    EXPECT_TRUE(same_bits(v.to_vector<T>()[0], r[static_cast<std::size_t>(want)]));
  }
  // Many rows at once (the parallel path), against argsort row by row.
  const std::int64_t n = 5000, c = 8;
  std::mt19937_64 rng(4);
  std::uniform_int_distribution<int> small(0, 3);  // many ties
  std::vector<T> x(static_cast<std::size_t>(n * c));
  for (T& e : x) e = static_cast<T>(small(rng));
  const Tensor xt = Tensor::from_vector(x, {n, c}, Device::cpu);
  Tensor v = Tensor::empty({n, 1}, dtype_of<T>::value, Device::cpu), i = Tensor::empty({n, 1}, DType::i64, Device::cpu);
  Tensor order = Tensor::empty({n, c}, DType::i64, Device::cpu);
  cpu().topk(xt, 1, v, i);
  cpu().argsort(xt, true, order);
  const auto got = i.to_vector<std::int64_t>(), all = order.to_vector<std::int64_t>();
  for (std::int64_t r = 0; r < n; ++r)
    ASSERT_EQ(got[static_cast<std::size_t>(r)], all[static_cast<std::size_t>(r * c)]) << r;
}

TEST(TopkOne, IsTheFirstIndexOfTheDescendingOrder) {
  topk_one_is_the_first_of_argsort<float>();
  topk_one_is_the_first_of_argsort<double>();
}

}  // namespace
}  // namespace upcycle
