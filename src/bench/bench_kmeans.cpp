// bench_kmeans: upcycle's spherical k-means (init::spherical_kmeans, one process) against FAISS's
// faiss::Clustering (spherical = true, IndexFlatIP) on the same synthetic clustered tokens, the
// same number of Lloyd iterations and the same thread count, measured in the same run.
//   bench_kmeans [--n 65536] [--d 64] [--k 8] [--iters 25] [--threads N] [--rounds 5] [--seed 1]
//                [--only upcycle|faiss]   (one side alone, for profiling; no ratio)
// Fairness:
//  - both run exactly --iters iterations: ours with stop_when_stable = false, FAISS always does;
//    FAISS with nredo = 1 and max_points_per_centroid raised so that it trains on every token.
//  - threads: ours through configure_cpu_threads (its pool; OpenBLAS single-threaded under it),
//    FAISS through omp_set_num_threads(--threads) and, in two runs per round, OpenBLAS with
//    --threads threads (FAISS calls sgemm from one thread and relies on a threaded BLAS) and with
//    one thread; the ratio is against the faster FAISS setting.
//  - FAISS gets the tokens already normalised (its spherical mode only normalises the centroids;
//    normalising the input makes it the same problem); that copy is not timed. Ours normalises
//    inside, and that is timed.
//  - the seedings differ (k-means++ on a sample vs FAISS's random pick of k tokens), so the final
//    objectives are printed for both, from one shared function.
// Every round runs ours and FAISS back to back (load from other processes hits both alike); the
// times are medians over rounds.
#include <faiss/Clustering.h>
#include <faiss/IndexFlat.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "upcycle/backend/threads.hpp"
#include "upcycle/init/spherical_kmeans.hpp"

extern "C" void openblas_set_num_threads(int);

namespace {

using namespace upcycle;
using bench::Clock;
using bench::median;
using bench::seconds_since;

struct Args {
  std::int64_t n = 65536, d = 64, k = 8, iters = 25;
  int threads = 0, rounds = 5;
  std::uint64_t seed = 1;
  bool run_ours = true, run_faiss = true;  // --only upcycle|faiss (for profiling one side)
};

Args parse(int argc, char** argv) {
  Args a;
  std::string only = "both";
  bench::Args args("bench_kmeans", "upcycle's spherical k-means against FAISS's on the same clustered tokens, "
                                   "iterations and threads.");
  args.add("n", a.n, "tokens")
      .add("d", a.d, "dimensions")
      .add("k", a.k, "clusters")
      .add("iters", a.iters, "Lloyd iterations (both run exactly this many)")
      .add("threads", a.threads, "CPU threads (0: the cores)")
      .add("rounds", a.rounds, "repeats; medians are reported")
      .add("seed", a.seed, "seed of the tokens and of both seedings")
      .add("only", only, "both, or upcycle / faiss alone (for profiling; no ratio)");
  args.parse(argc, argv);
  if (only != "both" && only != "upcycle" && only != "faiss")
    args.fail("--only wants upcycle, faiss or both, got '" + only + "'");
  a.run_ours = only != "faiss";
  a.run_faiss = only != "upcycle";
  if (a.n < a.k || a.d < 1 || a.k < 1 || a.iters < 1 || a.rounds < 1)
    args.fail("want --d, --k, --iters, --rounds >= 1 and --n >= --k");
  return a;
}

// k planted unit directions, tokens = scale * (direction + noise), noise of norm ~0.5 (clusters
// overlap a little, so Lloyd keeps moving for several iterations), scales in [0.5, 20].
std::vector<float> clustered_tokens(const Args& a) {
  std::mt19937_64 rng(a.seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> dirs(static_cast<std::size_t>(a.k * a.d));
  for (std::int64_t c = 0; c < a.k; ++c) {
    float s = 0;
    for (std::int64_t j = 0; j < a.d; ++j) s += std::pow(dirs[static_cast<std::size_t>(c * a.d + j)] = g(rng), 2.0f);
    for (std::int64_t j = 0; j < a.d; ++j) dirs[static_cast<std::size_t>(c * a.d + j)] /= std::sqrt(s);
  }
  std::uniform_int_distribution<std::int64_t> label(0, a.k - 1);
  std::uniform_real_distribution<float> scale(0.5f, 20.0f);
  const float sd = 0.5f / std::sqrt(static_cast<float>(a.d));
  std::vector<float> x(static_cast<std::size_t>(a.n * a.d));
  for (std::int64_t t = 0; t < a.n; ++t) {
    const float* dir = dirs.data() + label(rng) * a.d;
    const float s = scale(rng);
    for (std::int64_t j = 0; j < a.d; ++j) x[static_cast<std::size_t>(t * a.d + j)] = s * (dir[j] + sd * g(rng));
  }
  return x;
}

std::vector<float> normalised(const std::vector<float>& x, std::int64_t n, std::int64_t d) {
  std::vector<float> u(x.size());
  for (std::int64_t t = 0; t < n; ++t) {
    double q = 0;
    for (std::int64_t j = 0; j < d; ++j) q += double(x[t * d + j]) * x[t * d + j];
    const double inv = 1.0 / std::sqrt(q);
    for (std::int64_t j = 0; j < d; ++j) u[t * d + j] = static_cast<float>(x[t * d + j] * inv);
  }
  return u;
}

// The shared objective: mean over tokens of max_e c_e . u_t (u: unit tokens, c: unit centroids;
// the centroid rows are renormalised here in double so both sets are judged alike), in double.
double mean_best_cosine(const std::vector<float>& u, const std::vector<float>& centroids, std::int64_t n,
                        std::int64_t d, std::int64_t k) {
  std::vector<double> c(centroids.begin(), centroids.end());
  for (std::int64_t e = 0; e < k; ++e) {
    double q = 0;
    for (std::int64_t j = 0; j < d; ++j) q += c[e * d + j] * c[e * d + j];
    for (std::int64_t j = 0; j < d; ++j) c[e * d + j] /= std::sqrt(q);
  }
  double total = 0;
#pragma omp parallel for reduction(+ : total) schedule(static)
  for (std::int64_t t = 0; t < n; ++t) {
    double best = -2;
    for (std::int64_t e = 0; e < k; ++e) {
      double dot = 0;
      for (std::int64_t j = 0; j < d; ++j) dot += c[e * d + j] * u[t * d + j];
      best = std::max(best, dot);
    }
    total += best;
  }
  return total / static_cast<double>(n);
}

int run(int argc, char** argv) {
  const Args a = parse(argc, argv);
  const int threads = configure_cpu_threads(a.threads);
  const std::vector<float> x = clustered_tokens(a);
  const std::vector<float> u = normalised(x, a.n, a.d);
  const Tensor points = Tensor::from_vector(x, {a.n, a.d}, Device::cpu);
  std::vector<std::int64_t> id_values(static_cast<std::size_t>(a.n));
  for (std::int64_t t = 0; t < a.n; ++t) id_values[static_cast<std::size_t>(t)] = t;
  const Tensor ids = Tensor::from_vector(id_values, {a.n}, Device::cpu);

  init::KMeansOptions o;
  o.clusters = a.k;
  o.max_iters = a.iters;
  o.seed = a.seed;
  o.stop_when_stable = false;
  faiss::ClusteringParameters cp;
  cp.niter = static_cast<int>(a.iters);
  cp.nredo = 1;
  cp.spherical = true;
  cp.verbose = false;
  cp.seed = static_cast<int>(a.seed);
  cp.max_points_per_centroid = static_cast<int>(a.n / a.k + 1);  // no subsampling
  cp.min_points_per_centroid = 1;

  std::printf("bench_kmeans: n %lld, d %lld, k %lld, %lld iterations, %d thread(s), %d round(s)\n",
              static_cast<long long>(a.n), static_cast<long long>(a.d), static_cast<long long>(a.k),
              static_cast<long long>(a.iters), threads, a.rounds);
  // FAISS runs twice per round: with a threaded BLAS (its intended setting) and with OpenBLAS
  // single-threaded (on a small or shared machine the OpenBLAS pool and FAISS's spinning OpenMP
  // threads oversubscribe the cores); the ratio is against the faster of the two.
  std::vector<double> t_ours, t_faiss[2];
  std::vector<float> c_ours, c_faiss[2];
  const int faiss_blas[2] = {threads, 1};
  const int variants = threads > 1 ? 2 : 1;  // with one thread both settings are the same
  SelfCommunicator self;
  for (int r = 0; r < a.rounds; ++r) {
    if (a.run_ours) {
      configure_cpu_threads(threads);
      const auto t0 = Clock::now();
      const init::KMeansResult res = init::spherical_kmeans(points, ids, o, self);
      t_ours.push_back(seconds_since(t0));
      c_ours = res.centroids.to_vector<float>();
    }
    for (int v = 0; v < variants && a.run_faiss; ++v) {
      omp_set_num_threads(threads);
      openblas_set_num_threads(faiss_blas[v]);
      faiss::Clustering clus(static_cast<int>(a.d), static_cast<int>(a.k), cp);
      faiss::IndexFlatIP index(a.d);
      const auto t0 = Clock::now();
      clus.train(a.n, u.data(), index);
      t_faiss[v].push_back(seconds_since(t0));
      c_faiss[v] = clus.centroids;
    }
  }
  configure_cpu_threads(threads);
  const auto rounds = [](const std::vector<double>& t) {
    std::string s;
    for (double v : t) s += " " + std::to_string(v).substr(0, 6);
    return s;
  };
  std::printf("%-22s %9s %12s %12s   %s\n", "", "seconds", "s/iteration", "objective", "rounds (s)");
  const double s_ours = a.run_ours ? median(t_ours) : 0.0;
  if (a.run_ours)
    std::printf("%-22s %9.4f %12.5f %12.8f  %s\n", "upcycle", s_ours, s_ours / a.iters,
                mean_best_cosine(u, c_ours, a.n, a.d, a.k), rounds(t_ours).c_str());
  if (!a.run_faiss) return 0;
  double best_faiss = 0;
  for (int v = 0; v < variants; ++v) {
    const double s = median(t_faiss[v]);
    best_faiss = v == 0 ? s : std::min(best_faiss, s);
    const std::string name = "faiss (blas threads " + std::to_string(faiss_blas[v]) + ")";
    std::printf("%-22s %9.4f %12.5f %12.8f  %s\n", name.c_str(), s, s / a.iters,
                mean_best_cosine(u, c_faiss[v], a.n, a.d, a.k), rounds(t_faiss[v]).c_str());
  }
  if (a.run_ours) std::printf("time ratio faiss / upcycle (faster faiss setting): %.2fx\n", best_faiss / s_ours);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_kmeans: %s\n", e.what());
    return 1;
  }
}
