#pragma once
// Which communicator a run uses (parallel.backend = auto | mpi | nccl) and which GPU each rank
// drives. upcycle_train resolves both before any stage runs:
//   1. check_comm_backend_request: what the config alone rules out (usage errors, exit 2);
//   2. bind_rank_to_gpu: the GPU of this rank, before the CUDA backend starts;
//   3. choose_device (run.device), then resolve_comm_backend for the device it gave.
#include <string>

#include "upcycle/backend/devices.hpp"
#include "upcycle/dist/nccl.hpp"
#include "upcycle/dist/world.hpp"

namespace upcycle {

struct CommBackendChoice {
  CommBackend backend = CommBackend::mpi;
  std::string reason;  // for auto: one line on why (for the log); empty otherwise
};

// parallel.backend for the device the run trains on:
//   mpi   always mpi (cuda tensors are staged through the host);
//   auto  nccl when the device is cuda and NCCL is usable here, else mpi (the reason says why);
//   nccl  a UsageError when the device is cpu (device.reason, e.g. why run.device = auto found no
//         GPU, is quoted) or the build has no NCCL; an Error (exit 1) when the build has NCCL but
//         this machine cannot load it.
// Anything else is a UsageError.
CommBackendChoice resolve_comm_backend(const std::string& requested, const DeviceChoice& device,
                                       const NcclSupport& nccl);

// What the config alone rules out, checked before anything starts: parallel.backend = nccl with
// run.device = cpu, or in a build without NCCL (`nccl_built`; UsageError, the same words as above).
void check_comm_backend_request(const std::string& requested, const std::string& run_device, bool nccl_built);

// --- one GPU per rank ---

// The GPU of node-local rank `local_rank` when the runtime sees `gpu_count` GPUs: local_rank mod
// gpu_count (each rank its own GPU when there are enough). Throws when gpu_count < 1.
int gpu_for_local_rank(int local_rank, int gpu_count);
// Throws an Error naming both numbers when `busiest` (the most ranks of the node on one physical
// GPU) exceeds `max_ranks_per_gpu` (0 = no limit): `local_ranks` ranks on the node and
// `gpu_count` GPUs visible to this rank.
void check_ranks_per_gpu(int local_ranks, int gpu_count, int busiest, int max_ranks_per_gpu);
// How many ranks of one NCCL communicator may share a GPU: 1, or 2 when
// NCCL_MULTI_RANK_GPU_ENABLE=1 (`multi_rank_gpu_enable`, null when unset) and the NCCL library is
// 2.30 or later (`nccl_version_code`, NCCL_VERSION encoding); earlier versions refuse a second rank
// on a GPU ("Duplicate GPU detected").
int nccl_ranks_per_gpu(int nccl_version_code, const char* multi_rank_gpu_enable);

struct GpuBinding {
  NodePlacement node;
  int gpu_count = 0;       // GPUs this rank's CUDA runtime sees
  int gpu = -1;            // the GPU this rank drives; -1 = none (run.device = cpu, or no GPU)
  std::string pci_bus_id;  // of that GPU
};

// Picks this rank's GPU from its node-local rank (node_placement: an MPI_Comm_split_type of the
// world, not launcher variables, so the same under mpirun and srun) and makes it the CUDA
// backend's (use_cuda_device), unless run.device = cpu or no GPU is visible (choose_device then
// decides). With more ranks on one physical GPU than the communicator allows (nccl: see
// nccl_ranks_per_gpu, also for auto when NCCL is usable; mpi: no limit, ranks share GPUs round
// robin) it throws on every rank of the node, naming the numbers. Ranks that each see one GPU of
// their own (srun --gpus-per-task=1) all take index 0: sharing is measured by PCI bus id, not
// assumed from the counts. Collective over the world.
GpuBinding bind_rank_to_gpu(const std::string& run_device, const std::string& parallel_backend);

}  // namespace upcycle
