// bench_alltoall: bandwidth of the all-to-all that moves MoE tokens, for per-rank message sizes
// from --min to --max bytes (doubling), equal counts to every peer, f32 rows of --row floats:
//   upcycle    Communicator::all_to_all_v (into a preallocated receive tensor)
//   raw        MPI_Alltoallv of the same bytes on the same MPI_Comm (MPI_FLOAT element counts)
//   var op     the differentiable upcycle::all_to_all_v forward (allocates its output, records
//              the backward node, as in the MoE layer)
//   launch/mpirun_local.sh 2 build/src/bench_alltoall [--min 1024] [--max 67108864] [--row 64]
// Reporting follows nccl-tests: size = bytes each rank sends (its whole send buffer, recv is the
// same size), algbw = size / time, busbw = algbw * (n - 1) / n (the share that crosses the
// links; 0 with one rank). Time per size: warm-up iterations, then the median over iterations of
// the max over ranks, a barrier before each timed iteration. "up/raw" = raw time / upcycle time
// (= upcycle busbw / raw busbw); the project's target is >= 90%.
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "upcycle/autograd/var.hpp"
#include "upcycle/dist/all_to_all.hpp"
#include "upcycle/dist/world.hpp"

namespace {

using namespace upcycle;

// Median over iterations of the per-iteration max over ranks (a barrier before each).
double time_op(const std::function<void()>& op, int warmup, int iters) {
  std::vector<double> times;
  for (int i = 0; i < warmup + iters; ++i) {
    MPI_Barrier(MPI_COMM_WORLD);
    const auto t0 = bench::Clock::now();
    op();
    double s = bench::seconds_since(t0), m = 0.0;
    MPI_Allreduce(&s, &m, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (i >= warmup) times.push_back(m);
  }
  return bench::median(times);
}

std::string human(std::int64_t bytes) {
  char b[32];
  if (bytes >= (1 << 20)) std::snprintf(b, sizeof b, "%ld MiB", static_cast<long>(bytes >> 20));
  else std::snprintf(b, sizeof b, "%ld KiB", static_cast<long>(bytes >> 10));
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  std::int64_t min_bytes = 1 << 10, max_bytes = std::int64_t{64} << 20, row = 64;
  int max_iters = 200, min_iters = 10, warmup = 5;
  bench::Args args("bench_alltoall", "All-to-all bandwidth: Communicator::all_to_all_v, raw MPI_Alltoallv and the "
                                     "autograd op (under an MPI launcher).");
  args.add("min", min_bytes, "smallest message per rank, bytes")
      .add("max", max_bytes, "largest message per rank, bytes (sizes double from --min)")
      .add("row", row, "floats per row")
      .add("iters", max_iters, "most timed iterations per size")
      .add("min-iters", min_iters, "fewest timed iterations per size")
      .add("warmup", warmup, "untimed iterations per size");
  args.parse(argc, argv);
  if (min_bytes < 1 || max_bytes < min_bytes || row < 1 || min_iters < 1 || max_iters < min_iters || warmup < 0)
    args.fail("want 1 <= --min <= --max, --row >= 1, 1 <= --min-iters <= --iters, --warmup >= 0");
  MpiSession session(argc, argv);
  try {
    if (!session.active()) {
      std::cerr << "bench_alltoall: start it under an MPI launcher (mpirun -np N, also N = 1)\n";
      return 2;
    }
    std::shared_ptr<Communicator> world = make_world_communicator();
    const int n = world->size(), rank = world->rank();
    if (rank == 0) {
      std::printf("bench_alltoall: %d rank(s), f32 rows of %ld floats, equal counts, warm-up %d, median of "
                  "%d..%d iterations (max over ranks)\n",
                  n, static_cast<long>(row), warmup, min_iters, max_iters);
      std::printf("%9s %10s | %9s %8s %8s | %9s %8s %8s | %9s %8s %8s | %7s %7s\n", "size", "rows/peer",
                  "up us", "algbw", "busbw", "raw us", "algbw", "busbw", "var us", "algbw", "busbw", "up/raw",
                  "var/raw");
      std::printf("%9s %10s | %9s %8s %8s | %9s %8s %8s | %9s %8s %8s |\n", "(B/rank)", "", "", "GB/s", "GB/s",
                  "", "GB/s", "GB/s", "", "GB/s", "GB/s");
    }
    for (std::int64_t size = min_bytes; size <= max_bytes; size *= 2) {
      // Equal counts: every peer gets the same whole number of rows; a row narrower than --row
      // when the per-peer share is smaller than one row.
      const std::int64_t per_peer_floats = std::max<std::int64_t>(1, size / 4 / n);
      const std::int64_t width = std::min(row, per_peer_floats);
      const std::int64_t rows_per_peer = per_peer_floats / width;
      const std::int64_t total_rows = rows_per_peer * n;
      const std::int64_t bytes = total_rows * width * 4;  // what each rank actually sends
      const int iters = static_cast<int>(
          std::clamp<std::int64_t>((std::int64_t{256} << 20) / std::max<std::int64_t>(bytes, 1), min_iters, max_iters));

      Tensor send = Tensor::full({total_rows, width}, 1.0 + rank, DType::f32, Device::cpu);
      Tensor recv = Tensor::zeros({total_rows, width}, DType::f32, Device::cpu);
      const std::vector<std::int64_t> counts(static_cast<std::size_t>(n), rows_per_peer);

      const double t_up = time_op([&] { world->all_to_all_v(send, counts, recv, counts); }, warmup, iters);

      std::vector<int> ec(n, static_cast<int>(rows_per_peer * width)), ed(n);
      for (int p = 0; p < n; ++p) ed[p] = p * ec[p];
      float* sb = static_cast<float*>(send.raw());
      float* rb = static_cast<float*>(recv.raw());
      const double t_raw = time_op([&] {
        MPI_Alltoallv(sb, ec.data(), ed.data(), MPI_FLOAT, rb, ec.data(), ed.data(), MPI_FLOAT, MPI_COMM_WORLD);
      }, warmup, iters);

      Var x(send, true);
      const double t_var = time_op([&] {
        Var y = all_to_all_v(*world, x, counts, counts);
        (void)y;
      }, warmup, iters);

      // Correctness: rank q's block of recv holds (1 + q).
      const float* r = static_cast<const float*>(recv.raw());
      for (int q = 0; q < n; ++q)
        if (r[q * rows_per_peer * width] != 1.0f + q) throw std::runtime_error("wrong data received");

      if (rank == 0) {
        const double gb = static_cast<double>(bytes) / 1e9, bus = n > 1 ? (n - 1.0) / n : 0.0;
        std::printf("%9s %10ld | %9.1f %8.2f %8.2f | %9.1f %8.2f %8.2f | %9.1f %8.2f %8.2f | %6.0f%% %6.0f%%\n",
                    human(bytes).c_str(), static_cast<long>(rows_per_peer), t_up * 1e6, gb / t_up,
                    gb / t_up * bus, t_raw * 1e6, gb / t_raw, gb / t_raw * bus, t_var * 1e6, gb / t_var,
                    gb / t_var * bus, 100.0 * t_raw / t_up, 100.0 * t_raw / t_var);
      }
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "bench_alltoall: " << e.what() << "\n";
    session.abort_job(1);
    return 1;
  }
}
