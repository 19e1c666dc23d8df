#pragma once
// What the MPI launcher tells a process through its environment. Open MPI's mpirun sets
// OMPI_COMM_WORLD_*, MPICH's hydra and Slurm's PMI/PMI2 set PMI_*, PMIx launchers (srun
// --mpi=pmix, Open MPI 5) set PMIX_RANK. Deciding from the environment lets one binary run
// plainly as a single process, where initialising MPI would be slow or impossible.
#include <cstdlib>

namespace upcycle::detail {

inline bool started_by_mpi_launcher() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMI_SIZE") || std::getenv("PMIX_RANK");
}

// The number of ranks the launcher announced, or 1 where it announces none.
inline int announced_world_size() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {
    if (const char* value = std::getenv(name)) return std::atoi(value);
  }
  return 1;
}

}  // namespace upcycle::detail
