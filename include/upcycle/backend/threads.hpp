#pragma once
// CPU threads for the OpenMP loops and OpenBLAS. Several ranks on one node share its cores, so
// the default is the node's cores divided by the ranks the launcher put on this node.

namespace upcycle {

// requested > 0: exactly that many threads; 0: cores / local ranks (at least 1). Returns the count.
int configure_cpu_threads(int requested);

// Ranks on this node according to the launcher (Open MPI, Slurm, MPICH/Hydra); 1 without one.
int local_rank_count();

}  // namespace upcycle
