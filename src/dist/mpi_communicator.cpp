// Communicator over an MPI_Comm for host tensors, the MPI lifetime (MpiSession), and what the
// world needs from MPI besides: node placement and the NCCL communicator's bootstrap broadcast.
// Every MPI call runs with MPI_ERRORS_RETURN and is checked: a failure throws upcycle::Error with
// MPI's own description instead of aborting the job.
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "launcher.hpp"
#include "upcycle/dist/nccl.hpp"
#include "upcycle/dist/world.hpp"

namespace upcycle {

namespace {

void check_mpi(int code, const char* call) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) length = 0;
  UPCYCLE_THROW(call, " failed: ", std::string(text, static_cast<std::size_t>(length)), " (MPI error code ",
                code, ")");
}

MPI_Datatype mpi_type(DType dtype) {
  switch (dtype) {
    case DType::f32: return MPI_FLOAT;
    case DType::f64: return MPI_DOUBLE;
    case DType::i32: return MPI_INT32_T;
    case DType::i64: return MPI_INT64_T;
    default: UPCYCLE_THROW("MPI has no type for ", dtype_name(dtype));
  }
}

MPI_Op mpi_op(CommReduce op) {
  switch (op) {
    case CommReduce::sum: return MPI_SUM;
    case CommReduce::max: return MPI_MAX;
    case CommReduce::min: return MPI_MIN;
  }
  UPCYCLE_THROW("unknown CommReduce ", static_cast<int>(op));
}

// MPI counts and displacements are C ints.
int to_mpi_int(std::int64_t n, const char* call, const char* what) {
  UPCYCLE_CHECK(n <= INT_MAX, call, ": ", what, " = ", n, " exceeds MPI's int count limit (", INT_MAX,
                "); communicate the tensor in smaller pieces");
  return static_cast<int>(n);
}

// MPI reads host memory; device tensors belong to the NCCL communicator.
void require_host(const Tensor& t, const char* op) {
  UPCYCLE_CHECK(t.device() == Device::cpu, op, ": the MPI communicator moves host tensors, got ", describe(t));
}

char* bytes_of(const Tensor& t) { return static_cast<char*>(t.raw()); }

// A committed derived datatype, freed on scope exit (also when a later call throws).
class ContiguousType {
 public:
  // `count` consecutive elements of `base`.
  ContiguousType(std::int64_t count, MPI_Datatype base, const char* call) {
    check_mpi(MPI_Type_contiguous(to_mpi_int(count, call, "elements per row"), base, &type_),
              "MPI_Type_contiguous");
    const int committed = MPI_Type_commit(&type_);
    if (committed != MPI_SUCCESS) MPI_Type_free(&type_);
    check_mpi(committed, "MPI_Type_commit");
  }
  ~ContiguousType() { MPI_Type_free(&type_); }
  ContiguousType(const ContiguousType&) = delete;
  ContiguousType& operator=(const ContiguousType&) = delete;
  MPI_Datatype get() const { return type_; }

 private:
  MPI_Datatype type_ = MPI_DATATYPE_NULL;
};

// Runs call(offset, count) over [0, n) in pieces of at most INT_MAX elements, so that
// elementwise collectives (reductions, broadcast) have no count limit. With n = 0 nothing is
// called on any rank, as every rank has the same n.
template <class F>
void in_int_pieces(std::int64_t n, F&& call) {
  for (std::int64_t offset = 0; offset < n; offset += INT_MAX) {
    call(offset, static_cast<int>(std::min<std::int64_t>(INT_MAX, n - offset)));
  }
}

// MPI_Iallreduce calls (one per piece of at most INT_MAX elements) in flight. Holds the tensor,
// whose memory MPI writes until the end, and the communicator, whose MPI_Comm they run on.
class MpiRequest final : public CommRequest {
 public:
  MpiRequest(Tensor buffer, std::shared_ptr<Communicator> comm) : buffer_(std::move(buffer)), comm_(std::move(comm)) {}

  // A request of a non-blocking collective cannot be freed or cancelled (MPI 3.1, 5.12), only
  // completed: wait, unless an exception unwinds (the peers may never start theirs) or MPI is gone.
  // An abandoned collective may still write its buffer, so that memory is never given back.
  ~MpiRequest() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (done_ || finalized) return;
    if (std::uncaught_exceptions() > 0) {
      new Tensor(std::move(buffer_));  // leaked on purpose
      return;
    }
    MPI_Waitall(static_cast<int>(requests_.size()), requests_.data(), MPI_STATUSES_IGNORE);
  }

  std::vector<MPI_Request>& requests() { return requests_; }

  bool test() override {
    if (done_) return true;
    int flag = 0;
    check_mpi(MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &flag, MPI_STATUSES_IGNORE),
              "MPI_Testall");
    done_ = flag != 0;
    return done_;
  }

  void wait() override {
    if (done_) return;
    done_ = true;  // MPI_Waitall completes (or fails) every request: never wait on them twice
    check_mpi(MPI_Waitall(static_cast<int>(requests_.size()), requests_.data(), MPI_STATUSES_IGNORE),
              "MPI_Waitall");
  }

 private:
  std::vector<MPI_Request> requests_;
  Tensor buffer_;
  std::shared_ptr<Communicator> comm_;
  bool done_ = false;
};

class MpiCommunicator final : public Communicator {
 public:
  // `owned`: the communicator was created by split and is freed with this object.
  MpiCommunicator(MPI_Comm comm, bool owned) : comm_(comm), owned_(owned) {
    check_mpi(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    check_mpi(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    check_mpi(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
  }

  ~MpiCommunicator() override {
    // A communicator that outlives MPI_Finalize (a global, say) has nothing left to free.
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owned_ && !finalized) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void barrier() override { check_mpi(MPI_Barrier(comm_), "MPI_Barrier"); }

 protected:
  bool moves(Device device) const override { return device == Device::cpu; }  // not CUDA-aware
  void do_all_reduce(Tensor& inout, CommReduce op) override {
    require_host(inout, "all_reduce");
    const MPI_Datatype type = mpi_type(inout.dtype());
    const std::size_t esize = dtype_size(inout.dtype());
    in_int_pieces(inout.numel(), [&](std::int64_t offset, int count) {
      check_mpi(MPI_Allreduce(MPI_IN_PLACE, bytes_of(inout) + offset * esize, count, type, mpi_op(op), comm_),
                "MPI_Allreduce");
    });
  }

  std::unique_ptr<CommRequest> do_all_reduce_async(Tensor& inout, CommReduce op) override {
    require_host(inout, "all_reduce_async");
    const MPI_Datatype type = mpi_type(inout.dtype());
    const std::size_t esize = dtype_size(inout.dtype());
    auto request = std::make_unique<MpiRequest>(inout, shared_from_this());
    in_int_pieces(inout.numel(), [&](std::int64_t offset, int count) {
      request->requests().push_back(MPI_REQUEST_NULL);
      check_mpi(MPI_Iallreduce(MPI_IN_PLACE, bytes_of(inout) + offset * esize, count, type, mpi_op(op), comm_,
                               &request->requests().back()),
                "MPI_Iallreduce");
    });
    return request;
  }

  void do_all_gather(const Tensor& in, Tensor& out) override {
    require_host(in, "all_gather");
    require_host(out, "all_gather");
    const MPI_Datatype type = mpi_type(in.dtype());
    const int count = to_mpi_int(in.numel(), "MPI_Allgather", "elements per rank");
    check_mpi(MPI_Allgather(in.raw(), count, type, out.raw(), count, type, comm_), "MPI_Allgather");
  }

  void do_reduce_scatter(const Tensor& in, Tensor& out, CommReduce op) override {
    require_host(in, "reduce_scatter");
    require_host(out, "reduce_scatter");
    const int count = to_mpi_int(out.numel(), "MPI_Reduce_scatter_block", "elements per rank");
    check_mpi(MPI_Reduce_scatter_block(in.raw(), out.raw(), count, mpi_type(in.dtype()), mpi_op(op), comm_),
              "MPI_Reduce_scatter_block");
  }

  // Counts and displacements are passed in rows (a derived type of one row), not elements, which
  // moves MPI's int limit from elements to rows: a [rows, 4096] f32 exchange may hold 2^31 - 1
  // rows per peer instead of 2^19.
  void do_all_to_all_v(const Tensor& send, const std::vector<std::int64_t>& send_counts, Tensor& recv,
                       const std::vector<std::int64_t>& recv_counts) override {
    require_host(send, "all_to_all_v");
    require_host(recv, "all_to_all_v");
    const char* call = "MPI_Alltoallv";
    const ContiguousType row(send.shape().prod(1, send.ndim()), mpi_type(send.dtype()), call);
    std::vector<int> sc(size_), sd(size_), rc(size_), rd(size_);
    std::int64_t send_offset = 0, recv_offset = 0;
    for (int p = 0; p < size_; ++p) {
      sc[p] = to_mpi_int(send_counts[p], call, "rows sent to one rank");
      rc[p] = to_mpi_int(recv_counts[p], call, "rows received from one rank");
      sd[p] = to_mpi_int(send_offset, call, "send displacement in rows");
      rd[p] = to_mpi_int(recv_offset, call, "receive displacement in rows");
      send_offset += send_counts[p];
      recv_offset += recv_counts[p];
    }
    check_mpi(MPI_Alltoallv(send.raw(), sc.data(), sd.data(), row.get(), recv.raw(), rc.data(), rd.data(),
                            row.get(), comm_),
              call);
  }

  std::vector<std::int64_t> do_exchange_counts(const std::vector<std::int64_t>& send_counts) override {
    std::vector<std::int64_t> recv_counts(send_counts.size());
    check_mpi(MPI_Alltoall(send_counts.data(), 1, MPI_INT64_T, recv_counts.data(), 1, MPI_INT64_T, comm_),
              "MPI_Alltoall");
    return recv_counts;
  }

  void do_broadcast(Tensor& t, int root) override {
    require_host(t, "broadcast");
    const MPI_Datatype type = mpi_type(t.dtype());
    const std::size_t esize = dtype_size(t.dtype());
    in_int_pieces(t.numel(), [&](std::int64_t offset, int count) {
      check_mpi(MPI_Bcast(bytes_of(t) + offset * esize, count, type, root, comm_), "MPI_Bcast");
    });
  }

  std::shared_ptr<Communicator> do_split(int color, int key) override {
    MPI_Comm sub = MPI_COMM_NULL;
    check_mpi(MPI_Comm_split(comm_, color, key, &sub), "MPI_Comm_split");
    try {
      return std::make_shared<MpiCommunicator>(sub, true);
    } catch (...) {
      MPI_Comm_free(&sub);  // the new object never took ownership
      throw;
    }
  }

 private:
  MPI_Comm comm_;
  bool owned_;
  int rank_ = 0, size_ = 1;
};

}  // namespace

MpiSession::MpiSession(int& argc, char**& argv) {
  if (detail::started_by_mpi_launcher()) {
    int initialized = 0;
    check_mpi(MPI_Initialized(&initialized), "MPI_Initialized");
    UPCYCLE_CHECK(!initialized, "MPI is already initialised: create one MpiSession per process");
    int provided = 0;
    check_mpi(MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
    if (provided < MPI_THREAD_FUNNELED) {
      MPI_Finalize();
      UPCYCLE_THROW("the MPI library provides thread level ", provided,
                    ", below MPI_THREAD_FUNNELED (OpenMP threads beside the MPI thread)");
    }
    active_ = true;
  }
  // srun without an MPI plugin starts N single-rank copies that would each train alone: every
  // one of them stops here instead (launcher.hpp says how the launchers are told apart).
  int world_size = 1;
  if (active_) check_mpi(MPI_Comm_size(MPI_COMM_WORLD, &world_size), "MPI_Comm_size");
  if (const auto problem = detail::slurm_launch_problem(detail::launch_environment(), world_size)) {
    if (active_) {
      // Every rank of this world sees the same step and size, so all of them finalise here.
      MPI_Finalize();
      active_ = false;
    }
    UPCYCLE_THROW(*problem);
  }
}

MpiSession::~MpiSession() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (active_ && !finalized) MPI_Finalize();
}

void MpiSession::abort_job(int code) const {
  int size = 1;
  if (active_) MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (active_ && size > 1) MPI_Abort(MPI_COMM_WORLD, code);
}

namespace {

// Whether MPI is initialised and not yet finalised (a process started without a launcher never
// initialises it: it is a world of one).
bool mpi_active() {
  int initialized = 0, finalized = 0;
  check_mpi(MPI_Initialized(&initialized), "MPI_Initialized");
  check_mpi(MPI_Finalized(&finalized), "MPI_Finalized");
  return initialized && !finalized;
}

// The ranks of this node (a shared-memory domain), ordered by world rank; freed on scope exit.
class NodeComm {
 public:
  NodeComm() {
    check_mpi(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    int world_rank = 0;
    check_mpi(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank), "MPI_Comm_rank");
    check_mpi(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world_rank, MPI_INFO_NULL, &comm_),
              "MPI_Comm_split_type");
    const int set = MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    if (set != MPI_SUCCESS) MPI_Comm_free(&comm_);
    check_mpi(set, "MPI_Comm_set_errhandler");
  }
  ~NodeComm() { MPI_Comm_free(&comm_); }
  NodeComm(const NodeComm&) = delete;
  NodeComm& operator=(const NodeComm&) = delete;
  MPI_Comm get() const { return comm_; }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
};

}  // namespace

std::shared_ptr<Communicator> make_world_communicator() {
  if (!mpi_active()) return std::make_shared<SelfCommunicator>();
  return std::make_shared<MpiCommunicator>(MPI_COMM_WORLD, false);
}

std::shared_ptr<Communicator> make_world_communicator(CommBackend backend) {
  if (backend == CommBackend::mpi) return make_world_communicator();
  int rank = 0, size = 1;
  if (mpi_active()) {
    check_mpi(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    check_mpi(MPI_Comm_rank(MPI_COMM_WORLD, &rank), "MPI_Comm_rank");
    check_mpi(MPI_Comm_size(MPI_COMM_WORLD, &size), "MPI_Comm_size");
  }
  return make_nccl_communicator(rank, size, &broadcast_from_world_root);
}

void broadcast_from_world_root(void* data, std::size_t bytes) {
  if (!mpi_active()) return;
  check_mpi(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  check_mpi(MPI_Bcast(data, to_mpi_int(static_cast<std::int64_t>(bytes), "MPI_Bcast", "bytes"), MPI_BYTE, 0,
                      MPI_COMM_WORLD),
            "MPI_Bcast");
}

NodePlacement node_placement() {
  if (!mpi_active()) return {};
  const NodeComm node;
  NodePlacement p;
  check_mpi(MPI_Comm_rank(node.get(), &p.local_rank), "MPI_Comm_rank");
  check_mpi(MPI_Comm_size(node.get(), &p.local_size), "MPI_Comm_size");
  return p;
}

int node_max_sharing(const std::string& key) {
  if (!mpi_active()) return 1;
  constexpr int kKeyBytes = 64;  // fixed-size records for one MPI_Allgather; the key is cut to 63
  const NodeComm node;
  int size = 1;
  check_mpi(MPI_Comm_size(node.get(), &size), "MPI_Comm_size");
  std::vector<char> mine(kKeyBytes, '\0'), all(static_cast<std::size_t>(size) * kKeyBytes, '\0');
  key.copy(mine.data(), kKeyBytes - 1);
  check_mpi(MPI_Allgather(mine.data(), kKeyBytes, MPI_CHAR, all.data(), kKeyBytes, MPI_CHAR, node.get()),
            "MPI_Allgather");
  int most = 0;
  for (int p = 0; p < size; ++p) {
    int same = 0;
    for (int q = 0; q < size; ++q)
      same += std::string(all.data() + p * kKeyBytes) == std::string(all.data() + q * kKeyBytes) ? 1 : 0;
    most = std::max(most, same);
  }
  return most;
}

}  // namespace upcycle
