#include "upcycle/ops/norm.hpp"

#include "upcycle/backend/backend.hpp"

namespace upcycle {

namespace {
// Rows of x viewed as [rows, D]; x must be [..., D] with D > 0.
std::int64_t norm_rows(const Var& x, const char* what) {
  UPCYCLE_CHECK(x.shape().ndim() >= 1 && x.dim(-1) > 0, what, ": input must be [..., D] with D > 0, got ",
                describe(x.value()));
  return x.value().numel() / x.dim(-1);
}

// An affine parameter, when given, is [D] with x's dtype.
void check_param(const Var& x, const Var& param, const char* what) {
  const std::int64_t dim = x.dim(-1);
  if (param.defined()) {
    UPCYCLE_CHECK(param.shape() == Shape{dim} && param.dtype() == x.dtype(), what, ": expected ",
                  dtype_name(x.dtype()), "[", dim, "], got ", describe(param.value()));
  }
}

Tensor value_or_undefined(const Var& v) { return v.defined() ? v.value() : Tensor(); }
}  // namespace

Var layer_norm(const Var& x, const Var& gamma, const Var& beta, double eps) {
  const std::int64_t rows = norm_rows(x, "layer_norm"), dim = x.dim(-1);
  check_param(x, gamma, "layer_norm gamma");
  check_param(x, beta, "layer_norm beta");
  Tensor xv = x.value(), gv = value_or_undefined(gamma);
  Tensor y = Tensor::empty_like(xv);
  Tensor mean = Tensor::empty({rows}, xv.dtype(), xv.device());
  Tensor rstd = Tensor::empty({rows}, xv.dtype(), xv.device());
  backend_of(xv).layernorm(xv, gv, value_or_undefined(beta), eps, y, mean, rstd);
  return make_output("layer_norm", y, {&x, &gamma, &beta},
                     [xv, gv, mean, rstd, dim](const Tensor& gy, GradSink& sink) {
                       // The kernel always produces gx; x is an activation and nearly always needs it.
                       Tensor gx = Tensor::empty_like(xv);
                       Tensor ggamma = sink.needs(1) ? Tensor::empty({dim}, xv.dtype(), xv.device()) : Tensor();
                       Tensor gbeta = sink.needs(2) ? Tensor::empty({dim}, xv.dtype(), xv.device()) : Tensor();
                       backend_of(xv).layernorm_backward(xv, gv, mean, rstd, gy, gx, ggamma, gbeta);
                       sink.add(0, gx);
                       if (ggamma.defined()) sink.add(1, ggamma);
                       if (gbeta.defined()) sink.add(2, gbeta);
                     });
}

Var rms_norm(const Var& x, const Var& gamma, double eps) {
  const std::int64_t rows = norm_rows(x, "rms_norm"), dim = x.dim(-1);
  check_param(x, gamma, "rms_norm gamma");
  Tensor xv = x.value(), gv = value_or_undefined(gamma);
  Tensor y = Tensor::empty_like(xv);
  Tensor rstd = Tensor::empty({rows}, xv.dtype(), xv.device());
  backend_of(xv).rmsnorm(xv, gv, eps, y, rstd);
  return make_output("rms_norm", y, {&x, &gamma}, [xv, gv, rstd, dim](const Tensor& gy, GradSink& sink) {
    Tensor gx = Tensor::empty_like(xv);
    Tensor ggamma = sink.needs(1) ? Tensor::empty({dim}, xv.dtype(), xv.device()) : Tensor();
    backend_of(xv).rmsnorm_backward(xv, gv, rstd, gy, gx, ggamma);
    sink.add(0, gx);
    if (ggamma.defined()) sink.add(1, ggamma);
  });
}

}  // namespace upcycle
