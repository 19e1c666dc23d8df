// bench_alltoall: bandwidth of the all-to-all that moves MoE tokens, for per-rank message sizes
// from --min to --max bytes (doubling), equal counts to every peer, f32 rows of --row floats, over
// --backend mpi (host tensors, the MPI communicator; the default) or nccl (cuda tensors, the NCCL
// communicator, one GPU per rank):
//   upcycle    Communicator::all_to_all_v (into a preallocated receive tensor)
//   raw        the library's own call for the same bytes on a communicator of its own: mpi:
//              MPI_Alltoallv on MPI_COMM_WORLD (MPI_FLOAT element counts); nccl: one group of
//              ncclSend/ncclRecv to and from every rank, as nccl-tests' alltoall does
//   var op     the differentiable upcycle::all_to_all_v forward (allocates its output, records
//              the backward node, as in the MoE layer)
//   launch/mpirun_local.sh 2 build/src/bench_alltoall [--backend nccl] [--min 1024] [--max 67108864] [--row 64]
// Reporting follows nccl-tests' alltoall: size = bytes each rank sends (its whole send buffer, recv
// is the same size), algbw = size / time, busbw = algbw * (n - 1) / n (the share that crosses the
// links; 0 with one rank). Time per size: warm-up iterations, then the median over iterations of
// the max over ranks; each timed iteration starts after a barrier and ends when the device has
// finished (the compute stream is synchronised). "up/raw" = raw time / upcycle time
// (= upcycle busbw / raw busbw); the project's target is >= 90%.
// Started without an MPI launcher (or built without MPI) it runs one rank; the raw MPI column then
// shows "-" (MPI is not initialised), while the raw NCCL peer needs no MPI.
#ifdef UPCYCLE_WITH_MPI
#include <mpi.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "upcycle/autograd/var.hpp"
#include "upcycle/backend/backend.hpp"
#include "upcycle/backend/devices.hpp"
#include "upcycle/dist/all_to_all.hpp"
#include "upcycle/dist/comm_backend.hpp"
#include "upcycle/dist/nccl.hpp"
#include "upcycle/dist/world.hpp"

#ifdef UPCYCLE_WITH_NCCL
#include "dist/nccl_library.hpp"
#endif

namespace {

using namespace upcycle;

// Median over iterations of the per-iteration max over ranks (a barrier before each iteration;
// the device synchronised after it, so queued GPU work is charged to the iteration).
double time_op(Communicator& world, Device device, const std::function<void()>& op, int warmup, int iters) {
  Backend& be = backend_for(device);
  std::vector<double> times;
  for (int i = 0; i < warmup + iters; ++i) {
    world.barrier();
    const auto t0 = bench::Clock::now();
    op();
    be.synchronize();
    if (i >= warmup) times.push_back(bench::seconds_since(t0));
  }
  return bench::median(bench::max_over_ranks(world, times));
}

std::string human(std::int64_t bytes) {
  char b[32];
  if (bytes >= (1 << 20)) std::snprintf(b, sizeof b, "%ld MiB", static_cast<long>(bytes >> 20));
  else std::snprintf(b, sizeof b, "%ld KiB", static_cast<long>(bytes >> 10));
  return b;
}

// Rank q's block of `recv` (rows_per_peer * width floats per rank) must hold 1 + q everywhere.
void check_received(const Tensor& recv, int n, std::int64_t block, const char* what) {
  const std::vector<float> r = recv.to_vector<float>();
  for (int q = 0; q < n; ++q)
    for (std::int64_t i = 0; i < block; ++i)
      if (r[static_cast<std::size_t>(q * block + i)] != 1.0f + static_cast<float>(q))
        UPCYCLE_THROW(what, ": element ", i, " of the block from rank ", q, " is ",
                      r[static_cast<std::size_t>(q * block + i)], ", expected ", 1 + q);
}

#ifdef UPCYCLE_WITH_NCCL
// nccl-tests' alltoall on an NCCL communicator of its own (not the one under test), on the same
// compute stream: the peer the communicator's all_to_all_v is measured against.
class RawNccl {
 public:
  RawNccl(int rank, int size) : lib_(nccl::library()) {
    ncclUniqueId id{};
    if (rank == 0) nccl::check(lib_.GetUniqueId(&id), "ncclGetUniqueId", nullptr, "the raw peer");
    broadcast_from_world_root(&id, sizeof id);
    nccl::check(lib_.CommInitRank(&comm_, size, id, rank), "ncclCommInitRank", nullptr, "the raw peer");
    size_ = size;
  }
  ~RawNccl() {
    // As the communicator does: abort while a failure unwinds, else let queued work finish first.
    try {
      if (std::uncaught_exceptions() == 0) {
        backend_for(Device::cuda).synchronize();
        lib_.CommDestroy(comm_);
        return;
      }
    } catch (...) {
    }
    lib_.CommAbort(comm_);
  }
  RawNccl(const RawNccl&) = delete;
  RawNccl& operator=(const RawNccl&) = delete;

  // `count` floats to and from every rank (this one included) in one group.
  void all_to_all(const Tensor& send, Tensor& recv, std::size_t count) {
    const auto* s = static_cast<const float*>(send.raw());
    auto* r = static_cast<float*>(recv.raw());
    const auto stream = static_cast<cudaStream_t>(backend_for(Device::cuda).compute_stream());
    nccl::check(lib_.GroupStart(), "ncclGroupStart", comm_, "the raw peer");
    for (int p = 0; p < size_; ++p) {
      nccl::check(lib_.Send(s + p * count, count, ncclFloat32, p, comm_, stream), "ncclSend", comm_, "the raw peer");
      nccl::check(lib_.Recv(r + p * count, count, ncclFloat32, p, comm_, stream), "ncclRecv", comm_, "the raw peer");
    }
    nccl::check(lib_.GroupEnd(), "ncclGroupEnd", comm_, "the raw peer");
  }

 private:
  const nccl::Library& lib_;
  ncclComm_t comm_ = nullptr;
  int size_ = 1;
};
#endif

}  // namespace

int main(int argc, char** argv) {
  std::int64_t min_bytes = 1 << 10, max_bytes = std::int64_t{64} << 20, row = 64;
  int max_iters = 200, min_iters = 10, warmup = 5;
  std::string backend = "mpi";
  bench::Args args("bench_alltoall", "All-to-all bandwidth: Communicator::all_to_all_v, the raw library call "
                                     "(MPI_Alltoallv or ncclSend/ncclRecv) and the autograd op (under an MPI "
                                     "launcher for several ranks).");
  args.add("backend", backend, "communicator: mpi (host tensors) or nccl (cuda tensors, one GPU per rank)")
      .add("min", min_bytes, "smallest message per rank, bytes")
      .add("max", max_bytes, "largest message per rank, bytes (sizes double from --min)")
      .add("row", row, "floats per row")
      .add("iters", max_iters, "most timed iterations per size")
      .add("min-iters", min_iters, "fewest timed iterations per size")
      .add("warmup", warmup, "untimed iterations per size");
  args.parse(argc, argv);
  if (backend != "mpi" && backend != "nccl") args.fail("--backend must be mpi or nccl, got '" + backend + "'");
  if (min_bytes < 1 || max_bytes < min_bytes || row < 1 || min_iters < 1 || max_iters < min_iters || warmup < 0)
    args.fail("want 1 <= --min <= --max, --row >= 1, 1 <= --min-iters <= --iters, --warmup >= 0");
  if (backend == "nccl" && !nccl_in_build()) args.fail("--backend nccl: " + nccl_absent_message());
  MpiSession session(argc, argv);
  try {
    const bool use_nccl = backend == "nccl";
    Device device = Device::cpu;
    if (use_nccl) {
      // One GPU per rank from the node-local rank, before the CUDA backend starts.
      bind_rank_to_gpu("cuda", "nccl");
      std::string why;
      if (!cuda_usable(&why)) {
        std::cerr << "bench_alltoall: --backend nccl needs a usable GPU: " << why << "\n";
        session.abort_job(1);
        return 1;
      }
      device = Device::cuda;
    }
    std::shared_ptr<Communicator> world = make_world_communicator(use_nccl ? CommBackend::nccl : CommBackend::mpi);
    const int n = world->size(), rank = world->rank();
#ifdef UPCYCLE_WITH_NCCL
    std::unique_ptr<RawNccl> raw_nccl = use_nccl ? std::make_unique<RawNccl>(rank, n) : nullptr;
#endif
    if (rank == 0) {
      std::printf("bench_alltoall: %d rank(s), backend %s on %s, f32 rows of %ld floats, equal counts, warm-up %d, "
                  "median of %d..%d iterations (max over ranks)\n",
                  n, backend.c_str(), device_name(device), static_cast<long>(row), warmup, min_iters, max_iters);
      std::printf("raw = %s\n", use_nccl ? "one group of ncclSend/ncclRecv to every rank (nccl-tests alltoall)"
                                         : session.active() ? "MPI_Alltoallv" : "- (MPI is not initialised)");
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
      const std::int64_t block = rows_per_peer * width;   // floats to each peer
      const int iters = static_cast<int>(
          std::clamp<std::int64_t>((std::int64_t{256} << 20) / std::max<std::int64_t>(bytes, 1), min_iters, max_iters));

      Tensor send = Tensor::full({total_rows, width}, 1.0 + rank, DType::f32, device);
      Tensor recv = Tensor::zeros({total_rows, width}, DType::f32, device);
      const std::vector<std::int64_t> counts(static_cast<std::size_t>(n), rows_per_peer);

      const double t_up = time_op(*world, device, [&] { world->all_to_all_v(send, counts, recv, counts); }, warmup, iters);
      check_received(recv, n, block, "Communicator::all_to_all_v");

      std::optional<double> t_raw;
      backend_for(device).fill(recv, 0.0);
#ifdef UPCYCLE_WITH_NCCL
      if (raw_nccl)
        t_raw = time_op(*world, device, [&] { raw_nccl->all_to_all(send, recv, static_cast<std::size_t>(block)); },
                        warmup, iters);
#endif
#ifdef UPCYCLE_WITH_MPI
      if (!use_nccl && session.active()) {
        std::vector<int> ec(n, static_cast<int>(block)), ed(n);
        for (int p = 0; p < n; ++p) ed[p] = p * ec[p];
        float* sb = static_cast<float*>(send.raw());
        float* rb = static_cast<float*>(recv.raw());
        t_raw = time_op(*world, device, [&] {
          MPI_Alltoallv(sb, ec.data(), ed.data(), MPI_FLOAT, rb, ec.data(), ed.data(), MPI_FLOAT, MPI_COMM_WORLD);
        }, warmup, iters);
      }
#endif
      if (t_raw) check_received(recv, n, block, "the raw peer");

      Var x(send, true);
      Tensor var_out;
      const double t_var = time_op(*world, device, [&] { var_out = all_to_all_v(*world, x, counts, counts).value(); },
                                   warmup, iters);
      check_received(var_out, n, block, "the all_to_all_v op");

      if (rank == 0) {
        const double gb = static_cast<double>(bytes) / 1e9, bus = n > 1 ? (n - 1.0) / n : 0.0;
        std::printf("%9s %10ld | %9.1f %8.2f %8.2f | ", human(bytes).c_str(), static_cast<long>(rows_per_peer),
                    t_up * 1e6, gb / t_up, gb / t_up * bus);
        if (t_raw) std::printf("%9.1f %8.2f %8.2f | ", *t_raw * 1e6, gb / *t_raw, gb / *t_raw * bus);
        else std::printf("%9s %8s %8s | ", "-", "-", "-");
        std::printf("%9.1f %8.2f %8.2f | ", t_var * 1e6, gb / t_var, gb / t_var * bus);
        if (t_raw) std::printf("%6.0f%% %6.0f%%\n", 100.0 * *t_raw / t_up, 100.0 * *t_raw / t_var);
        else std::printf("%7s %7s\n", "-", "-");
      }
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "bench_alltoall: " << e.what() << "\n";
    session.abort_job(1);
    return 1;
  }
}
