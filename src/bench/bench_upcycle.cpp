// bench_upcycle: the time of every upcycling method and of each phase of cluster-aware upcycling
// (k-means, float64 second moments, whitened truncated SVD) for one FFN of width d, d_ff hidden
// units and E experts, on n synthetic calibration tokens (a mixture of E directions plus noise),
// with a plain LAPACKE_dgesdd of the same W1 S as the peer of the SVD phase (measured in the same
// run: the whitened SVD adds a Cholesky factor, the product W1 S and the solve).
//   bench_upcycle [--d 64] [--dff 128] [--experts 4] [--tokens 65536] [--threads N] [--rounds 3]
//   launch/mpirun_local.sh 2 build/src/bench_upcycle --d 768 --dff 3072 --experts 8
// Under mpirun the tokens are split over the ranks (the phases are collective) and times are the
// max over ranks. Calibration (the dense forward pass) is not here: stage upcycle reports it in
// upcycle_report.json.
#include <lapacke.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "upcycle/backend/backend.hpp"
#include "upcycle/backend/threads.hpp"
#include "upcycle/dist/world.hpp"
#include "upcycle/init/ffn_upcycling.hpp"

namespace {

using namespace upcycle;
using bench::Clock;
using bench::median;
using bench::randn;
using bench::seconds_since;

struct Args {
  std::int64_t d = 64, dff = 128, experts = 4, tokens = 65536;
  int threads = 0, rounds = 3;
};

Args parse(int argc, char** argv) {
  Args a;
  bench::Args args("bench_upcycle", "Every upcycling method and the phases of cluster-aware upcycling for one FFN, "
                                    "with LAPACKE_dgesdd as the SVD phase's peer (tokens split over mpirun's ranks).");
  args.add("d", a.d, "model width")
      .add("dff", a.dff, "FFN hidden units")
      .add("experts", a.experts, "experts E")
      .add("tokens", a.tokens, "calibration tokens (over all ranks)")
      .add("threads", a.threads, "CPU threads per rank (0: the cores / local ranks)")
      .add("rounds", a.rounds, "repeats; medians are reported");
  args.parse(argc, argv);
  if (a.d < 1 || a.dff < 1 || a.experts < 1 || a.tokens < a.experts || a.rounds < 1)
    args.fail("want --d, --dff, --experts, --rounds >= 1 and --tokens >= --experts");
  return a;
}

// This rank's share of n tokens: E random directions, each token = 3 * direction + N(0, 1) noise.
init::CalibrationShard synthetic_tokens(const Args& a, int rank, int world) {
  const std::int64_t first = a.tokens * rank / world, last = a.tokens * (rank + 1) / world, n = last - first;
  const Tensor dirs = randn({a.experts, a.d}, 11);
  init::CalibrationShard s;
  s.points = Tensor::empty({n, a.d}, DType::f32, Device::cpu);
  std::vector<std::int64_t> ids(static_cast<std::size_t>(n));
  const Tensor noise = randn({a.tokens, a.d}, 12);
  const float* pd = dirs.data<float>();
  const float* pn = noise.data<float>();
  float* pp = s.points.data<float>();
  for (std::int64_t t = 0; t < n; ++t) {
    const std::int64_t g = first + t, c = g % a.experts;
    ids[static_cast<std::size_t>(t)] = g;
    for (std::int64_t j = 0; j < a.d; ++j) pp[t * a.d + j] = 3.0f * pd[c * a.d + j] + pn[g * a.d + j];
  }
  s.global_ids = Tensor::from_vector<std::int64_t>(ids, {n}, Device::cpu);
  return s;
}

double max_over_ranks(Communicator& comm, double v) { return bench::max_over_ranks(comm, {v})[0]; }

// One dgesdd (thin, singular vectors) of a [m, n] double matrix: the peer of the SVD phase.
double time_dgesdd(std::int64_t m, std::int64_t n) {
  std::vector<double> a(static_cast<std::size_t>(m * n));
  const Tensor r = randn({m, n}, 13);
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = r.data<float>()[i];
  const std::int64_t k = std::min(m, n);
  std::vector<double> s(static_cast<std::size_t>(k)), u(static_cast<std::size_t>(m * k)), vt(static_cast<std::size_t>(k * n));
  const auto t0 = Clock::now();
  const int info = LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'S', static_cast<int>(m), static_cast<int>(n), a.data(),
                                  static_cast<int>(n), s.data(), u.data(), static_cast<int>(k), vt.data(), static_cast<int>(n));
  const double secs = seconds_since(t0);
  if (info != 0) throw Error(__FILE__, __LINE__, "LAPACKE_dgesdd failed with info " + std::to_string(info));
  return secs;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  MpiSession mpi(argc, argv);
  try {
    auto world = make_world_communicator();
    const int threads = configure_cpu_threads(a.threads);
    const bool root = world->rank() == 0;
    if (root)
      std::printf("bench_upcycle: d = %lld, d_ff = %lld, E = %lld, %lld tokens over %d rank(s) x %d thread(s), median of %d\n",
                  static_cast<long long>(a.d), static_cast<long long>(a.dff), static_cast<long long>(a.experts),
                  static_cast<long long>(a.tokens), world->size(), threads, a.rounds);
    init::DenseFfn ffn;
    ffn.w1 = randn({a.dff, a.d}, 21, 0.02);
    ffn.b1 = Tensor::zeros({a.dff}, DType::f32, Device::cpu);
    ffn.w2 = randn({a.d, a.dff}, 22, 0.02);
    ffn.b2 = Tensor::zeros({a.d}, DType::f32, Device::cpu);
    const init::CalibrationShard cal = synthetic_tokens(a, world->rank(), world->size());

    init::UpcycleOptions o;
    o.num_experts = a.experts;
    std::printf("%s", root ? "\nmethod      seconds   (phases of cluster: median seconds over rounds)\n" : "");
    for (const auto& m : init::upcycle_methods()) {
      o.method = m.name;
      if (o.method == "granular" && (a.experts % o.granularity != 0 || a.dff % o.granularity != 0)) continue;
      init::BlockContext ctx{o, 1, &cal, world.get()};
      std::vector<double> total;
      std::vector<std::vector<std::pair<std::string, double>>> phases;
      for (int r = 0; r < a.rounds; ++r) {
        world->barrier();
        init::BlockReport rep;
        const auto t0 = Clock::now();
        m.run(ctx, ffn, rep);
        total.push_back(max_over_ranks(*world, seconds_since(t0)));
        for (auto& [p, s] : rep.seconds) s = max_over_ranks(*world, s);
        phases.push_back(rep.seconds);
      }
      if (!root) continue;
      std::printf("%-10s %8.4f", m.name, median(total));
      if (!phases.front().empty()) {
        std::printf("   ");
        for (std::size_t p = 0; p < phases.front().size(); ++p) {
          std::vector<double> v;
          for (const auto& ph : phases) v.push_back(ph[p].second);
          std::printf(" %s %.4f", phases.front()[p].first.c_str(), median(v));
        }
      }
      std::printf("\n");
    }
    // The SVD phase against its LAPACK core: E dgesdd calls of W1 S's shape, spread over the ranks
    // as the experts are (expert i on rank i mod W).
    std::vector<double> peer;
    for (int r = 0; r < a.rounds; ++r) {
      double s = 0;
      for (std::int64_t e = world->rank(); e < a.experts; e += world->size()) s += time_dgesdd(a.dff, a.d);
      peer.push_back(max_over_ranks(*world, s));
    }
    if (root)
      std::printf("\npeer: %lld x LAPACKE_dgesdd of [%lld, %lld] in double, spread as the experts: %.4f s\n",
                  static_cast<long long>(a.experts), static_cast<long long>(a.dff), static_cast<long long>(a.d),
                  median(peer));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_upcycle: %s\n", e.what());
    mpi.abort_job(1);
    return 1;
  }
}
