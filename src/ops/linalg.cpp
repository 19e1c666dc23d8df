#include "upcycle/ops/linalg.hpp"

#include "upcycle/backend/backend.hpp"

namespace upcycle {

namespace {

// One product C = op(A) op(B) over a batch; a_shared / b_shared mark a single matrix used for
// every batch entry. When `accumulate_batch` the batch is summed into one [m, n] output.
Tensor batched_product(const Tensor& a, bool ta, bool a_shared, const Tensor& b, bool tb, bool b_shared,
                       std::int64_t batch, std::int64_t m, std::int64_t n, std::int64_t k,
                       const Shape& out_shape, bool accumulate_batch) {
  Tensor c = accumulate_batch ? Tensor::zeros(out_shape, a.dtype(), a.device())
                              : Tensor::empty(out_shape, a.dtype(), a.device());
  GemmDesc d;
  d.m = m;
  d.n = n;
  d.k = k;
  d.trans_a = ta;
  d.trans_b = tb;
  d.batch = batch;
  d.stride_a = a_shared ? 0 : m * k;
  d.stride_b = b_shared ? 0 : k * n;
  d.stride_c = accumulate_batch ? 0 : m * n;
  d.beta = accumulate_batch ? 1.0 : 0.0;
  // A batch of row-major A blocks stacked on top of each other is one tall matrix: fold it.
  if (accumulate_batch && !a_shared && !b_shared && ta && !tb) {
    d.m = m;
    d.k = k * batch;
    d.batch = 1;
    d.stride_a = d.stride_b = d.stride_c = 0;
  }
  backend_of(a).gemm(d, a, b, c);
  return c;
}

}  // namespace

Var matmul(const Var& a, const Var& b, bool ta, bool tb) {
  const Shape& sa = a.shape();
  const Shape& sb = b.shape();
  UPCYCLE_CHECK(sa.ndim() >= 2 && sb.ndim() >= 2, "matmul needs matrices, got ", sa.str(), " and ", sb.str());
  UPCYCLE_CHECK(a.dtype() == b.dtype(), "matmul: dtypes differ");
  const std::int64_t m = ta ? sa.dim(-1) : sa.dim(-2);
  const std::int64_t k = ta ? sa.dim(-2) : sa.dim(-1);
  const std::int64_t kb = tb ? sb.dim(-1) : sb.dim(-2);
  const std::int64_t n = tb ? sb.dim(-2) : sb.dim(-1);
  UPCYCLE_CHECK(k == kb, "matmul: inner dimensions differ: ", sa.str(), (ta ? "^T" : ""), " x ", sb.str(),
                (tb ? "^T" : ""));
  const std::int64_t batch = sa.prod(0, sa.ndim() - 2);
  const bool b_shared = sb.ndim() == 2;
  if (!b_shared) {
    UPCYCLE_CHECK(sb.ndim() == sa.ndim() && sb.prod(0, sb.ndim() - 2) == batch,
                  "matmul: batch dimensions differ: ", sa.str(), " x ", sb.str());
  }
  Shape out_shape;
  for (int i = 0; i < sa.ndim() - 2; ++i) out_shape.push_back(sa[i]);
  out_shape.push_back(m);
  out_shape.push_back(n);
  Tensor av = a.value(), bv = b.value();
  Tensor c = batched_product(av, ta, false, bv, tb, b_shared, batch, m, n, k, out_shape, false);
  const bool need_a = b.requires_grad(), need_b = a.requires_grad();  // what each gradient reads
  Tensor keep_a = need_a ? av : Tensor(), keep_b = need_b ? bv : Tensor();
  return make_output("matmul", c, {&a, &b},
                     [=](const Tensor& gc, GradSink& sink) {
                       if (sink.needs(0)) {
                         // !ta: dA = dC op(B)^T ; ta: dA = op(B) dC^T
                         Tensor ga = ta ? batched_product(keep_b, tb, b_shared, gc, true, false, batch, k, m, n,
                                                          av.shape(), false)
                                        : batched_product(gc, false, false, keep_b, !tb, b_shared, batch, m, k, n,
                                                          av.shape(), false);
                         sink.add(0, ga);
                       }
                       if (sink.needs(1)) {
                         // !tb: dB = op(A)^T dC ; tb: dB = dC^T op(A); summed over the batch if B is shared
                         Tensor gb = tb ? batched_product(gc, true, false, keep_a, ta, false, batch, n, k, m,
                                                          bv.shape(), b_shared)
                                        : batched_product(keep_a, !ta, false, gc, false, false, batch, k, n, m,
                                                          bv.shape(), b_shared);
                         sink.add(1, gb);
                       }
                     });
}

Var linear(const Var& x, const Var& w, const Var& bias) {
  const Shape& sx = x.shape();
  UPCYCLE_CHECK(w.shape().ndim() == 2 && sx.ndim() >= 1 && sx.dim(-1) == w.dim(1), "linear: input ",
                sx.str(), " does not match weight ", w.shape().str(), " ([out, in])");
  const std::int64_t in = w.dim(1), out = w.dim(0), rows = sx.numel() / in;
  if (bias.defined()) check_shape(bias.value(), {out}, "linear bias");
  Shape out_shape = sx;
  out_shape[sx.ndim() - 1] = out;
  Tensor xv = x.value(), wv = w.value();
  Tensor y = Tensor::empty(out_shape, xv.dtype(), xv.device());
  Backend& be = backend_of(xv);
  GemmDesc d;
  d.m = rows;
  d.n = out;
  d.k = in;
  d.trans_b = true;
  if (bias.defined()) {
    be.expand_axis(bias.value(), y, 1, rows, out, 1.0);  // y = bias, then y += x W^T
    d.beta = 1.0;
  }
  be.gemm(d, xv, wv, y);
  const bool has_bias = bias.defined();
  Tensor keep_x = w.requires_grad() ? xv : Tensor();
  Tensor keep_w = x.requires_grad() ? wv : Tensor();
  const Shape in_shape = sx;
  return make_output("linear", y, {&x, &w, &bias}, [=](const Tensor& gy, GradSink& sink) {
    Backend& b = backend_of(gy);
    if (sink.needs(0)) {  // gx = gy W
      Tensor gx = Tensor::empty(in_shape, gy.dtype(), gy.device());
      GemmDesc g;
      g.m = rows;
      g.n = in;
      g.k = out;
      b.gemm(g, gy, keep_w, gx);
      sink.add(0, gx);
    }
    if (sink.needs(1)) {  // gW = gy^T x
      Tensor gw = Tensor::empty({out, in}, gy.dtype(), gy.device());
      GemmDesc g;
      g.m = out;
      g.n = in;
      g.k = rows;
      g.trans_a = true;
      b.gemm(g, gy, keep_x, gw);
      sink.add(1, gw);
    }
    if (has_bias && sink.needs(2)) {
      Tensor gb = Tensor::empty({out}, gy.dtype(), gy.device());
      b.reduce(ReduceOp::sum, gy, gb, 1, rows, out);
      sink.add(2, gb);
    }
  });
}

}  // namespace upcycle
