// The per-cluster second moments by Backend kernels (include/upcycle/init/second_moments.hpp: a
// stable sort by cluster, a gather and one f64 GEMM per cluster), which cluster upcycling uses on a
// GPU, run on the CPU backend against plain loops. Every product of two f32 values is exact in
// double, so the two differ only in the order of the n additions per entry: |diff| <= n eps
// sum |x_i x_j| (the standard bound; asserted with that magnitude, not with |G|).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "error_of.hpp"
#include "upcycle/init/second_moments.hpp"

namespace upcycle::init {
namespace {

TEST(ClusterSecondMoments, MatchPlainLoopsPerClusterWithEmptyClustersZero) {
  const std::int64_t n = 700, d = 9, k = 5;
  std::mt19937_64 rng(8);
  std::normal_distribution<float> g(0.5f, 2.0f);
  std::uniform_int_distribution<std::int64_t> pick(0, k - 2);  // cluster k - 1 stays empty
  std::vector<float> x(static_cast<std::size_t>(n * d));
  for (float& v : x) v = g(rng);
  std::vector<std::int64_t> a(static_cast<std::size_t>(n));
  for (std::int64_t& c : a) c = pick(rng);
  const Tensor got = cluster_second_moments(Tensor::from_vector(x, {n, d}, Device::cpu),
                                            Tensor::from_vector(a, {n}, Device::cpu), k);
  ASSERT_EQ(got.shape(), Shape({k, d, d}));
  const std::vector<double> gv = got.to_vector<double>();
  const double eps = 2.220446049250313e-16;
  for (std::int64_t e = 0; e < k; ++e)
    for (std::int64_t i = 0; i < d; ++i)
      for (std::int64_t j = 0; j < d; ++j) {
        double want = 0.0, mag = 0.0;
        for (std::int64_t t = 0; t < n; ++t) {
          if (a[static_cast<std::size_t>(t)] != e) continue;
          const double p = static_cast<double>(x[t * d + i]) * static_cast<double>(x[t * d + j]);
          want += p;
          mag += std::abs(p);
        }
        const double v = gv[static_cast<std::size_t>((e * d + i) * d + j)];
        if (e == k - 1) {
          ASSERT_EQ(v, 0.0);
        } else {
          ASSERT_NEAR(v, want, static_cast<double>(n) * eps * mag) << "cluster " << e << " (" << i << ", " << j << ")";
          ASSERT_GT(mag, 0.0);
        }
      }
}

TEST(ClusterSecondMoments, NoPointsAndBadArguments) {
  const Tensor none = cluster_second_moments(Tensor::empty({0, 3}, DType::f32, Device::cpu),
                                             Tensor::empty({0}, DType::i64, Device::cpu), 2);
  for (double v : none.to_vector<double>()) EXPECT_EQ(v, 0.0);
  const Tensor x = Tensor::zeros({4, 3}, DType::f32, Device::cpu);
  EXPECT_NE(testing::error_of([&] { cluster_second_moments(x, Tensor::zeros({4}, DType::i32, Device::cpu), 2); })
                .find("assignment must be i64 [4]"),
            std::string::npos);
  const Tensor out_of_range = Tensor::from_vector<std::int64_t>({0, 1, 2, 0}, {4}, Device::cpu);
  EXPECT_NE(testing::error_of([&] { cluster_second_moments(x, out_of_range, 2); }).find("moe_dispatch"),
            std::string::npos);
}

}  // namespace
}  // namespace upcycle::init
