#include "upcycle/ops/random.hpp"

#include "upcycle/backend/backend.hpp"

namespace upcycle {

Var dropout(const Var& x, double p, RngStream& rng, bool training) {
  UPCYCLE_CHECK(p >= 0.0 && p < 1.0, "dropout probability must be in [0, 1), got ", p);
  // The identity draws nothing, so evaluation passes leave the stream where training left it.
  if (!training || p == 0.0) return x;
  const Tensor& xv = x.value();
  Tensor mask = Tensor::empty_like(xv);
  Backend& be = backend_of(xv);
  be.dropout_mask(mask, p, rng.seed(), rng.advance(static_cast<std::uint64_t>(xv.numel())));
  Tensor y = Tensor::empty_like(xv);
  be.binary(BinaryOp::mul, xv, mask, y);
  return make_output("dropout", y, {&x}, [mask](const Tensor& gy, GradSink& sink) {
    Tensor gx = Tensor::empty_like(gy);
    backend_of(gy).binary(BinaryOp::mul, gy, mask, gx);
    sink.add(0, gx);
  });
}

}  // namespace upcycle
