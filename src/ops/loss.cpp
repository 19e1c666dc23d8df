#include "upcycle/ops/loss.hpp"

#include "upcycle/backend/backend.hpp"

namespace upcycle {

namespace {
// The single element of `t` on the host. Losses end the graph, so the gradient reaching them is
// the seed: reading it here costs one tiny copy per backward pass, where broadcasting it on the
// device would cost a full extra pass over the logits.
double host_scalar(const Tensor& t) {
  UPCYCLE_CHECK(t.numel() == 1, "expected a single-element tensor, got ", describe(t));
  return t.to(DType::f64).to(Device::cpu).item<double>();
}

// Sum of all elements of x into a new [1] tensor, times alpha.
Tensor scaled_sum(const Tensor& x, double alpha) {
  Tensor out = Tensor::empty({1}, x.dtype(), x.device());
  Backend& be = backend_of(x);
  be.reduce(ReduceOp::sum, x, out, 1, x.numel(), 1);
  be.affine(out, out, alpha, 0.0);
  return out;
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
  // The mean runs over the rows that count; the kernel has already checked every target.
  std::int64_t counted = 0;
  for (std::int64_t t : targets.to(Device::cpu).to_vector<std::int64_t>()) counted += t != ignore_index;
  const double inv_count = counted > 0 ? 1.0 / static_cast<double>(counted) : 0.0;
  Tensor loss = scaled_sum(losses, inv_count);
  return make_output("cross_entropy", loss, {&logits},
                     [x, targets, lse, ignore_index, label_smoothing, inv_count](const Tensor& gy, GradSink& sink) {
                       Tensor gx = Tensor::empty_like(x);
                       backend_of(x).cross_entropy_backward(x, targets, lse, ignore_index, label_smoothing,
                                                            inv_count * host_scalar(gy), gx);
                       sink.add(0, gx);
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
    const double g = 2.0 * inv_n * host_scalar(gy);
    Backend& bk = backend_of(diff);
    if (sink.needs(0)) {
      Tensor ga = Tensor::empty_like(diff);
      bk.affine(diff, ga, g, 0.0);
      sink.add(0, ga);
    }
    if (sink.needs(1)) {
      Tensor gb = Tensor::empty_like(diff);
      bk.affine(diff, gb, -g, 0.0);
      sink.add(1, gb);
    }
  });
}

}  // namespace upcycle
