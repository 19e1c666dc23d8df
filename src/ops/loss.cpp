#include "upcycle/ops/loss.hpp"

#include "upcycle/backend/backend.hpp"
#include "upcycle/ops/device_scalar.hpp"

namespace upcycle {

namespace {
// Everything stays on the logits' device: the number of counted rows and the gradient reaching the
// loss are device scalars, so a training step on the GPU never waits here for the device.

// Sum of all elements of x into a new [1] tensor, times alpha.
Tensor scaled_sum(const Tensor& x, double alpha) {
  Tensor out = Tensor::empty({1}, x.dtype(), x.device());
  Backend& be = backend_of(x);
  be.reduce(ReduceOp::sum, x, out, 1, x.numel(), 1);
  be.affine(out, out, alpha, 0.0);
  return out;
}

// 1 / max(number of targets != ignore_index, 1) as an f64 [1] tensor on the targets' device.
Tensor inverse_counted_rows(const Tensor& targets, std::int64_t ignore_index) {
  Backend& be = backend_of(targets);
  const Device dev = targets.device();
  const std::int64_t rows = targets.numel();
  Tensor shifted = targets.to(DType::f64);  // exact for any class index below 2^53
  be.affine(shifted, shifted, 1.0, -static_cast<double>(ignore_index));  // 0 exactly where ignored
  Tensor counted = Tensor::full({rows}, 1.0, DType::f64, dev);
  Tensor n = Tensor::full({1}, 0.0, DType::f64, dev);
  if (rows > 0) {
    be.masked_fill(counted, shifted, 0.0, counted);  // keeps 1 where shifted != 0
    be.reduce(ReduceOp::sum, counted, n, 1, rows, 1);
  }
  Tensor one = Tensor::full({1}, 1.0, DType::f64, dev);
  be.binary(BinaryOp::max, n, one, n);  // every row ignored: the loss is 0 / 1
  be.unary(UnaryOp::reciprocal, n, n);
  return n;
}
}  // namespace

Var cross_entropy(const Var& logits, const Tensor& targets, std::int64_t ignore_index, double label_smoothing) {
  const Shape& s = logits.shape();
  UPCYCLE_CHECK(s.ndim() >= 1, "cross_entropy: logits must be [..., C], got ", describe(logits.value()));
  check_dtype(targets, DType::i64, "cross_entropy targets");
  Shape lead;
  for (int i = 0; i + 1 < s.ndim(); ++i) lead.push_back(s[i]);
  if (lead.ndim() == 0) lead.push_back(1);  // a single row of logits [C]
  UPCYCLE_CHECK(targets.shape() == lead || (targets.numel() == 1 && lead.numel() == 1),
                "cross_entropy: targets must have the leading shape ", lead.str(), " of logits ",
                describe(logits.value()), ", got ", describe(targets));
  UPCYCLE_CHECK(targets.device() == logits.device(), "cross_entropy: targets on ",
                device_name(targets.device()), ", logits on ", device_name(logits.device()));
  const std::int64_t rows = lead.numel();
  Tensor x = logits.value();
  Tensor losses = Tensor::empty({rows}, x.dtype(), x.device());
  Tensor lse = Tensor::empty({rows}, x.dtype(), x.device());
  backend_of(x).cross_entropy(x, targets, ignore_index, label_smoothing, losses, lse);
  // The mean runs over the rows that count (ignored rows have loss 0).
  const Tensor inv_count = inverse_counted_rows(targets, ignore_index);
  const Tensor loss = times_scalar(scaled_sum(losses, 1.0), inv_count);
  return make_output("cross_entropy", loss, {&logits},
                     [x, targets, lse, ignore_index, label_smoothing, inv_count](const Tensor& gy, GradSink& sink) {
                       Tensor gx = Tensor::empty_like(x);
                       backend_of(x).cross_entropy_backward(x, targets, lse, ignore_index, label_smoothing, 1.0, gx);
                       sink.add(0, times_scalar(gx, times_scalar(gy.to(DType::f64), inv_count)));
                     });
}

Var mse(const Var& a, const Var& b) {
  UPCYCLE_CHECK(a.dtype() == b.dtype() && a.shape() == b.shape(), "mse: operands must have the same shape and dtype, got ",
                describe(a.value()), " and ", describe(b.value()));
  Tensor diff = Tensor::empty_like(a.value());
  Backend& be = backend_of(diff);
  be.binary(BinaryOp::sub, a.value(), b.value(), diff);
  Tensor sq = Tensor::empty_like(diff);
  be.unary(UnaryOp::square, diff, sq);
  const std::int64_t n = diff.numel();
  const double inv_n = n > 0 ? 1.0 / static_cast<double>(n) : 0.0;
  Tensor loss = scaled_sum(sq, inv_n);
  return make_output("mse", loss, {&a, &b}, [diff, inv_n](const Tensor& gy, GradSink& sink) {
    // d/da mean((a - b)^2) = 2 (a - b) / n, and the negative for b.
    Tensor g = gy.to(DType::f64).clone();
    Backend& bk = backend_of(diff);
    bk.affine(g, g, 2.0 * inv_n, 0.0);
    if (sink.needs(0)) sink.add(0, times_scalar(diff, g));
    if (sink.needs(1)) {
      bk.affine(g, g, -1.0, 0.0);
      sink.add(1, times_scalar(diff, g));
    }
  });
}

}  // namespace upcycle
