#include "upcycle/ops/device_scalar.hpp"

#include "upcycle/backend/backend.hpp"

namespace upcycle {

Tensor times_scalar(const Tensor& x, const Tensor& s) {
  UPCYCLE_CHECK(s.numel() == 1, "times_scalar: expected a single-element scale, got ", describe(s));
  UPCYCLE_CHECK(s.device() == x.device(), "times_scalar: scale ", describe(s), " is not on the device of ",
                describe(x));
  Tensor out = Tensor::empty_like(x);
  if (x.numel() == 0) return out;
  // [1] is a suffix of [n, 1]: the backend broadcasts it over the rows.
  Tensor out2 = out.reshape({x.numel(), 1});
  backend_of(x).binary(BinaryOp::mul, x.reshape({x.numel(), 1}), s.reshape({1}).to(x.dtype()), out2);
  return out;
}

}  // namespace upcycle
