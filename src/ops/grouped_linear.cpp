// Grouped linear (one affine map per group of consecutive rows). Forward and backward slice x, y
// and w as views (Tensor::rows shares storage) and hand all groups' products to the backend's
// grouped_gemm at once (one cuBLAS grouped call on the GPU), so no weight is ever copied and an
// empty group costs nothing but a zero gradient.
#include "upcycle/ops/grouped_linear.hpp"

#include "upcycle/backend/backend.hpp"

namespace upcycle {

namespace {

// The [out, in] matrix of group g of w [G, out, in], as a view.
Tensor group_matrix(const Tensor& w, std::int64_t g) { return w.rows(g, g + 1).reshape({w.dim(1), w.dim(2)}); }

GemmGroup product(const Tensor& a, const Tensor& b, const Tensor& c, std::int64_t m, std::int64_t n, std::int64_t k) {
  GemmGroup g;
  g.a = a;
  g.b = b;
  g.c = c;
  g.m = m;
  g.n = n;
  g.k = k;
  return g;
}

}  // namespace

Var grouped_linear(const Var& x, const Var& w, const Var& bias, const std::vector<std::int64_t>& group_sizes) {
  const Tensor& xv = x.value();
  const Tensor& wv = w.value();
  UPCYCLE_CHECK(xv.ndim() == 2, "grouped_linear: x must be [N, in], got ", describe(xv));
  UPCYCLE_CHECK(wv.ndim() == 3 && wv.dim(2) == xv.dim(1), "grouped_linear: weight must be [G, out, ",
                xv.dim(1), "] for x ", describe(xv), ", got ", describe(wv));
  const std::int64_t G = wv.dim(0), out = wv.dim(1), in = wv.dim(2), N = xv.dim(0);
  UPCYCLE_CHECK(static_cast<std::int64_t>(group_sizes.size()) == G, "grouped_linear: ", group_sizes.size(),
                " group sizes for a weight of ", G, " groups ", describe(wv));
  std::vector<std::int64_t> starts(group_sizes.size() + 1, 0);
  for (std::size_t g = 0; g < group_sizes.size(); ++g) {
    UPCYCLE_CHECK(group_sizes[g] >= 0, "grouped_linear: group ", g, " has negative size ", group_sizes[g]);
    starts[g + 1] = starts[g] + group_sizes[g];
  }
  UPCYCLE_CHECK(starts.back() == N, "grouped_linear: group sizes add up to ", starts.back(), " but x has ",
                N, " rows");
  UPCYCLE_CHECK(wv.dtype() == xv.dtype() && wv.device() == xv.device(), "grouped_linear: weight ",
                describe(wv), " and x ", describe(xv), " differ in dtype or device");
  const bool has_bias = bias.defined();
  if (has_bias) {
    check_shape(bias.value(), {G, out}, "grouped_linear bias");
    UPCYCLE_CHECK(bias.dtype() == xv.dtype(), "grouped_linear: bias ", describe(bias.value()), " and x ",
                  describe(xv), " differ in dtype");
  }

  Backend& be = backend_of(xv);
  Tensor y = Tensor::empty({N, out}, xv.dtype(), xv.device());
  std::vector<GemmGroup> products;
  products.reserve(static_cast<std::size_t>(G));
  for (std::int64_t g = 0; g < G; ++g) {
    const std::int64_t n = group_sizes[static_cast<std::size_t>(g)];
    if (n == 0) continue;
    Tensor yg = y.rows(starts[g], starts[g] + n);
    if (has_bias) be.expand_axis(bias.value().rows(g, g + 1), yg, 1, n, out, 1.0);  // yg = b[g]
    products.push_back(product(xv.rows(starts[g], starts[g] + n), group_matrix(wv, g), yg, n, out, in));
  }
  be.grouped_gemm(false, true, 1.0, has_bias ? 1.0 : 0.0, products);

  Tensor keep_x = w.requires_grad() ? xv : Tensor();  // what each gradient reads
  Tensor keep_w = x.requires_grad() ? wv : Tensor();
  return make_output("grouped_linear", y, {&x, &w, &bias}, [=](const Tensor& gy, GradSink& sink) {
    Backend& b = backend_of(gy);
    std::vector<GemmGroup> products;
    products.reserve(static_cast<std::size_t>(G));
    if (sink.needs(0)) {  // gx[g] = gy[g] w[g]
      Tensor gx = Tensor::empty({N, in}, gy.dtype(), gy.device());
      for (std::int64_t g = 0; g < G; ++g) {
        const std::int64_t n = group_sizes[static_cast<std::size_t>(g)];
        if (n == 0) continue;
        products.push_back(product(gy.rows(starts[g], starts[g] + n), group_matrix(keep_w, g),
                                   gx.rows(starts[g], starts[g] + n), n, in, out));
      }
      b.grouped_gemm(false, false, 1.0, 0.0, products);
      sink.add(0, gx);
    }
    if (sink.needs(1)) {  // gw[g] = gy[g]^T x[g]; an empty group (k = 0) gets zeros
      Tensor gw = Tensor::empty({G, out, in}, gy.dtype(), gy.device());
      products.clear();
      for (std::int64_t g = 0; g < G; ++g) {
        const std::int64_t n = group_sizes[static_cast<std::size_t>(g)];
        products.push_back(product(gy.rows(starts[g], starts[g] + n), keep_x.rows(starts[g], starts[g] + n),
                                   group_matrix(gw, g), out, in, n));
      }
      b.grouped_gemm(true, false, 1.0, 0.0, products);
      sink.add(1, gw);
    }
    if (has_bias && sink.needs(2)) {  // gb[g] = column sums of gy[g]
      Tensor gb = Tensor::empty({G, out}, gy.dtype(), gy.device());
      for (std::int64_t g = 0; g < G; ++g) {
        const std::int64_t n = group_sizes[static_cast<std::size_t>(g)];
        Tensor gbg = gb.rows(g, g + 1);
        if (n == 0) b.fill(gbg, 0.0);
        else b.reduce(ReduceOp::sum, gy.rows(starts[g], starts[g] + n), gbg, 1, n, out);
      }
      sink.add(2, gb);
    }
  });
}

}  // namespace upcycle
