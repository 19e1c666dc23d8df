#include "upcycle/ops/scale_rows.hpp"

#include "upcycle/backend/backend.hpp"

namespace upcycle {

namespace {
// [N] -> [N, D] with every row filled by its scale.
Tensor expand_rows(const Tensor& s, std::int64_t n, std::int64_t d) {
  Tensor e = Tensor::empty({n, d}, s.dtype(), s.device());
  backend_of(s).expand_axis(s, e, n, d, 1, 1.0);
  return e;
}
}  // namespace

Var scale_rows(const Var& x, const Var& scale) {
  const Tensor& xv = x.value();
  const Tensor& sv = scale.value();
  UPCYCLE_CHECK(xv.ndim() == 2, "scale_rows: x must be [N, D], got ", describe(xv));
  const std::int64_t n = xv.dim(0), d = xv.dim(1);
  UPCYCLE_CHECK(sv.numel() == n && sv.ndim() == 1, "scale_rows: scale must be [", n, "] for x ",
                describe(xv), ", got ", describe(sv));
  UPCYCLE_CHECK(sv.dtype() == xv.dtype() && sv.device() == xv.device(), "scale_rows: scale ",
                describe(sv), " and x ", describe(xv), " differ in dtype or device");
  Backend& be = backend_of(xv);
  Tensor y = Tensor::empty_like(xv);
  be.binary(BinaryOp::mul, xv, expand_rows(sv, n, d), y);
  Tensor keep_x = scale.requires_grad() ? xv : Tensor();
  Tensor keep_s = x.requires_grad() ? sv : Tensor();
  return make_output("scale_rows", y, {&x, &scale}, [=](const Tensor& gy, GradSink& sink) {
    Backend& b = backend_of(gy);
    if (sink.needs(0)) {  // gx = gy * s
      Tensor gx = Tensor::empty_like(gy);
      b.binary(BinaryOp::mul, gy, expand_rows(keep_s, n, d), gx);
      sink.add(0, gx);
    }
    if (sink.needs(1)) {  // gs[n] = <gy[n], x[n]>
      Tensor prod = Tensor::empty_like(gy);
      b.binary(BinaryOp::mul, gy, keep_x, prod);
      Tensor gs = Tensor::empty({n}, gy.dtype(), gy.device());
      b.reduce(ReduceOp::sum, prod, gs, n, d, 1);
      sink.add(1, gs);
    }
  });
}

}  // namespace upcycle
