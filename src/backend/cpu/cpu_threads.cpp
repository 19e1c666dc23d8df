#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <thread>

#include "upcycle/backend/threads.hpp"

#ifdef UPCYCLE_WITH_OPENBLAS
extern "C" void openblas_set_num_threads(int);
#endif

namespace upcycle {

int local_rank_count() {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE", "MPI_LOCALNRANKS"}) {
    if (const char* v = std::getenv(var)) {
      const int n = std::atoi(v);
      if (n > 0) return n;
    }
  }
  return 1;
}

int configure_cpu_threads(int requested) {
  int n = requested;
  if (n <= 0) {
    // OMP_NUM_THREADS set by the user wins over the per-node division.
    if (const char* env = std::getenv("OMP_NUM_THREADS"); env && std::atoi(env) > 0) {
      n = std::atoi(env);
    } else {
      const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
      n = std::max(1, cores / local_rank_count());
    }
  }
  // The kernels' parallel loops (cpu_parallel.hpp) use omp_get_max_threads() threads. The GEMM
  // kernel splits products over them and calls OpenBLAS single-threaded: OpenBLAS's own pool
  // spinning next to the kernels' threads would oversubscribe the cores.
  omp_set_num_threads(n);
#ifdef UPCYCLE_WITH_OPENBLAS
  openblas_set_num_threads(1);
#endif
  return n;
}

}  // namespace upcycle
