#pragma once
// Collective communication between ranks. One interface, implemented by SelfCommunicator (one
// process, no MPI), MpiCommunicator (host tensors over an MPI_Comm) and NcclCommunicator (cuda
// tensors on one GPU per rank, dist/nccl.hpp).
//
// Every method except rank() and size() is collective: all ranks of the communicator call it in
// the same order with matching arguments, or the program hangs. The public methods check their arguments (dtype,
// shapes, counts) the same way for every implementation and then call the protected do_* hooks,
// so an implementation only moves bytes. Supported dtypes: f32, f64, i32, i64.
//
// Communicators are always owned by a std::shared_ptr (make_world_communicator, split and
// make_process_groups return one; create a SelfCommunicator with make_shared): ops that
// communicate again in backward, such as all_to_all_v, keep their communicator alive through
// shared_from_this().
//
// all_reduce_async starts an all-reduce and returns at once; the caller keeps working (a backward
// pass) and calls wait() before it reads the result. It is collective like the rest: every rank
// starts the same asynchronous collectives in the same order, interleaved the same way with the
// communicator's other collectives.
#include <cstdint>
#include <memory>
#include <vector>

#include "upcycle/core/tensor.hpp"

namespace upcycle {

// Reductions a communicator applies across ranks (elementwise).
enum class CommReduce { sum, max, min };

// A collective in flight (Communicator::all_reduce_async). Until wait() the tensor belongs to the
// collective: nothing may read or write it. Destroying a request that was not waited for waits for
// it, except while an exception unwinds: then a host collective is abandoned (its peers may never
// start theirs, and the job is about to be aborted anyway); a GPU one still orders the compute
// stream after itself, which makes no host wait.
class CommRequest {
 public:
  CommRequest() = default;
  CommRequest(const CommRequest&) = delete;
  CommRequest& operator=(const CommRequest&) = delete;
  virtual ~CommRequest() = default;
  // Whether the collective has finished; never blocks. An MPI implementation advances its
  // collectives only inside MPI calls (Open MPI has no progress thread by default), so calling
  // this now and then during other work is what lets a host collective run behind it.
  virtual bool test() = 0;
  // Makes the result available to what comes next on the tensor's device: the host waits for a
  // host collective; for a collective on a GPU's communication stream the compute stream waits (an
  // event), not the host. Calling it again does nothing.
  virtual void wait() = 0;
};

class Communicator : public std::enable_shared_from_this<Communicator> {
 public:
  Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;

  // inout = op over ranks of inout (in place; same shape on every rank).
  void all_reduce(Tensor& inout, CommReduce op = CommReduce::sum);
  // The same all-reduce, started without waiting for it (see CommRequest). The request keeps
  // `inout`'s storage alive; the result is in `inout` once wait() returns.
  std::unique_ptr<CommRequest> all_reduce_async(Tensor& inout, CommReduce op = CommReduce::sum);
  // out = the `in` of every rank, concatenated along dim 0 in rank order; out's shape is
  // gathered_shape(in.shape(), size()).
  void all_gather(const Tensor& in, Tensor& out);
  // in = size() blocks along dim 0; out = op over ranks of block rank() (reduce, then scatter);
  // out's shape is scattered_shape(in.shape(), size()).
  void reduce_scatter(const Tensor& in, Tensor& out, CommReduce op = CommReduce::sum);
  // Irregular all-to-all of rows (a row is one index of dim 0, i.e. the trailing shape):
  // send is [sum(send_counts), ...]; its first send_counts[0] rows go to rank 0, the next
  // send_counts[1] rows to rank 1, and so on. recv is [sum(recv_counts), ...] with the same
  // trailing shape and receives recv_counts[p] rows from rank p, in rank order. recv_counts[p]
  // must equal rank p's send_counts[rank()] (exchange_counts computes it). Zero counts are fine.
  void all_to_all_v(const Tensor& send, const std::vector<std::int64_t>& send_counts, Tensor& recv,
                    const std::vector<std::int64_t>& recv_counts);
  // The counts exchange that precedes all_to_all_v: returns r with r[p] = rank p's
  // send_counts[rank()] (one int64 to and from every peer).
  std::vector<std::int64_t> exchange_counts(const std::vector<std::int64_t>& send_counts);
  // t = root's t on every rank (same shape everywhere).
  void broadcast(Tensor& t, int root);
  virtual void barrier() = 0;
  // Sub-communicator of the ranks that pass the same color (>= 0), ranked by key (ties: by rank
  // in this communicator). Collective over this communicator.
  std::shared_ptr<Communicator> split(int color, int key);

 protected:
  // Whether the implementation reads and writes memory of `device` itself. When it does not, the
  // public methods stage the tensors through copies on staging_device(): MPI here is not
  // CUDA-aware, so it gets host copies of cuda tensors; NCCL moves GPU memory only, so it gets
  // device copies of host tensors (counts, statistics, checkpoint gathers). A staged collective
  // makes the host wait for its result, as a host collective does anyway.
  virtual bool moves(Device device) const = 0;
  // Where tensors of a device the implementation does not move are staged (moves() is true for it).
  virtual Device staging_device() const { return Device::cpu; }
  // Arguments are checked; tensors are defined, contiguous, of a supported dtype, on a device the
  // implementation moves(), and do not share storage with each other.
  virtual void do_all_reduce(Tensor& inout, CommReduce op) = 0;
  // Where overlap means nothing (one process, test fakes) the default runs the blocking
  // do_all_reduce and returns a finished request; MPI and NCCL start a non-blocking collective.
  virtual std::unique_ptr<CommRequest> do_all_reduce_async(Tensor& inout, CommReduce op);
  virtual void do_all_gather(const Tensor& in, Tensor& out) = 0;
  virtual void do_reduce_scatter(const Tensor& in, Tensor& out, CommReduce op) = 0;
  virtual void do_all_to_all_v(const Tensor& send, const std::vector<std::int64_t>& send_counts,
                               Tensor& recv, const std::vector<std::int64_t>& recv_counts) = 0;
  virtual std::vector<std::int64_t> do_exchange_counts(const std::vector<std::int64_t>& send_counts) = 0;
  virtual void do_broadcast(Tensor& t, int root) = 0;
  virtual std::shared_ptr<Communicator> do_split(int color, int key) = 0;

 private:
  Tensor staged(const Tensor& t) const;
  Tensor staged_output(const Tensor& out) const;
};

// Shape of all_gather's output: `parts` copies of `in` along dim 0 (a scalar gathers to [parts]).
Shape gathered_shape(const Shape& in, int parts);
// Shape of reduce_scatter's output: dim 0 of `in` divided by `parts` (which must divide it).
Shape scattered_shape(const Shape& in, int parts);

// The communicator of a single process: every collective is a copy or a no-op.
class SelfCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void barrier() override {}

 protected:
  bool moves(Device) const override { return true; }  // copies within one device, if any
  void do_all_reduce(Tensor& inout, CommReduce op) override;
  void do_all_gather(const Tensor& in, Tensor& out) override;
  void do_reduce_scatter(const Tensor& in, Tensor& out, CommReduce op) override;
  void do_all_to_all_v(const Tensor& send, const std::vector<std::int64_t>& send_counts, Tensor& recv,
                       const std::vector<std::int64_t>& recv_counts) override;
  std::vector<std::int64_t> do_exchange_counts(const std::vector<std::int64_t>& send_counts) override;
  void do_broadcast(Tensor& t, int root) override;
  std::shared_ptr<Communicator> do_split(int color, int key) override;
};

// --- process groups of the parallel layout (docs/architecture.md, "Distribution") ---
// W = world size, P = expert-parallel size. A P that does not divide W throws UsageError (P comes
// from the config, W from the launcher).

// Ranks of the expert-parallel group of `rank`: r - r mod P, ..., r - r mod P + P - 1.
std::vector<int> expert_parallel_ranks(int world_size, int ep_size, int rank);
// Ranks of the expert-data-parallel group of `rank`: every q with q mod P == r mod P, ascending.
std::vector<int> expert_data_parallel_ranks(int world_size, int ep_size, int rank);

struct ProcessGroups {
  std::shared_ptr<Communicator> world;
  // Rank within it is r mod P, the index of this rank's expert shard.
  std::shared_ptr<Communicator> expert_parallel;
  // Rank within it is r / P; expert gradients are reduced over it.
  std::shared_ptr<Communicator> expert_data_parallel;
};

// Splits `world` into the groups above (collective over world).
ProcessGroups make_process_groups(std::shared_ptr<Communicator> world, int ep_size);

}  // namespace upcycle
