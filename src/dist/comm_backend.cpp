// parallel.backend and the GPU of each rank (dist/comm_backend.hpp), and the stand-ins of
// dist/nccl.hpp in a build without NCCL.
#include "upcycle/dist/comm_backend.hpp"

#include <cstdlib>

namespace upcycle {

const char* comm_backend_name(CommBackend backend) { return backend == CommBackend::nccl ? "nccl" : "mpi"; }

std::string nccl_absent_message() {
#if defined(UPCYCLE_WITH_NCCL)
  return "this build has no NCCL communicator";  // not said by this build, but by the rules for others
#elif defined(UPCYCLE_WITH_CUDA)
  return "this build has no NCCL communicator (CMake found no nccl.h and libnccl next to the CUDA toolkit: set "
         "NCCL_HOME, or it was configured with UPCYCLE_NCCL=OFF)";
#else
  return "this build has no NCCL communicator (it was configured without the CUDA backend)";
#endif
}

namespace {

[[noreturn]] void refuse_nccl_without_gpu(const std::string& device) {
  UPCYCLE_USAGE_ERROR("parallel.backend = nccl needs run.device = cuda: the NCCL communicator moves GPU memory, but ",
                      device, "; set parallel.backend = mpi (or auto), or train on a GPU");
}

[[noreturn]] void refuse_nccl_not_built() {
  UPCYCLE_USAGE_ERROR("parallel.backend = nccl: ", nccl_absent_message(), "; use parallel.backend = mpi or auto");
}

}  // namespace

CommBackendChoice resolve_comm_backend(const std::string& requested, const DeviceChoice& device,
                                       const NcclSupport& nccl) {
  if (requested == "mpi") return {CommBackend::mpi, ""};
  if (requested == "auto") {
    if (device.device != Device::cuda) return {CommBackend::mpi, "parallel.backend = auto: mpi (training on the CPU)"};
    if (!nccl.usable)
      return {CommBackend::mpi, "parallel.backend = auto: mpi, GPU tensors staged through the host (NCCL is not "
                                "usable: " + nccl.why + ")"};
    return {CommBackend::nccl, "parallel.backend = auto: nccl (training on the GPU)"};
  }
  if (requested == "nccl") {
    if (device.device != Device::cuda) refuse_nccl_without_gpu(device.reason.empty() ? "run.device = cpu" : device.reason);
    if (!nccl.built) refuse_nccl_not_built();
    // Built here but missing on this machine: a fault of the installation, not of the config.
    if (!nccl.usable) UPCYCLE_THROW("parallel.backend = nccl: NCCL cannot be used on this machine: ", nccl.why);
    return {CommBackend::nccl, ""};
  }
  UPCYCLE_USAGE_ERROR("parallel.backend must be auto, mpi or nccl, got '", requested, "'");
}

void check_comm_backend_request(const std::string& requested, const std::string& run_device, bool nccl_built) {
  if (requested != "nccl") return;
  if (run_device == "cpu") refuse_nccl_without_gpu("run.device = cpu");
  if (!nccl_built) refuse_nccl_not_built();
}

int gpu_for_local_rank(int local_rank, int gpu_count) {
  UPCYCLE_CHECK(gpu_count >= 1, "no GPU to place node-local rank ", local_rank, " on");
  UPCYCLE_CHECK(local_rank >= 0, "node-local rank ", local_rank, " is negative");
  return local_rank % gpu_count;
}

void check_ranks_per_gpu(int local_ranks, int gpu_count, int busiest, int max_ranks_per_gpu) {
  if (max_ranks_per_gpu <= 0 || busiest <= max_ranks_per_gpu) return;
  UPCYCLE_THROW(local_ranks, " ranks on this node but ", gpu_count, " visible GPU(s): ", busiest,
                " ranks would share one GPU, and the NCCL communicator takes ", max_ranks_per_gpu,
                " rank(s) per GPU (2 only with NCCL 2.30 or later and NCCL_MULTI_RANK_GPU_ENABLE=1); start at most ",
                max_ranks_per_gpu * gpu_count,
                " rank(s) per node, or set parallel.backend = mpi (ranks may share a GPU; collectives go through "
                "the host)");
}

int nccl_ranks_per_gpu(int nccl_version_code, const char* multi_rank_gpu_enable) {
  constexpr int kMultiRankVersion = 23000;  // NCCL_VERSION(2, 30, 0)
  const bool asked = multi_rank_gpu_enable != nullptr && std::string(multi_rank_gpu_enable) == "1";
  return asked && nccl_version_code >= kMultiRankVersion ? 2 : 1;
}

GpuBinding bind_rank_to_gpu(const std::string& run_device, const std::string& parallel_backend) {
  GpuBinding b;
  b.node = node_placement();
  if (run_device == "cpu") return b;  // the same on every rank (the config)
  b.gpu_count = cuda_device_count();
  std::string key;
  if (b.gpu_count > 0) {
    b.gpu = gpu_for_local_rank(b.node.local_rank, b.gpu_count);
    b.pci_bus_id = cuda_pci_bus_id(b.gpu);
    key = b.pci_bus_id;
  } else {
    key = "no GPU, local rank " + std::to_string(b.node.local_rank);  // counts once
  }
  // Every rank takes part, GPU or not, so that the collective matches up; the result is the same on
  // every rank of the node, so they all throw or none does.
  const int busiest = node_max_sharing(key);
  if (b.gpu < 0) return b;  // choose_device reports it (run.device = cuda) or trains on the CPU (auto)
  const bool nccl_rules = parallel_backend == "nccl" || (parallel_backend == "auto" && nccl_support().usable);
  if (nccl_rules) {
    const char* multi = std::getenv("NCCL_MULTI_RANK_GPU_ENABLE");
    // The library's version matters only when sharing is asked for (reading it loads the library).
    const bool asked = multi != nullptr && std::string(multi) == "1";
    check_ranks_per_gpu(b.node.local_size, b.gpu_count, busiest, nccl_ranks_per_gpu(asked ? nccl_version_code() : 0, multi));
  }
  use_cuda_device(b.gpu);
  return b;
}

#ifndef UPCYCLE_WITH_NCCL
bool nccl_in_build() { return false; }

NcclSupport nccl_support() {
  NcclSupport s;
  s.why = nccl_absent_message();
  return s;
}

int nccl_version_code() { UPCYCLE_THROW(nccl_absent_message()); }

std::string nccl_version_string() { UPCYCLE_THROW(nccl_absent_message()); }

std::shared_ptr<Communicator> make_nccl_communicator(int rank, int size, const BootstrapBroadcast&) {
  UPCYCLE_THROW("make_nccl_communicator (rank ", rank, " of ", size, "): ", nccl_absent_message());
}
#endif

}  // namespace upcycle
