// The NCCL communicator (dist/nccl.hpp): cuda tensors moved by NCCL on the CUDA backend's compute
// stream, and asynchronous all-reduces on a communication stream of its own. Compiled only when
// CMake found NCCL (UPCYCLE_WITH_NCCL); comm_backend.cpp stands in otherwise.
#include <climits>
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "nccl_library.hpp"
#include "upcycle/backend/backend.hpp"
#include "upcycle/dist/nccl.hpp"

namespace upcycle {

namespace {

ncclDataType_t nccl_type(DType dtype) {
  switch (dtype) {
    case DType::f32: return ncclFloat32;
    case DType::f64: return ncclFloat64;
    case DType::i32: return ncclInt32;
    case DType::i64: return ncclInt64;
    default: UPCYCLE_THROW("NCCL has no type for ", dtype_name(dtype));
  }
}

ncclRedOp_t nccl_op(CommReduce op) {
  switch (op) {
    case CommReduce::sum: return ncclSum;
    case CommReduce::max: return ncclMax;
    case CommReduce::min: return ncclMin;
  }
  UPCYCLE_THROW("unknown CommReduce ", static_cast<int>(op));
}

Backend& cuda() { return backend_for(Device::cuda); }

// Every NCCL call goes on the compute stream: ordered after the kernels that wrote its input and
// before those that read its output, with no host wait, and in the order the caching allocator
// reuses memory in.
cudaStream_t compute_stream() { return static_cast<cudaStream_t>(cuda().compute_stream()); }

std::size_t elements(const Tensor& t) { return static_cast<std::size_t>(t.numel()); }

std::string rank_text(int rank, int size) { return "rank " + std::to_string(rank) + " of " + std::to_string(size); }

// An all-reduce on the communication stream: `done` is recorded after it there. wait() makes the
// compute stream wait for that event, so kernels issued afterwards (the optimiser, the scaling of a
// gradient bucket) see the result, and the caching allocator, which reuses freed memory in
// compute-stream order, cannot hand the tensor out before the collective has finished with it.
class NcclRequest final : public CommRequest {
 public:
  NcclRequest(Tensor buffer, std::shared_ptr<Communicator> comm, EventHandle done)
      : buffer_(std::move(buffer)), comm_(std::move(comm)), done_(done) {}

  // Never makes the host wait: an unwaited request orders the compute stream after the collective
  // (also while an exception unwinds: a wait of the stream is no host wait).
  ~NcclRequest() override {
    try {
      wait();
      cuda().destroy_event(done_);  // released by CUDA once the event has completed
    } catch (...) {  // the device failed: nothing left to order
    }
  }

  bool test() override { return cuda().event_done(done_); }

  void wait() override {
    if (waited_) return;
    waited_ = true;
    cuda().wait_event(nullptr, done_);
  }

 private:
  Tensor buffer_;
  std::shared_ptr<Communicator> comm_;
  EventHandle done_;
  bool waited_ = false;
};

class NcclCommunicator final : public Communicator {
 public:
  // Takes ownership of `comm` once constructed (the caller destroys it if this throws).
  explicit NcclCommunicator(ncclComm_t comm) : lib_(nccl::library()), comm_(comm) {
    nccl::check(lib_.CommUserRank(comm_, &rank_), "ncclCommUserRank", comm_, "");
    nccl::check(lib_.CommCount(comm_, &size_), "ncclCommCount", comm_, "");
  }

  ~NcclCommunicator() override {
    // While a failure unwinds, other ranks may never reach their matching calls: abort (local, no
    // waiting). Otherwise the queued collectives finish before the communicator goes.
    if (std::uncaught_exceptions() > 0) {
      lib_.CommAbort(comm_);
      return;
    }
    try {
      // Every request holds this communicator, so none is still in flight on the communication
      // stream unless it was abandoned; the compute stream waited for the others.
      cuda().synchronize();
      if (comm_stream_ != nullptr) {
        cuda().destroy_event(comm_ready_);
        cuda().destroy_stream(comm_stream_);  // cudaStreamDestroy lets queued work finish first
      }
    } catch (...) {  // the device failed: nothing left to flush
      lib_.CommAbort(comm_);
      return;
    }
    lib_.CommDestroy(comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  // A one-element all-reduce completes on a rank only once every rank has issued it, so the host
  // waiting for it is the barrier.
  void barrier() override {
    Tensor token = Tensor::zeros({1}, DType::i32, Device::cuda);
    do_all_reduce(token, CommReduce::sum);
    cuda().synchronize();
  }

 protected:
  bool moves(Device device) const override { return device == Device::cuda; }
  Device staging_device() const override { return Device::cuda; }

  // Empty tensors: every rank has the same element count for these four, so all skip alike.
  void do_all_reduce(Tensor& inout, CommReduce op) override {
    if (inout.numel() == 0) return;
    check(lib_.AllReduce(inout.raw(), inout.raw(), elements(inout), nccl_type(inout.dtype()), nccl_op(op), comm_,
                         compute_stream()),
          "ncclAllReduce");
  }

  // The communication stream first waits for everything issued so far to the compute stream
  // (the kernels that wrote `inout`), then runs the all-reduce while the compute stream goes on.
  std::unique_ptr<CommRequest> do_all_reduce_async(Tensor& inout, CommReduce op) override {
    if (inout.numel() == 0) return Communicator::do_all_reduce_async(inout, op);
    Backend& be = cuda();
    if (comm_stream_ == nullptr) {
      comm_stream_ = be.create_stream();
      comm_ready_ = be.create_event();
    }
    be.record_event(comm_ready_, nullptr);
    be.wait_event(comm_stream_, comm_ready_);
    check(lib_.AllReduce(inout.raw(), inout.raw(), elements(inout), nccl_type(inout.dtype()), nccl_op(op), comm_,
                         static_cast<cudaStream_t>(comm_stream_)),
          "ncclAllReduce");
    EventHandle done = be.create_event();
    auto request = std::make_unique<NcclRequest>(inout, shared_from_this(), done);  // owns `done` from here
    be.record_event(done, comm_stream_);
    return request;
  }

  void do_all_gather(const Tensor& in, Tensor& out) override {
    if (in.numel() == 0) return;
    check(lib_.AllGather(in.raw(), out.raw(), elements(in), nccl_type(in.dtype()), comm_, compute_stream()),
          "ncclAllGather");
  }

  void do_reduce_scatter(const Tensor& in, Tensor& out, CommReduce op) override {
    if (out.numel() == 0) return;
    check(lib_.ReduceScatter(in.raw(), out.raw(), elements(out), nccl_type(in.dtype()), nccl_op(op), comm_,
                             compute_stream()),
          "ncclReduceScatter");
  }

  void do_broadcast(Tensor& t, int root) override {
    if (t.numel() == 0) return;
    check(lib_.Broadcast(t.raw(), t.raw(), elements(t), nccl_type(t.dtype()), root, comm_, compute_stream()),
          "ncclBroadcast");
  }

  // One group of point-to-point calls (one NCCL launch): rows to and from every peer, this rank
  // included. A pair with no rows is skipped on both sides (recv_counts[p] on this rank is
  // send_counts[rank] on rank p), as NCCL needs every send matched by a receive.
  void do_all_to_all_v(const Tensor& send, const std::vector<std::int64_t>& send_counts, Tensor& recv,
                       const std::vector<std::int64_t>& recv_counts) override {
    const auto row = static_cast<std::size_t>(send.shape().prod(1, send.ndim()));
    const std::size_t esize = dtype_size(send.dtype());
    const ncclDataType_t type = nccl_type(send.dtype());
    const char* send_bytes = static_cast<const char*>(send.raw());
    char* recv_bytes = static_cast<char*>(recv.raw());
    const cudaStream_t stream = compute_stream();
    check(lib_.GroupStart(), "ncclGroupStart");
    ncclResult_t failed = ncclSuccess;
    const char* failed_call = "";
    std::size_t send_at = 0, recv_at = 0;  // element offsets
    for (int p = 0; p < size_ && failed == ncclSuccess; ++p) {
      const std::size_t n_send = static_cast<std::size_t>(send_counts[p]) * row;
      const std::size_t n_recv = static_cast<std::size_t>(recv_counts[p]) * row;
      if (n_send > 0) {
        failed = lib_.Send(send_bytes + send_at * esize, n_send, type, p, comm_, stream);
        failed_call = "ncclSend";
      }
      if (n_recv > 0 && failed == ncclSuccess) {
        failed = lib_.Recv(recv_bytes + recv_at * esize, n_recv, type, p, comm_, stream);
        failed_call = "ncclRecv";
      }
      send_at += n_send;
      recv_at += n_recv;
    }
    const ncclResult_t ended = lib_.GroupEnd();  // closes the group after a failed call too
    check(failed, failed_call);
    check(ended, "ncclGroupEnd");
  }

  // One int64 to and from every peer through the device; the counts size the receive buffers, so
  // the host reads them here (one wait).
  std::vector<std::int64_t> do_exchange_counts(const std::vector<std::int64_t>& send_counts) override {
    const std::vector<std::int64_t> one(static_cast<std::size_t>(size_), 1);
    const Tensor send = Tensor::from_vector(send_counts, {size_}, Device::cuda);
    Tensor recv = Tensor::empty({size_}, DType::i64, Device::cuda);
    do_all_to_all_v(send, one, recv, one);
    return recv.to_vector<std::int64_t>();
  }

  // ncclCommSplit orders the new ranks by key; folding this rank into the key breaks ties by the
  // rank in this communicator (the interface's rule) whatever NCCL's own tie-break is.
  std::shared_ptr<Communicator> do_split(int color, int key) override {
    const long long ordered = static_cast<long long>(key) * size_ + rank_;
    UPCYCLE_CHECK(ordered >= INT_MIN && ordered <= INT_MAX, "split: key ", key, " is too large for ", size_,
                  " ranks (NCCL keys are ints)");
    ncclComm_t sub = nullptr;
    check(lib_.CommSplit(comm_, color, static_cast<int>(ordered), &sub, nullptr), "ncclCommSplit");
    UPCYCLE_CHECK(sub != nullptr, "ncclCommSplit gave no communicator for color ", color);
    try {
      return std::make_shared<NcclCommunicator>(sub);
    } catch (...) {
      lib_.CommDestroy(sub);  // the new object never took ownership
      throw;
    }
  }

 private:
  void check(ncclResult_t result, const char* call) const {
    nccl::check(result, call, comm_, rank_text(rank_, size_));
  }

  const nccl::Library& lib_;
  ncclComm_t comm_;
  int rank_ = 0, size_ = 1;
  // The communication stream of all_reduce_async and the event that orders it after the compute
  // stream; made on the first asynchronous all-reduce.
  StreamHandle comm_stream_ = nullptr;
  EventHandle comm_ready_ = nullptr;
};

}  // namespace

bool nccl_in_build() { return true; }

NcclSupport nccl_support() {
  NcclSupport s;
  s.built = true;
  try {
    nccl::library();
    s.usable = true;
  } catch (const Error& e) {
    s.why = e.message();
  }
  return s;
}

int nccl_version_code() { return nccl::library().version; }

std::string nccl_version_string() { return nccl::version_text(nccl_version_code()); }

std::shared_ptr<Communicator> make_nccl_communicator(int rank, int size, const BootstrapBroadcast& broadcast) {
  UPCYCLE_CHECK(size >= 1 && rank >= 0 && rank < size, "make_nccl_communicator: rank ", rank, " of ", size);
  UPCYCLE_CHECK(broadcast != nullptr, "make_nccl_communicator: no bootstrap broadcast");
  const nccl::Library& lib = nccl::library();
  // NCCL binds the communicator to the GPU current at ncclCommInitRank: start the CUDA backend
  // first (on the GPU use_cuda_device chose), so that both use the same one.
  cuda();
  const std::string where = rank_text(rank, size);
  ncclUniqueId id{};
  if (rank == 0) nccl::check(lib.GetUniqueId(&id), "ncclGetUniqueId", nullptr, where);
  broadcast(&id, sizeof id);
  ncclComm_t comm = nullptr;
  const ncclResult_t joined = lib.CommInitRank(&comm, size, id, rank);
  if (joined != ncclSuccess) {
    try {
      nccl::check(joined, "ncclCommInitRank", nullptr, where);  // with NCCL's reason, e.g. "Duplicate GPU detected"
    } catch (...) {
      if (comm != nullptr) lib.CommAbort(comm);  // after the message is taken: aborting may replace it
      throw;
    }
  }
  try {
    return std::make_shared<NcclCommunicator>(comm);
  } catch (...) {
    lib.CommDestroy(comm);
    throw;
  }
}

}  // namespace upcycle
