#pragma once
// How a process joins the world of ranks. A main program creates one MpiSession first thing and
// keeps it until the end of main; make_world_communicator() then gives the communicator of all
// ranks. Library code never initialises or finalises MPI itself.
#include <memory>

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

}  // namespace upcycle
