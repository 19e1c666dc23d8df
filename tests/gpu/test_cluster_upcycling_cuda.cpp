// Cluster-aware upcycling on the GPU against the CPU, on the same inputs: spherical k-means
// (Backend kernels on cuda), the per-cluster second moments, the float64 linear algebra of
// device_linalg.hpp (cuSOLVER, cuBLAS), the whitened SVD's device path against the host path
// (LAPACKE), one block's cluster upcycling, and the upcycle stage with run.device = cuda (the
// calibration tokens stay on the GPU). Exits 77 (CTest: Skipped) without a usable GPU.
//
// Bounds, where the test asserts closeness rather than equality:
//  - k-means: the unit rows (double norms, another summation order) and the f32 score GEMM
//    (cuBLAS, no TF32) differ from the CPU's by rounding (~1e-7 relative), far below the planted
//    margins (the best and second-best cosines of a token differ by > 0.1), so the assignments and
//    every count are equal; the sums then differ only through the unit rows, so the centroids agree
//    to a few f32 ulps (1e-6) and the objectives to 1e-6.
//  - float64 factorisations: backward-stable routines on well-conditioned matrices (cond <= 1e3):
//    1e-12 relative; eigenvectors of distinct eigenvalues up to sign, |v . v'| >= 1 - 1e-10.
//  - the whitened SVD: as in tests/unit/test_whitened_svd_on_device.cpp (1e-10 on planted
//    spectra with cond(S) <= 3 and gap >= sigma_1^2 / 30), and the D = 768 case at the bound its
//    spectrum allows (see there).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "fake_fashion_mnist.hpp"
#include "tiny_configs.hpp"
#include "upcycle/autograd/var.hpp"
#include "upcycle/backend/backend.hpp"
#include "upcycle/init/device_linalg.hpp"
#include "upcycle/init/ffn_upcycling.hpp"
#include "upcycle/init/second_moments.hpp"
#include "upcycle/init/spherical_kmeans.hpp"
#include "upcycle/init/whitened_svd.hpp"
#include "upcycle/moe/moe_layer.hpp"
#include "upcycle/train/upcycle_stage.hpp"
#include "whitened_svd_parity.hpp"

namespace upcycle {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// K noisy directions in D dims, token norms in [0.5, 20]; the first K tokens one per cluster.
struct Planted {
  Tensor points, ids;
  std::vector<std::int64_t> labels;
};

Planted planted_tokens(std::int64_t n, std::int64_t d, std::int64_t k, double noise, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> g(0.0, 1.0);
  std::vector<double> dirs(static_cast<std::size_t>(k * d));
  for (std::int64_t c = 0; c < k; ++c) {
    double s = 0;
    for (std::int64_t j = 0; j < d; ++j) {
      double& v = dirs[static_cast<std::size_t>(c * d + j)];
      v = g(rng);
      s += v * v;
    }
    for (std::int64_t j = 0; j < d; ++j) dirs[static_cast<std::size_t>(c * d + j)] /= std::sqrt(s);
  }
  std::uniform_int_distribution<std::int64_t> label(0, k - 1);
  std::uniform_real_distribution<double> scale(0.5, 20.0);
  std::vector<float> x;
  Planted p;
  for (std::int64_t t = 0; t < n; ++t) {
    const std::int64_t c = t < k ? t : label(rng);
    const double s = scale(rng);
    for (std::int64_t j = 0; j < d; ++j)
      x.push_back(static_cast<float>(s * (dirs[static_cast<std::size_t>(c * d + j)] + noise / std::sqrt(d) * g(rng))));
    p.labels.push_back(c);
  }
  std::vector<std::int64_t> ids(static_cast<std::size_t>(n));
  std::iota(ids.begin(), ids.end(), std::int64_t{100});
  p.points = Tensor::from_vector(x, {n, d}, Device::cpu);
  p.ids = Tensor::from_vector(ids, {n}, Device::cpu);
  return p;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = a.to(Device::cpu).to(DType::f64).to_vector<double>();
  const std::vector<double> y = b.to(Device::cpu).to(DType::f64).to_vector<double>();
  EXPECT_EQ(x.size(), y.size());
  double m = 0;
  for (std::size_t i = 0; i < x.size() && i < y.size(); ++i) m = std::max(m, std::abs(x[i] - y[i]));
  return m;
}

void expect_same_kmeans(const init::KMeansResult& cpu, const init::KMeansResult& gpu) {
  EXPECT_EQ(gpu.assignment.device(), Device::cuda);
  EXPECT_EQ(gpu.centroids.device(), Device::cpu);
  EXPECT_EQ(gpu.assignment.to_vector<std::int64_t>(), cpu.assignment.to_vector<std::int64_t>());
  EXPECT_EQ(gpu.sizes, cpu.sizes);
  EXPECT_EQ(gpu.converged, cpu.converged);
  ASSERT_EQ(gpu.history.size(), cpu.history.size());
  for (std::size_t i = 0; i < cpu.history.size(); ++i) {
    EXPECT_EQ(gpu.history[i].changed, cpu.history[i].changed) << "iteration " << i + 1;
    EXPECT_EQ(gpu.history[i].reseeded, cpu.history[i].reseeded) << "iteration " << i + 1;
    EXPECT_EQ(gpu.history[i].sizes, cpu.history[i].sizes) << "iteration " << i + 1;
    EXPECT_NEAR(gpu.history[i].objective, cpu.history[i].objective, 1e-6) << "iteration " << i + 1;
  }
  EXPECT_LE(max_abs_diff(gpu.centroids, cpu.centroids), 1e-6);
}

init::KMeansResult kmeans_on(Device device, const Planted& p, const init::KMeansOptions& o) {
  SelfCommunicator self;
  return init::spherical_kmeans(p.points.to(device), p.ids, o, self);
}

TEST(KMeansCuda, PlantedClustersGiveTheCpusAssignmentsAndCentroids) {
  struct Case {
    std::int64_t n, d, k;
    double noise;
  };
  for (const Case c : {Case{4000, 64, 8, 0.03}, Case{4000, 256, 8, 0.5}, Case{65536, 256, 16, 0.5}}) {
    SCOPED_TRACE(::testing::Message() << "n " << c.n << " D " << c.d << " K " << c.k << " noise " << c.noise);
    const Planted p = planted_tokens(c.n, c.d, c.k, c.noise, 5 + static_cast<std::uint64_t>(c.d));
    init::KMeansOptions o;
    o.clusters = c.k;
    o.init_sample = 2048;
    auto t0 = Clock::now();
    const init::KMeansResult cpu = kmeans_on(Device::cpu, p, o);
    const double cpu_s = seconds_since(t0);
    kmeans_on(Device::cuda, p, o);  // warm-up (cuBLAS and allocator start-up)
    t0 = Clock::now();
    const init::KMeansResult gpu = kmeans_on(Device::cuda, p, o);
    const double gpu_s = seconds_since(t0);
    std::printf("k-means n %lld D %lld K %lld: %zu iterations, CPU %.3f s, GPU %.3f s\n", static_cast<long long>(c.n),
                static_cast<long long>(c.d), static_cast<long long>(c.k), gpu.history.size(), cpu_s, gpu_s);
    expect_same_kmeans(cpu, gpu);
    // And they are the planted clusters (so the comparison is of a meaningful result).
    const auto a = gpu.assignment.to_vector<std::int64_t>();
    std::vector<std::int64_t> cluster_of(static_cast<std::size_t>(c.k), -1);
    for (std::size_t t = 0; t < a.size(); ++t) {
      auto& m = cluster_of[static_cast<std::size_t>(p.labels[t])];
      if (m < 0) m = a[t];
      ASSERT_EQ(a[t], m) << "token " << t;
    }
  }
}

// Three directions with 100 tokens each (norms powers of two, so the unit rows of a direction are
// bitwise equal on either device) and two outliers that hash last: the 8-token sample sees three
// directions, two of K = 5 centroids start unplaced, and the re-seeding (scores and assignment read
// on the host, the moved tokens' rows and assignments written back to the GPU) must give the
// CPU's clusters {A}, {B}, {C}, {o1}, {o2}.
TEST(KMeansCuda, EmptyClustersAreReseededAsOnTheCpu) {
  const std::int64_t d = 16, k = 5, n = 302;
  init::KMeansOptions o;
  o.clusters = k;
  o.init_sample = 8;
  std::vector<std::int64_t> by_hash(static_cast<std::size_t>(n));
  std::iota(by_hash.begin(), by_hash.end(), std::int64_t{0});
  std::sort(by_hash.begin(), by_hash.end(), [&](std::int64_t a, std::int64_t b) {
    return init::kmeans_sample_hash(o.seed, a) < init::kmeans_sample_hash(o.seed, b);
  });
  std::mt19937_64 rng(11);
  std::normal_distribution<double> g(0.0, 1.0);
  std::vector<std::vector<double>> dirs(5, std::vector<double>(static_cast<std::size_t>(d)));
  for (auto& v : dirs)
    for (double& e : v) e = g(rng);
  std::vector<std::int64_t> label(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i)
    label[static_cast<std::size_t>(by_hash[static_cast<std::size_t>(i)])] = i < n - 2 ? i % 3 : 3 + (i - (n - 2));
  std::vector<float> x;
  for (std::int64_t t = 0; t < n; ++t)
    for (std::int64_t j = 0; j < d; ++j)
      x.push_back(std::ldexp(1.0f, static_cast<int>(t % 5) - 2) *
                  static_cast<float>(
                      dirs[static_cast<std::size_t>(label[static_cast<std::size_t>(t)])][static_cast<std::size_t>(j)]));
  Planted p;
  p.points = Tensor::from_vector(x, {n, d}, Device::cpu);
  std::vector<std::int64_t> ids(static_cast<std::size_t>(n));
  std::iota(ids.begin(), ids.end(), std::int64_t{0});
  p.ids = Tensor::from_vector(ids, {n}, Device::cpu);
  const init::KMeansResult cpu = kmeans_on(Device::cpu, p, o), gpu = kmeans_on(Device::cuda, p, o);
  ASSERT_EQ(cpu.history.front().reseeded, 2);
  expect_same_kmeans(cpu, gpu);
}

TEST(SecondMomentsCuda, MatchTheCpuKernels) {
  const Planted p = planted_tokens(5000, 48, 6, 0.5, 3);
  init::KMeansOptions o;
  o.clusters = 6;
  const init::KMeansResult km = kmeans_on(Device::cpu, p, o);
  const Tensor cpu = init::cluster_second_moments(p.points, km.assignment, 6);
  const Tensor gpu = init::cluster_second_moments(p.points.to(Device::cuda), km.assignment.to(Device::cuda), 6);
  EXPECT_EQ(gpu.device(), Device::cuda);
  // Sums of <= 5000 products exact in double, in two orders: n eps of the largest entry's magnitude.
  double scale = 0;
  for (double v : cpu.to_vector<double>()) scale = std::max(scale, std::abs(v));
  EXPECT_LE(max_abs_diff(gpu, cpu), 5000 * 2.3e-16 * scale);
}

// The float64 routines on cuda against their host twins (both through device_linalg.hpp), with NaN
// in the triangle each routine must not read.
init::Matrix spd(std::int64_t n, std::uint64_t seed) {
  const init::Matrix x = init::to_matrix(testing::randn_tensor({4 * n, n}, seed));
  return init::matmul(x, x, true, false);
}
Tensor lower_only(const init::Matrix& a, Device device) {
  init::Matrix b = a;
  for (std::int64_t i = 0; i < b.rows; ++i)
    for (std::int64_t j = i + 1; j < b.cols; ++j) b(i, j) = std::nan("");
  return init::to_tensor(b, DType::f64).to(device);
}
double lower_max_abs_diff(const Tensor& a, const Tensor& b) {
  const init::Matrix x = init::to_matrix(a), y = init::to_matrix(b);
  double m = 0;
  for (std::int64_t i = 0; i < x.rows; ++i)
    for (std::int64_t j = 0; j <= i; ++j) m = std::max(m, std::abs(x(i, j) - y(i, j)));
  return m;
}

TEST(DeviceLinalgCuda, CusolverAndCublasMatchTheHostLibraries) {
  for (std::int64_t n : {1, 7, 100, 768}) {
    SCOPED_TRACE("n " + std::to_string(n));
    const init::Matrix a = spd(n, 20 + static_cast<std::uint64_t>(n));
    Tensor lc = lower_only(a, Device::cpu), lg = lower_only(a, Device::cuda);
    ASSERT_EQ(init::cholesky_lower_in_place(lc), 0);
    ASSERT_EQ(init::cholesky_lower_in_place(lg), 0);
    double scale = 0;
    for (double v : lc.to_vector<double>())
      if (std::isfinite(v)) scale = std::max(scale, std::abs(v));
    EXPECT_LE(lower_max_abs_diff(lg, lc), 1e-12 * scale);
    // The strict upper triangle still holds its NaN: potrf did not touch it.
    const init::Matrix lgm = init::to_matrix(lg);
    if (n > 1) {
      EXPECT_TRUE(std::isnan(lgm(0, n - 1)));
    }

    const Tensor b = testing::randn_tensor({3 * n, n}, 30);
    Tensor pc = Tensor::empty({3 * n, n}, DType::f64, Device::cpu),
           pg = Tensor::empty({3 * n, n}, DType::f64, Device::cuda);
    init::multiply_lower_right(b, lc, pc);
    init::multiply_lower_right(b.to(Device::cuda), lg, pg);
    EXPECT_LE(max_abs_diff(pg, pc), 1e-12 * (1 + max_abs_diff(pc, Tensor::zeros({3 * n, n}, DType::f64, Device::cpu))));
    Tensor xc = pc.clone(), xg = pg.clone();
    init::solve_lower_right_in_place(xc, lc);
    init::solve_lower_right_in_place(xg, lg);
    EXPECT_LE(max_abs_diff(xg, b), 1e-10);  // (b L) L^-1 = b
    EXPECT_LE(max_abs_diff(xg, xc), 1e-10);

    Tensor vc = lower_only(a, Device::cpu), vg = lower_only(a, Device::cuda);
    Tensor wc = Tensor::empty({n}, DType::f64, Device::cpu), wg = Tensor::empty({n}, DType::f64, Device::cuda);
    init::symmetric_eigen_in_place(vc, wc);
    init::symmetric_eigen_in_place(vg, wg);
    const std::vector<double> lc_ = wc.to_vector<double>(), lg_ = wg.to_vector<double>();
    for (std::int64_t i = 0; i < n; ++i)
      EXPECT_NEAR(lg_[static_cast<std::size_t>(i)], lc_[static_cast<std::size_t>(i)], 1e-12 * lc_.back());
    const init::Matrix ec = init::to_matrix(vc), eg = init::to_matrix(vg);
    for (std::int64_t i = 0; i < n; ++i) {
      const bool distinct =
          (i == 0 || lc_[static_cast<std::size_t>(i)] - lc_[static_cast<std::size_t>(i - 1)] > 1e-6 * lc_.back()) &&
          (i + 1 == n || lc_[static_cast<std::size_t>(i + 1)] - lc_[static_cast<std::size_t>(i)] > 1e-6 * lc_.back());
      if (!distinct) continue;
      double dot = 0;
      for (std::int64_t j = 0; j < n; ++j) dot += ec(i, j) * eg(i, j);
      EXPECT_GE(std::abs(dot), 1.0 - 1e-8) << "eigenvector " << i;
    }
  }
  // A leading minor of order 3 that is not positive definite: the same info on both.
  init::Matrix bad = init::Matrix::identity(5);
  bad(2, 2) = -1.0;
  Tensor bc = lower_only(bad, Device::cpu), bg = lower_only(bad, Device::cuda);
  EXPECT_EQ(init::cholesky_lower_in_place(bc), 3);
  EXPECT_EQ(init::cholesky_lower_in_place(bg), 3);
}

std::vector<double> spectrum16() {
  std::vector<double> s;
  for (double v : {30.0, 20.0, 15.0, 10.0, 8.0, 6.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.3, 0.1, 0.05, 0.03, 0.02})
    s.push_back(std::sqrt(v));
  return s;
}

TEST(WhitenedSvdCuda, TheDevicePathOnTheGpuMatchesTheHostPath) {
  const testing::PlantedSvd p = testing::planted_svd(64, 16, spectrum16(), 10);
  const Tensor g_gpu = p.g.to(Device::cuda);
  for (double tau : {0.0, 0.55, 0.9, 0.985, 1.0})
    for (double frac : {0.0, 0.5}) {
      SCOPED_TRACE(::testing::Message() << "tau " << tau << " min_rank_frac " << frac);
      init::WhitenedSvdOptions o;
      o.tau = tau;
      o.min_rank_frac = frac;
      const init::WhitenedSvdResult host = init::whitened_truncated_svd(p.w1, p.g, o);
      const init::WhitenedSvdResult dev = init::whitened_truncated_svd_on_device(p.w1, g_gpu, o);
      EXPECT_EQ(dev.w1.device(), Device::cuda);
      testing::expect_same_svd(host, dev, p.g, 1e-10);
    }
  // The random-subspace control: the same Q from the same stream.
  RngStream a(77, 5), b(77, 5);
  init::WhitenedSvdOptions oa, ob;
  oa.random_subspace = &a;
  ob.random_subspace = &b;
  testing::expect_same_svd(init::whitened_truncated_svd(p.w1, p.g, oa),
                           init::whitened_truncated_svd_on_device(p.w1, g_gpu, ob), p.g, 1e-10);
  // Fallbacks: the same jitter and note (bounds as in test_whitened_svd_on_device).
  const init::Matrix x = init::to_matrix(testing::randn_tensor({5, 16}, 31));
  const Tensor singular = init::to_tensor(init::matmul(x, x, true, false), DType::f64);
  const Tensor w = testing::randn_tensor({24, 16}, 32, 0.05, DType::f64);
  init::WhitenedSvdOptions no_jitter;
  no_jitter.chol_eps = 0.0;
  const init::WhitenedSvdResult hs = init::whitened_truncated_svd(w, singular, no_jitter);
  const init::WhitenedSvdResult ds = init::whitened_truncated_svd_on_device(w, singular.to(Device::cuda), no_jitter);
  EXPECT_TRUE(ds.fallback);
  testing::expect_same_svd(hs, ds, singular, 1e-5);
  const Tensor zero = Tensor::zeros({16, 16}, DType::f64, Device::cpu);
  testing::expect_same_svd(init::whitened_truncated_svd(w, zero, {}),
                           init::whitened_truncated_svd_on_device(w, zero.to(Device::cuda), {}), zero, 1e-10);
}

// The FFN shape of a ViT-B block (D = 768, F = 4 D) with sigma_l^2 = exp(-l / 150): the rank is the
// floor 384 (tau = 0.9 alone would stop at 346), where the gap sigma_r^2 - sigma_{r+1}^2 is
// 5e-4 sigma_1^2, so the paths agree to ~ cond(S) D eps sigma_1^2 / gap ~ 1e-9 on the kept subspace
// and on W1_r: bound 1e-7. Prints the times of both paths.
TEST(WhitenedSvdCuda, VitBaseShapeMatchesTheHostPathAndIsTimed) {
  std::vector<double> s;
  for (int l = 0; l < 768; ++l) s.push_back(std::exp(-l / 300.0));
  const testing::PlantedSvd p = testing::planted_svd(3072, 768, s, 50);
  const Tensor g_gpu = p.g.to(Device::cuda), w_gpu = p.w1.to(Device::cuda);
  init::whitened_truncated_svd_on_device(w_gpu, g_gpu, {});  // warm-up (cuSOLVER handles, workspaces)
  auto t0 = Clock::now();
  const init::WhitenedSvdResult host = init::whitened_truncated_svd(p.w1, p.g, {});
  const double host_s = seconds_since(t0);
  t0 = Clock::now();
  const init::WhitenedSvdResult dev = init::whitened_truncated_svd_on_device(w_gpu, g_gpu, {});
  backend_for(Device::cuda).synchronize();
  const double dev_s = seconds_since(t0);
  std::printf("whitened SVD F 3072 D 768: rank %lld, host (LAPACKE gesdd) %.3f s, GPU (cuSOLVER syevd) %.3f s\n",
              static_cast<long long>(dev.rank), host_s, dev_s);
  EXPECT_EQ(dev.rank, 384);
  testing::expect_same_svd(host, dev, p.g, 1e-7);
}

// One block's cluster upcycling with the calibration tokens on the GPU against the same tokens on
// the host: the same clusters and ranks, the energies to 1e-10 (the two paths agree to ~1e-12 in
// double, second moments included), the router (the centroids) to 1e-6 as k-means above, each
// expert's W1 to its f32 rounding (one ulp, 6e-8 of the largest entry; asserted at 1e-6).
TEST(ClusterUpcyclingCuda, TheGpuPathGivesTheCpuExperts) {
  const std::int64_t D = 32, F = 128, n = 4000, E = 4;
  const Planted tokens = planted_tokens(n, D, E, 0.8, 17);
  init::DenseFfn dense;
  dense.w1 = testing::randn_tensor({F, D}, 5, 0.2, DType::f32);
  dense.w2 = testing::randn_tensor({D, F}, 6, 0.2, DType::f32);
  dense.b1 = Tensor::zeros({F}, DType::f32, Device::cpu);
  dense.b2 = Tensor::zeros({D}, DType::f32, Device::cpu);
  init::UpcycleOptions o;
  o.num_experts = E;
  o.kmeans_init_sample = 512;
  SelfCommunicator self;
  init::CalibrationShard on_cpu{tokens.points, tokens.ids}, on_gpu{tokens.points.to(Device::cuda), tokens.ids};
  init::BlockReport rc, rg;
  const init::ExpertSet cpu = init::upcycle_cluster(init::BlockContext{o, 1, &on_cpu, &self}, dense, rc);
  const init::ExpertSet gpu = init::upcycle_cluster(init::BlockContext{o, 1, &on_gpu, &self}, dense, rg);
  EXPECT_EQ(rg.cluster_sizes, rc.cluster_sizes);
  EXPECT_EQ(rg.svd_ranks, rc.svd_ranks);
  for (std::size_t e = 0; e < rc.energy_kept.size(); ++e) EXPECT_NEAR(rg.energy_kept[e], rc.energy_kept[e], 1e-10);
  EXPECT_LE(max_abs_diff(gpu.router, cpu.router), 1e-6);
  const double scale = max_abs_diff(cpu.w1, Tensor::zeros_like(cpu.w1));
  EXPECT_LE(max_abs_diff(gpu.w1, cpu.w1), 1e-6 * scale);
  EXPECT_EQ(max_abs_diff(gpu.w2, cpu.w2), 0.0);
}

// The upcycle stage's model step with run.device = cuda: calibration keeps the tokens on the GPU,
// and with tau = 1 (every expert keeps the full whitened rank) each expert is the dense FFN again,
// so the MoE block equals the dense block (the identity of tests/unit/test_upcycling.cpp, here
// through calibration, k-means, second moments and cuSOLVER on the GPU).
TEST(UpcycleStageCuda, CalibratesOnTheGpuAndTauOneGivesTheDenseBlock) {
  const fs::path data = fs::temp_directory_path() / ("upcycle_test_cluster_cuda_" + std::to_string(::getpid()));
  // 720 training images give about 2700 calibration tokens at the default token fraction (17
  // tokens per image, 0.25 kept): more than the 2000 asked for.
  upcycle::testing::write_fake_fashion_mnist(data, 720, 40);
  const std::vector<ConfigOverride> overrides = {
      {"run.device", "cuda"},       {"model.init_std", "0.2"},    {"upcycle.calib_tokens", "2000"},
      {"upcycle.kmeans_init_sample", "512"}, {"upcycle.method", "cluster"}, {"upcycle.tau", "1"},
      {"upcycle.min_rank_frac", "0"}, {"data.path", data.string()}};
  const Config cfg = parse_config(testing::tiny_vit_moe_ini(1), "test_cluster_upcycling_cuda", overrides);
  auto world = std::make_shared<SelfCommunicator>();
  auto dense = make_task(cfg, *world);
  TaskOptions mo;
  mo.moe = true;
  auto moe = make_task(cfg, *world, mo);
  ASSERT_EQ(dense->device(), Device::cuda);
  const UpcycleResult r = upcycle_model(cfg, *dense, *moe, *world);
  ASSERT_EQ(r.calibration.blocks.size(), 1u);
  EXPECT_EQ(r.calibration.blocks[0].points.device(), Device::cuda);
  EXPECT_GE(r.calibration.global_tokens, 2000);
  const init::BlockReport& rep = r.reports.at(0);
  std::int64_t total = 0;
  for (auto s : rep.cluster_sizes) total += s;
  EXPECT_EQ(total, r.calibration.global_tokens);
  for (auto rank : rep.svd_ranks) EXPECT_EQ(rank, 16);

  NoGradGuard no_grad;
  Tensor x = Tensor::empty({64, 16}, DType::f32, Device::cuda);
  backend_of(x).normal(x, 99, 0, 0.0, 1.0);
  const Tensor want = dense->blocks()[1].mlp->forward(Var(x)).value();
  const Tensor got = moe::moe_layer_of(moe->blocks()[1])->forward(Var(x)).value();
  // As test_upcycling's kIdentityBound: a few f32 ulps of gate-weighted copies (measured ~1e-7 on
  // the CPU); a wrong expert is off by ~1e-2.
  EXPECT_LE(max_abs_diff(got, want), 1e-5 * max_abs_diff(want, Tensor::zeros_like(want)));
  fs::remove_all(data);
}

}  // namespace
}  // namespace upcycle
