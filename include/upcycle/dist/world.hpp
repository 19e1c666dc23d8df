#pragma once
// How a process joins the world of ranks. A main program creates one MpiSession first thing and
// keeps it until the end of main; make_world_communicator() then gives the communicator of all
// ranks. Library code never initialises or finalises MPI itself.
#include <cstddef>
#include <memory>
#include <string>

#include "upcycle/dist/communicator.hpp"

namespace upcycle {

// Initialises MPI for the lifetime of the object when the process was started by an MPI launcher
// (mpirun, srun, hydra) and finalises it on destruction; a process started without a launcher
// runs as a single rank without touching MPI. Threading level MPI_THREAD_FUNNELED: only the main
// thread calls MPI (OpenMP threads never do). In a build without MPI, a process launched as one
// of several ranks throws, since every rank would silently do the whole job alone.
class MpiSession {
 public:
  MpiSession(int& argc, char**& argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  // Whether this session initialised MPI.
  bool active() const { return active_; }
  // For main programs after a failure on this rank: other ranks may be blocked in a collective
  // and would never reach MPI_Finalize, so the whole job is ended with `code`. Returns (doing
  // nothing) when MPI is not active, so the caller returns `code` from main itself.
  void abort_job(int code) const;

 private:
  bool active_ = false;
};

// The communicator of all ranks: MPI_COMM_WORLD while an MpiSession has MPI initialised, else a
// SelfCommunicator.
std::shared_ptr<Communicator> make_world_communicator();

// The implementations of parallel.backend (dist/comm_backend.hpp resolves auto).
enum class CommBackend { mpi, nccl };
const char* comm_backend_name(CommBackend backend);  // "mpi" | "nccl"

// The communicator of all ranks on `backend`: mpi = make_world_communicator(); nccl = an NCCL
// communicator of the same ranks (dist/nccl.hpp), its unique id broadcast over MPI from rank 0
// (a single process needs no MPI). Collective over the world.
std::shared_ptr<Communicator> make_world_communicator(CommBackend backend);

// Copies `bytes` bytes at `data` from world rank 0 to every rank: MPI_Bcast over MPI_COMM_WORLD,
// nothing for a single process. Collective over the world.
void broadcast_from_world_root(void* data, std::size_t bytes);

// This rank's place among the ranks of its node.
struct NodePlacement {
  int local_rank = 0;  // 0 .. local_size - 1, in world-rank order
  int local_size = 1;  // ranks on this node
};
// From MPI_Comm_split_type(MPI_COMM_TYPE_SHARED) of the world, so the same under any launcher
// (mpirun, srun, hydra) without reading its environment variables; {0, 1} for a single process.
// Collective over the world.
NodePlacement node_placement();
// The largest number of ranks of this node that pass the same `key` (up to 63 characters, e.g. a
// GPU's PCI bus id); the same on every rank of the node, 1 for a single process. Collective over
// the world.
int node_max_sharing(const std::string& key);

}  // namespace upcycle
