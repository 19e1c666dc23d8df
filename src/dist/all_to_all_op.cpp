#include "upcycle/dist/all_to_all.hpp"

namespace upcycle {

Var all_to_all_v(Communicator& comm, const Var& x, const std::vector<std::int64_t>& send_counts,
                 const std::vector<std::int64_t>& recv_counts) {
  // The graph may be run backward long after this call; holding a shared_ptr keeps the
  // communicator (and its MPI_Comm) valid until then, where a reference could dangle.
  std::shared_ptr<Communicator> keep = comm.weak_from_this().lock();
  UPCYCLE_CHECK(keep != nullptr, "all_to_all_v: the communicator must be owned by a std::shared_ptr "
                "(make_world_communicator, split, std::make_shared) so that backward can keep it alive");
  const Tensor& xv = x.value();
  UPCYCLE_CHECK(xv.ndim() >= 1, "all_to_all_v: x must be [rows, ...], got ", describe(xv));
  Shape out_shape = xv.shape();
  out_shape[0] = 0;
  for (std::int64_t c : recv_counts) {
    UPCYCLE_CHECK(c >= 0, "all_to_all_v: negative receive count ", c);
    out_shape[0] += c;
  }
  Tensor y = Tensor::empty(out_shape, xv.dtype(), xv.device());
  comm.all_to_all_v(xv, send_counts, y, recv_counts);
  const Shape in_shape = xv.shape();
  return make_output("all_to_all_v", y, {&x},
                     [comm = std::move(keep), send_counts, recv_counts, in_shape](const Tensor& gy, GradSink& sink) {
                       // Runs unconditionally: the peers wait in the same reverse exchange.
                       Tensor gx = Tensor::empty(in_shape, gy.dtype(), gy.device());
                       comm->all_to_all_v(gy, recv_counts, gx, send_counts);
                       sink.add(0, gx);
                     });
}

}  // namespace upcycle
