// The argument checks every Communicator shares, the single-process communicator, and the
// process groups of the parallel layout.
#include "upcycle/dist/communicator.hpp"

#include <exception>

#include "upcycle/dist/world.hpp"

#ifndef UPCYCLE_WITH_MPI
#include "launcher.hpp"
#include "upcycle/dist/nccl.hpp"
#endif

namespace upcycle {

namespace {

void check_comm_tensor(const Tensor& t, const char* op, const char* arg) {
  UPCYCLE_CHECK(t.defined(), op, ": `", arg, "` is an undefined tensor");
  const DType d = t.dtype();
  UPCYCLE_CHECK(d == DType::f32 || d == DType::f64 || d == DType::i32 || d == DType::i64, op,
                ": `", arg, "` is ", describe(t), "; communicators move f32, f64, i32 and i64");
}

// Output and input must be distinct buffers: the implementations do not handle in-place aliasing.
void check_pair(const Tensor& in, const Tensor& out, const char* op) {
  check_comm_tensor(in, op, "in");
  check_comm_tensor(out, op, "out");
  UPCYCLE_CHECK(in.dtype() == out.dtype(), op, ": dtypes differ: ", describe(in), " -> ", describe(out));
  UPCYCLE_CHECK(!in.same_storage(out), op, ": input and output share storage");
}

// One count per rank, none negative; returns their sum.
std::int64_t checked_total(const std::vector<std::int64_t>& counts, int size, const char* op,
                           const char* arg) {
  UPCYCLE_CHECK(static_cast<int>(counts.size()) == size, op, ": `", arg, "` has ", counts.size(),
                " entries, expected one per rank (", size, ")");
  std::int64_t total = 0;
  for (std::size_t p = 0; p < counts.size(); ++p) {
    UPCYCLE_CHECK(counts[p] >= 0, op, ": `", arg, "`[", p, "] = ", counts[p], " is negative");
    total += counts[p];
  }
  return total;
}

// A collective that ran to completion before its request was made.
class FinishedRequest final : public CommRequest {
 public:
  bool test() override { return true; }
  void wait() override {}
};

// A collective on a staged copy: the result is copied back into the caller's tensor on wait().
class StagedRequest final : public CommRequest {
 public:
  StagedRequest(std::unique_ptr<CommRequest> inner, Tensor copy, Tensor target)
      : inner_(std::move(inner)), copy_(std::move(copy)), target_(std::move(target)) {}
  // As the contract says: a request dropped without wait() still delivers its result (an error
  // then has nowhere to go: wait() is where errors are reported).
  ~StagedRequest() override {
    if (std::uncaught_exceptions() > 0) return;  // the inner request abandons the collective
    try {
      wait();
    } catch (...) {
    }
  }
  bool test() override { return inner_->test(); }
  void wait() override {
    if (!inner_) return;
    inner_->wait();
    target_.copy_from(copy_);
    inner_.reset();
  }

 private:
  std::unique_ptr<CommRequest> inner_;  // null once waited for
  Tensor copy_, target_;
};

bool same_trailing_shape(const Shape& a, const Shape& b) {
  if (a.ndim() != b.ndim()) return false;
  for (int i = 1; i < a.ndim(); ++i)
    if (a[i] != b[i]) return false;
  return true;
}

}  // namespace

Shape gathered_shape(const Shape& in, int parts) {
  UPCYCLE_CHECK(parts >= 1, "gathered_shape: ", parts, " parts");
  if (in.ndim() == 0) return Shape{parts};
  Shape out = in;
  out[0] = in[0] * parts;
  return out;
}

Shape scattered_shape(const Shape& in, int parts) {
  UPCYCLE_CHECK(parts >= 1, "scattered_shape: ", parts, " parts");
  UPCYCLE_CHECK(in.ndim() >= 1 && in[0] % parts == 0, "reduce_scatter: input ", in.str(),
                " must have a leading dimension divisible by the number of ranks (", parts, ")");
  Shape out = in;
  out[0] = in[0] / parts;
  return out;
}

// A copy of `t` on the implementation's staging device, or `t` itself when it is moved as it is.
Tensor Communicator::staged(const Tensor& t) const {
  if (moves(t.device())) return t;
  const Device to = staging_device();
  UPCYCLE_CHECK(moves(to), "a communicator stages tensors on ", device_name(to), ", which it does not move");
  return t.to(to);
}

// The buffer the implementation writes for `out`: `out` itself when it is moved as it is, else a
// new tensor on the staging device that the caller copies into `out`.
Tensor Communicator::staged_output(const Tensor& out) const {
  if (moves(out.device())) return out;
  return Tensor::empty(out.shape(), out.dtype(), staging_device());
}

void Communicator::all_reduce(Tensor& inout, CommReduce op) {
  check_comm_tensor(inout, "all_reduce", "inout");
  if (moves(inout.device())) return do_all_reduce(inout, op);
  Tensor copy = staged(inout);
  do_all_reduce(copy, op);
  inout.copy_from(copy);
}

std::unique_ptr<CommRequest> Communicator::all_reduce_async(Tensor& inout, CommReduce op) {
  check_comm_tensor(inout, "all_reduce_async", "inout");
  if (moves(inout.device())) return do_all_reduce_async(inout, op);
  Tensor copy = staged(inout);
  return std::make_unique<StagedRequest>(do_all_reduce_async(copy, op), copy, inout);
}

std::unique_ptr<CommRequest> Communicator::do_all_reduce_async(Tensor& inout, CommReduce op) {
  do_all_reduce(inout, op);
  return std::make_unique<FinishedRequest>();
}

void Communicator::all_gather(const Tensor& in, Tensor& out) {
  check_pair(in, out, "all_gather");
  check_shape(out, gathered_shape(in.shape(), size()), "all_gather output");
  Tensor result = staged_output(out);
  do_all_gather(staged(in), result);
  if (!result.same_storage(out)) out.copy_from(result);
}

void Communicator::reduce_scatter(const Tensor& in, Tensor& out, CommReduce op) {
  check_pair(in, out, "reduce_scatter");
  check_shape(out, scattered_shape(in.shape(), size()), "reduce_scatter output");
  Tensor result = staged_output(out);
  do_reduce_scatter(staged(in), result, op);
  if (!result.same_storage(out)) out.copy_from(result);
}

void Communicator::all_to_all_v(const Tensor& send, const std::vector<std::int64_t>& send_counts,
                                Tensor& recv, const std::vector<std::int64_t>& recv_counts) {
  check_pair(send, recv, "all_to_all_v");
  UPCYCLE_CHECK(send.ndim() >= 1 && same_trailing_shape(send.shape(), recv.shape()),
                "all_to_all_v: send ", describe(send), " and recv ", describe(recv),
                " must be [rows, ...] with the same trailing shape");
  const std::int64_t sent = checked_total(send_counts, size(), "all_to_all_v", "send_counts");
  const std::int64_t received = checked_total(recv_counts, size(), "all_to_all_v", "recv_counts");
  UPCYCLE_CHECK(sent == send.dim(0), "all_to_all_v: send_counts add up to ", sent, " rows, send has ",
                send.dim(0));
  UPCYCLE_CHECK(received == recv.dim(0), "all_to_all_v: recv_counts add up to ", received,
                " rows, recv has ", recv.dim(0));
  Tensor result = staged_output(recv);
  do_all_to_all_v(staged(send), send_counts, result, recv_counts);
  if (!result.same_storage(recv)) recv.copy_from(result);
}

std::vector<std::int64_t> Communicator::exchange_counts(const std::vector<std::int64_t>& send_counts) {
  checked_total(send_counts, size(), "exchange_counts", "send_counts");
  return do_exchange_counts(send_counts);
}

void Communicator::broadcast(Tensor& t, int root) {
  check_comm_tensor(t, "broadcast", "t");
  UPCYCLE_CHECK(root >= 0 && root < size(), "broadcast: root ", root, " is not a rank of a communicator of size ",
                size());
  if (moves(t.device())) return do_broadcast(t, root);
  Tensor copy = staged(t);
  do_broadcast(copy, root);
  t.copy_from(copy);
}

std::shared_ptr<Communicator> Communicator::split(int color, int key) {
  UPCYCLE_CHECK(color >= 0, "split: color ", color, " must be >= 0");
  return do_split(color, key);
}

// --- SelfCommunicator: with one rank, every reduction of a tensor is the tensor itself ---

void SelfCommunicator::do_all_reduce(Tensor&, CommReduce) {}

void SelfCommunicator::do_all_gather(const Tensor& in, Tensor& out) { out.copy_from(in); }

void SelfCommunicator::do_reduce_scatter(const Tensor& in, Tensor& out, CommReduce) { out.copy_from(in); }

void SelfCommunicator::do_all_to_all_v(const Tensor& send, const std::vector<std::int64_t>&, Tensor& recv,
                                       const std::vector<std::int64_t>&) {
  recv.copy_from(send);
}

std::vector<std::int64_t> SelfCommunicator::do_exchange_counts(const std::vector<std::int64_t>& send_counts) {
  return send_counts;
}

void SelfCommunicator::do_broadcast(Tensor&, int) {}

std::shared_ptr<Communicator> SelfCommunicator::do_split(int, int) {
  return std::make_shared<SelfCommunicator>();
}

// --- process groups ---

namespace {
void check_layout(int world_size, int ep_size, int rank) {
  if (ep_size < 1 || world_size % ep_size != 0)
    UPCYCLE_USAGE_ERROR("the expert-parallel size (", ep_size, ") must be a positive divisor of the number of ranks (",
                        world_size, ")");
  UPCYCLE_CHECK(rank >= 0 && rank < world_size, "rank ", rank, " is outside a world of ", world_size,
                " ranks");
}
}  // namespace

std::vector<int> expert_parallel_ranks(int world_size, int ep_size, int rank) {
  check_layout(world_size, ep_size, rank);
  std::vector<int> ranks;
  for (int q = rank - rank % ep_size; q < rank - rank % ep_size + ep_size; ++q) ranks.push_back(q);
  return ranks;
}

std::vector<int> expert_data_parallel_ranks(int world_size, int ep_size, int rank) {
  check_layout(world_size, ep_size, rank);
  std::vector<int> ranks;
  for (int q = rank % ep_size; q < world_size; q += ep_size) ranks.push_back(q);
  return ranks;
}

ProcessGroups make_process_groups(std::shared_ptr<Communicator> world, int ep_size) {
  UPCYCLE_CHECK(world != nullptr, "make_process_groups: no world communicator");
  const int r = world->rank();
  check_layout(world->size(), ep_size, r);  // every rank throws alike, before any communication
  ProcessGroups groups;
  // Colors name the group, keys order ranks inside it so that EP rank = r mod P, DP rank = r / P.
  groups.expert_parallel = world->split(r / ep_size, r % ep_size);
  groups.expert_data_parallel = world->split(r % ep_size, r / ep_size);
  groups.world = std::move(world);
  return groups;
}

// --- a build without MPI: every process is a world of its own ---
#ifndef UPCYCLE_WITH_MPI
MpiSession::MpiSession(int&, char**&) {
  const int announced = detail::announced_world_size();
  UPCYCLE_CHECK(announced <= 1, "this build has no MPI (UPCYCLE_WITH_MPI=OFF) but was launched as one of ",
                announced, " ranks; rebuild with -DUPCYCLE_WITH_MPI=ON or run a single process");
  // srun with a PMIx plugin announces no world size, and srun without one announces nothing.
  const std::optional<int> tasks = detail::srun_step_tasks(detail::launch_environment());
  if (tasks && *tasks != 1)
    UPCYCLE_THROW("this build has no MPI (UPCYCLE_WITH_MPI=OFF) but srun started ", *tasks,
                  " tasks of it, each of which would train alone; rebuild with -DUPCYCLE_WITH_MPI=ON or start one task");
}

MpiSession::~MpiSession() = default;
void MpiSession::abort_job(int) const {}

std::shared_ptr<Communicator> make_world_communicator() { return std::make_shared<SelfCommunicator>(); }

std::shared_ptr<Communicator> make_world_communicator(CommBackend backend) {
  if (backend == CommBackend::mpi) return make_world_communicator();
  return make_nccl_communicator(0, 1, &broadcast_from_world_root);
}

void broadcast_from_world_root(void*, std::size_t) {}
NodePlacement node_placement() { return {}; }
int node_max_sharing(const std::string&) { return 1; }
#endif

}  // namespace upcycle
