#pragma once
// The NCCL communicator: collectives over cuda tensors, moved by NCCL between the GPUs of the
// ranks (one GPU per rank, dist/comm_backend.hpp), in order with the kernels on the CUDA backend's
// compute stream. Selected by parallel.backend = nccl (or auto on a GPU); docs/architecture.md,
// "Communicators".
//
//   * Streams. Every NCCL call is issued on the compute stream, so a collective runs after the
//     kernels that wrote its input and before those that read its output, without a host wait;
//     the caching allocator, which reuses freed blocks in compute-stream order, stays correct for
//     buffers a collective still reads. all_reduce_async alone runs on a communication stream of
//     the communicator's own, after an event of the compute stream; its request's wait() makes the
//     compute stream wait for the event recorded after it (no host wait).
//   * Host tensors (exchanged counts, routing statistics, checkpoint gathers, k-means sums) are
//     staged through device copies by the shared Communicator methods (staging_device() = cuda):
//     one communicator and one order of operations for everything, with no second transport to
//     keep in step. Such a collective makes the host wait for its result.
//   * The library is loaded at run time (dlopen of libnccl.so.2: UPCYCLE_NCCL_LIBRARY, else the
//     library path, else the one CMake found), so every program of a CUDA build starts on machines
//     without NCCL; only a communicator that uses it needs it there.
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "upcycle/dist/communicator.hpp"

namespace upcycle {

// Whether the NCCL communicator is compiled in (CMake found NCCL next to the CUDA toolkit).
bool nccl_in_build();
// "this build has no NCCL communicator (<why>)": the words of every refusal for want of NCCL in
// the build.
std::string nccl_absent_message();

// What this build and machine offer for parallel.backend = nccl (loads the library to find out).
struct NcclSupport {
  bool built = false;   // nccl_in_build()
  bool usable = false;  // and its library loads here and is new enough
  std::string why;      // when !usable: what is missing
};
NcclSupport nccl_support();

// NCCL's version code of the loaded library (NCCL_VERSION: 22809 for 2.28.9) and its text;
// throw an Error naming what is missing when the library cannot be used.
int nccl_version_code();
std::string nccl_version_string();

// Copies `bytes` bytes at `data` from rank 0 to every rank of the communicator being created
// (called once, by every rank): how NCCL's unique id reaches the ranks.
using BootstrapBroadcast = std::function<void(void* data, std::size_t bytes)>;

// The NCCL communicator of `size` ranks in which this process is `rank`, on the GPU the CUDA
// backend runs on (started here if it has not yet: choose the GPU first, use_cuda_device). Rank 0
// makes the unique id and `broadcast` hands it to the others; every rank then joins with
// ncclCommInitRank (collective: every rank of the new communicator calls this). Throws an Error
// naming NCCL's message and the rank on failure, and in a build without NCCL.
std::shared_ptr<Communicator> make_nccl_communicator(int rank, int size, const BootstrapBroadcast& broadcast);

}  // namespace upcycle
