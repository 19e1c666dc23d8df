// The backend op suite: one table entry per Backend kernel, each generating its cases (shapes,
// dtypes, parameters) and the tolerance tier every output is compared with. See
// backend_op_suite.hpp for how a case runs and tests/support/backend_compare.hpp for the
// comparison rule and the tiers.
//
// Shapes every entry covers (where the kernel has them): empty (0 elements or 0 rows), a single
// element, sizes that are not multiples of 32 (7, 33, 65, 1000), more than one thread block of
// rows (300 rows), and long rows (4097 and 50000 columns) for the row kernels; f32 and f64 for
// floating kernels, i32 and i64 for index tensors. Two empty cases wait for the CPU reference to
// handle them (see kNormBackwardShapes and binary_cases).
#include "backend_op_suite.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <sstream>
#include <utility>

#include "backend_compare.hpp"

namespace upcycle::testing {

std::string OpFailure::str() const {
  std::string s = kernel + " [" + dtype + "] " + shape;
  if (!params.empty()) s += " (" + params + ")";
  if (!output.empty()) s += " output " + output;
  return s + ": " + detail;
}

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

const DType kFloats[] = {DType::f32, DType::f64};
const DType kAllTypes[] = {DType::f32, DType::f64, DType::i32, DType::i64};
const DType kIndexTypes[] = {DType::i32, DType::i64};

using Args = std::vector<Tensor>;
using Call = std::function<void(Backend&, Args&)>;

struct Output {
  int arg = 0;
  std::string name;
  Tolerance tol;
  Tensor magnitude;
  std::int64_t count = -1;
};

// One kernel invocation: host arguments (inputs and the initial values of outputs, in the order
// the call lambda indexes them), the outputs to compare and how.
struct Case {
  std::string kernel, dtype, shape, params;
  Args args;
  std::vector<Output> outputs;
  Call call;
  bool expect_error = false;  // both backends must throw, naming the kernel

  Case(std::string k, std::string dt, std::string sh, std::string pa = "")
      : kernel(std::move(k)), dtype(std::move(dt)), shape(std::move(sh)), params(std::move(pa)) {}
  int in(Tensor host) {
    args.push_back(std::move(host));
    return static_cast<int>(args.size()) - 1;
  }
  int out(std::string name, Tensor init, Tolerance tol, Tensor magnitude = Tensor(), std::int64_t count = -1) {
    const int i = in(std::move(init));
    outputs.push_back({i, std::move(name), tol, std::move(magnitude), count});
    return i;
  }
};

using Sink = std::function<void(Case&)>;

// --- small helpers -------------------------------------------------------------------------------

struct Seq {
  std::uint64_t next;
  std::uint64_t operator()() { return next++; }
};

std::string num(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

std::string dt_name(DType d) { return dtype_name(d); }

Tensor f64_tensor(const std::vector<double>& v, const Shape& s) { return Tensor::from_vector(v, s, Device::cpu); }

struct RowsCols {
  std::int64_t rows = 0, cols = 0;
};
RowsCols rows_cols(const Shape& s) {
  RowsCols r;
  r.cols = s.dim(-1);
  r.rows = r.cols == 0 ? 0 : s.numel() / r.cols;
  return r;
}

Shape with_last(const Shape& s, std::int64_t last) {
  Shape out = s;
  out[s.ndim() - 1] = last;
  return out;
}

// Overwrites the first values of a host tensor (special values at the front of a random one).
Tensor with_front(Tensor t, const std::vector<double>& front) {
  std::vector<double> v = values_of(t);
  for (std::size_t i = 0; i < front.size() && i < v.size(); ++i) v[i] = front[i];
  return host_values(v, t.shape(), t.dtype());
}

// A CPU kernel run on host tensors, to make inputs that another kernel would produce.
Backend& cpu() { return backend_for(Device::cpu); }

// Shapes of the elementwise kernels: empty, one element, odd sizes, more than one block, long.
const std::vector<Shape> kElementwiseShapes = {{0}, {1}, {33}, {1000}, {3, 4097}, {50001}};
// Shapes [..., cols] of the row kernels: no rows, one element, odd widths, long rows (4097 is one
// more than a 4096-element tile; 50000 a vocabulary), 3-D leading dims, many short rows.
const std::vector<Shape> kRowShapes = {{0, 7}, {1, 1}, {1, 33}, {5, 1000}, {3, 4097}, {2, 50000},
                                       {2, 3, 33}, {300, 65}, {7, 1}};

// =================================================================================================
// creation and conversion
// =================================================================================================

// fill: a value cast to the dtype, exact. The output starts from random data, not the sentinel,
// so a missing write of NaN cannot pass.
void fill_cases(const Sink& run) {
  Seq seed{1000};
  for (DType dt : kAllTypes)
    for (const Shape& s : kElementwiseShapes) {
      std::vector<double> values = is_floating(dt) ? std::vector<double>{0.0, -1.5, 3.0e38, -kInf, kNaN}
                                                   : std::vector<double>{0.0, -7.0, 123456789.0};
      if (dt == DType::i64) values.push_back(1099511627776.0);  // 2^40
      if (dt == DType::f64) values.push_back(1e300);
      for (double v : values) {
        Case c("fill", dt_name(dt), s.str(), "value " + num(v));
        const int y = c.out("out", host_uniform(s, dt, seed(), -100, 100), exact_match().allow_nan());
        c.call = [y, v](Backend& be, Args& t) { be.fill(t[y], v); };
        run(c);
      }
    }
}

// Source values for cast src -> dst: fractional and large values (up to 1e9, inside the i32 range
// so float -> int is defined), and for float -> float the IEEE specials, an f32 denormal and
// values that overflow / underflow f32 (C++ leaves an f64 beyond the f32 range undefined, but the
// conversion instructions of both sides, cvtsd2ss and cvt.rn.f32.f64, round to nearest: +-inf).
Tensor cast_source(DType src, DType dst, const Shape& s, std::uint64_t seed) {
  const std::int64_t n = s.numel();
  if (is_floating(src)) {
    std::vector<double> v = values_of(host_uniform(s, DType::f64, seed, -1, 1));
    for (std::int64_t i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] *= std::pow(10.0, static_cast<double>(i % 10));
    Tensor t = host_values(v, s, src);
    if (is_floating(dst)) {
      std::vector<double> front = {kInf, -kInf, kNaN, -0.0, 1e-40, 0.1};
      if (src == DType::f64) front.insert(front.end(), {1e39, -1e39, 1e-46});
      t = with_front(t, front);
    }
    return t;
  }
  // Integers: the full i32 range, and for i64 to a floating dtype values up to 2^62 (rounded).
  const std::int64_t lim = src == DType::i64 && is_floating(dst) ? (std::int64_t{1} << 62) : (std::int64_t{1} << 31);
  return host_ints(s, src, seed, -lim, src == DType::i32 ? lim - 1 : lim);
}

void cast_cases(const Sink& run) {
  Seq seed{2000};
  const std::vector<Shape> shapes = {{0}, {1}, {33}, {1000}, {4097}};
  for (DType src : kAllTypes)
    for (DType dst : kAllTypes)
      for (const Shape& s : shapes) {
        Case c("cast", dt_name(src) + "->" + dt_name(dst), s.str());
        const int x = c.in(cast_source(src, dst, s, seed()));
        // Every conversion is exact or correctly rounded: same bits. NaN is copied by design.
        const int y = c.out("dst", host_sentinel(s, dst), exact_match().allow_nan());
        c.call = [x, y](Backend& be, Args& t) { be.cast(t[x], t[y]); };
        run(c);
      }
}

// arange: start + i step computed in double, then cast. Integer outputs (and floating ones for
// exactly representable steps) are exact; with step 0.1 the device may contract to an FMA (one
// double rounding of |start| + |i step|) before the cast (one rounding of the dtype).
void arange_cases(const Sink& run) {
  const std::vector<std::pair<double, double>> ranges = {{0, 1}, {-5, 2}, {0.5, 0.25}, {1e6, 7}, {3, -0.1}};
  for (DType dt : kAllTypes)
    for (std::int64_t n : {0, 1, 33, 1000, 50000})
      for (auto [start, step] : ranges) {
        if (!is_floating(dt) && step == -0.1) continue;  // truncation of an inexact double: undefined rounding
        Case c("arange", dt_name(dt), "[" + std::to_string(n) + "]", "start " + num(start) + " step " + num(step));
        Tolerance tol = exact_match();
        Tensor mag;
        if (is_floating(dt)) {
          tol = Tolerance();
          tol.rtol = eps_of(dt);
          tol.mtol = 2.0 * eps_of(DType::f64);
          std::vector<double> m(static_cast<std::size_t>(n));
          for (std::int64_t i = 0; i < n; ++i) m[static_cast<std::size_t>(i)] = std::abs(start) + std::abs(step * i);
          mag = f64_tensor(m, {n});
        }
        const int y = c.out("out", host_sentinel({n}, dt), tol, mag);
        c.call = [y, start = start, step = step](Backend& be, Args& t) { be.arange(t[y], start, step); };
        run(c);
      }
}

// uniform: lo + (hi - lo) u with u a 24-bit Philox draw. The ranges are chosen so that every step
// is exact in double and the result exact in f32 (hi - lo a power of two, lo an integer), so the
// bits must match whatever the device contracts: exact. Offsets cover a word that is not the first
// of its Philox block (3) and a counter above 2^32; seeds use both 32-bit key halves.
struct RandomParams {
  std::uint64_t seed, offset;
  double a, b;
};
const std::vector<std::int64_t> kRandomSizes = {0, 1, 33, 1000, 50001};

void uniform_cases(const Sink& run) {
  const std::vector<RandomParams> params = {
      {1, 0, 0, 1}, {0x0123456789ABCDEFull, 3, -1, 1}, {42, (std::uint64_t{1} << 32) + 5, -2, 6}};
  for (DType dt : kFloats)
    for (std::int64_t n : kRandomSizes)
      for (const RandomParams& p : params) {
        Case c("uniform", dt_name(dt), "[" + std::to_string(n) + "]",
               "seed " + std::to_string(p.seed) + " offset " + std::to_string(p.offset) + " [" + num(p.a) + ", " +
                   num(p.b) + ")");
        const int y = c.out("out", host_sentinel({n}, dt), exact_match());
        c.call = [y, p](Backend& be, Args& t) { be.uniform(t[y], p.seed, p.offset, p.a, p.b); };
        run(c);
      }
}

// normal: Box-Muller (sqrt, log, cos) of the same Philox words. The transcendental functions of
// the two math libraries differ by a few ulp, so the transcendental tier: relative on the value,
// plus an absolute part for z near a zero of the cosine (std * |z| <= 6 std * cos error) and for
// the rounding of mean + std z (2 |mean| rel).
void normal_cases(const Sink& run) {
  const std::vector<RandomParams> params = {
      {7, 0, 0, 1}, {0xDEADBEEFCAFEull, 5, 2, 0.5}, {3, (std::uint64_t{1} << 33) + 1, -1, 3}};
  for (DType dt : kFloats)
    for (std::int64_t n : kRandomSizes)
      for (const RandomParams& p : params) {
        Case c("normal", dt_name(dt), "[" + std::to_string(n) + "]",
               "seed " + std::to_string(p.seed) + " offset " + std::to_string(p.offset) + " mean " + num(p.a) +
                   " std " + num(p.b));
        const double tr = transcendental_rel(dt);
        Tolerance tol;
        tol.rtol = tr;
        tol.atol = 6.0 * p.b * tr + 2.0 * std::abs(p.a) * tr;
        const int y = c.out("out", host_sentinel({n}, dt), tol);
        c.call = [y, p](Backend& be, Args& t) { be.normal(t[y], p.seed, p.offset, p.a, p.b); };
        run(c);
      }
}

// dropout_mask: a float comparison of the same Philox draw with p, and the same 1 / (1 - p): exact.
void dropout_mask_cases(const Sink& run) {
  const std::vector<std::pair<std::uint64_t, std::uint64_t>> streams = {
      {9, 0}, {0xFFFFFFFF12345678ull, 7}, {5, (std::uint64_t{1} << 32) + 3}};
  for (DType dt : kFloats)
    for (std::int64_t n : kRandomSizes)
      for (double p : {0.0, 0.1, 0.5, 0.9})
        for (auto [seed, offset] : streams) {
          Case c("dropout_mask", dt_name(dt), "[" + std::to_string(n) + "]",
                 "p " + num(p) + " seed " + std::to_string(seed) + " offset " + std::to_string(offset));
          const int y = c.out("mask", host_sentinel({n}, dt), exact_match());
          c.call = [y, p, seed = seed, offset = offset](Backend& be, Args& t) { be.dropout_mask(t[y], p, seed, offset); };
          run(c);
        }
}

// =================================================================================================
// matrix products
// =================================================================================================

// Element (i, l) of op(A) for A stored row-major as [m, k] (or [k, m] when transposed), from `off`.
inline double op_at(const std::vector<double>& a, std::int64_t off, bool trans, std::int64_t rows,
                    std::int64_t cols, std::int64_t i, std::int64_t l) {
  // op(A) is rows x cols.
  return a[static_cast<std::size_t>(off + (trans ? l * rows + i : i * cols + l))];
}

// |alpha| sum_l |op(A)_il| |op(B)_lj| + |beta| |C_ij| (the magnitude of gemm_tol) for one product.
void product_magnitude(const std::vector<double>& a, std::int64_t oa, bool ta, const std::vector<double>& b,
                       std::int64_t ob, bool tb, const std::vector<double>& c0, std::int64_t oc, std::int64_t m,
                       std::int64_t n, std::int64_t k, double alpha, double beta, std::vector<double>& mag) {
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      double s = 0.0;
      for (std::int64_t l = 0; l < k; ++l) s += std::abs(op_at(a, oa, ta, m, k, i, l) * op_at(b, ob, tb, k, n, l, j));
      const auto e = static_cast<std::size_t>(oc + i * n + j);
      mag[e] = std::abs(alpha) * s + (beta != 0.0 ? std::abs(beta * c0[e]) : 0.0);
    }
}

struct GemmSpec {
  std::int64_t batch, m, n, k;
  bool ta, tb;
  std::int64_t sa, sb, sc;  // element strides; -1 = packed (m k, k n, m n), 0 = broadcast
  double alpha, beta;
};

void add_gemm_case(const Sink& run, DType dt, const GemmSpec& g, std::uint64_t seed, const std::string& what) {
  const std::int64_t mk = g.m * g.k, kn = g.k * g.n, mn = g.m * g.n;
  GemmDesc d;
  d.batch = g.batch;
  d.m = g.m;
  d.n = g.n;
  d.k = g.k;
  d.trans_a = g.ta;
  d.trans_b = g.tb;
  d.stride_a = g.sa < 0 ? mk : g.sa;
  d.stride_b = g.sb < 0 ? kn : g.sb;
  d.stride_c = g.sc < 0 ? mn : g.sc;
  d.alpha = g.alpha;
  d.beta = g.beta;
  const auto extent = [&](std::int64_t stride, std::int64_t block) {
    return g.batch == 0 ? block : (g.batch - 1) * stride + block;
  };
  const std::int64_t na = extent(d.stride_a, mk), nb = extent(d.stride_b, kn), nc = extent(d.stride_c, mn);
  const Tensor a = host_uniform({na}, dt, seed, -1, 1), b = host_uniform({nb}, dt, seed + 1, -1, 1);
  // C: finite data everywhere (padding between strided blocks must survive), NaN where a product
  // writes when beta == 0 (C must not be read then, as in BLAS).
  std::vector<double> c0 = values_of(host_uniform({nc}, dt, seed + 2, -1, 1));
  const std::vector<double> av = values_of(a), bv = values_of(b);
  std::vector<double> mag(static_cast<std::size_t>(nc), 0.0);
  std::vector<double> c_init = c0;
  for (std::int64_t i = 0; i < g.batch; ++i) {
    if (g.beta == 0.0)
      for (std::int64_t e = 0; e < mn; ++e) c_init[static_cast<std::size_t>(i * d.stride_c + e)] = kNaN;
    product_magnitude(av, i * d.stride_a, g.ta, bv, i * d.stride_b, g.tb, c0, i * d.stride_c, g.m, g.n, g.k, g.alpha,
                      g.beta, mag);
  }
  std::ostringstream shape;
  shape << "m " << g.m << " n " << g.n << " k " << g.k << " batch " << g.batch << (g.ta ? " A^T" : "")
        << (g.tb ? " B^T" : "") << " strides " << d.stride_a << "/" << d.stride_b << "/" << d.stride_c;
  Case c("gemm", dt_name(dt), shape.str(), what + " alpha " + num(g.alpha) + " beta " + num(g.beta));
  const int ia = c.in(a), ib = c.in(b);
  const int ic = c.out("c", host_values(c_init, {nc}, dt), gemm_tol(dt, g.k), f64_tensor(mag, {nc}));
  c.call = [d, ia, ib, ic](Backend& be, Args& t) { be.gemm(d, t[ia], t[ib], t[ic]); };
  run(c);
}

void gemm_cases(const Sink& run) {
  Seq seed{3000};
  const std::vector<std::array<std::int64_t, 3>> dims = {{1, 1, 1},   {33, 17, 65}, {64, 64, 64}, {100, 1, 257},
                                                         {1, 300, 33}, {7, 9, 4097}, {257, 129, 65}};
  for (DType dt : kFloats) {
    for (const auto& [m, n, k] : dims)
      for (int t = 0; t < 4; ++t)
        for (auto [alpha, beta] : {std::pair{1.0, 0.0}, std::pair{-1.5, 0.75}})
          add_gemm_case(run, dt, {1, m, n, k, (t & 1) != 0, (t & 2) != 0, -1, -1, -1, alpha, beta}, seed() * 3, "single");
    // Batches: packed, one A broadcast (stride 0), one B broadcast, explicit padded strides.
    const std::int64_t m = 33, n = 17, k = 65;
    const std::vector<std::array<std::int64_t, 3>> strides = {
        {-1, -1, -1}, {0, -1, -1}, {-1, 0, -1}, {m * k + 5, k * n + 3, m * n + 7}};
    for (const auto& [sa, sb, sc] : strides)
      for (int t = 0; t < 4; ++t)
        for (auto [alpha, beta] : {std::pair{1.25, 0.0}, std::pair{1.0, 1.0}})
          add_gemm_case(run, dt, {3, m, n, k, (t & 1) != 0, (t & 2) != 0, sa, sb, sc, alpha, beta}, seed() * 3, "batched");
    // k == 0: C = beta C (zero when beta == 0, without reading C); nothing to do for an empty C or batch.
    for (int t : {0, 3})
      for (double beta : {0.0, 0.5}) {
        add_gemm_case(run, dt, {2, 5, 7, 0, t == 3, t == 3, -1, -1, -1, 1.0, beta}, seed() * 3, "k == 0");
        add_gemm_case(run, dt, {2, 0, 7, 5, t == 3, t == 3, -1, -1, -1, 1.0, beta + 1.0}, seed() * 3, "m == 0");
        add_gemm_case(run, dt, {2, 5, 0, 3, t == 3, t == 3, -1, -1, -1, 1.0, beta + 1.0}, seed() * 3, "n == 0");
        add_gemm_case(run, dt, {0, 3, 4, 5, t == 3, t == 3, -1, -1, -1, 1.0, beta + 1.0}, seed() * 3, "batch == 0");
      }
  }
}

struct GroupDims {
  std::int64_t m, n, k;
};

void add_grouped_case(const Sink& run, DType dt, bool ta, bool tb, double alpha, double beta,
                      const std::vector<GroupDims>& groups, std::uint64_t seed, const std::string& what) {
  std::vector<std::int64_t> oa, ob, oc;
  std::int64_t na = 0, nb = 0, nc = 0, kmax = 0;
  for (const GroupDims& g : groups) {
    oa.push_back(na);
    ob.push_back(nb);
    oc.push_back(nc);
    na += g.m * g.k;
    nb += g.k * g.n;
    nc += g.m * g.n;
    kmax = std::max(kmax, g.k);
  }
  const Tensor a = host_uniform({na}, dt, seed, -1, 1), b = host_uniform({nb}, dt, seed + 1, -1, 1);
  const std::vector<double> av = values_of(a), bv = values_of(b);
  const std::vector<double> c0 = values_of(host_uniform({nc}, dt, seed + 2, -1, 1));
  std::vector<double> mag(static_cast<std::size_t>(nc), 0.0);
  for (std::size_t i = 0; i < groups.size(); ++i)
    product_magnitude(av, oa[i], ta, bv, ob[i], tb, c0, oc[i], groups[i].m, groups[i].n, groups[i].k, alpha, beta,
                      mag);
  // Every element of C belongs to one group: all NaN when beta == 0 (C must not be read).
  const Tensor c_init = beta == 0.0 ? host_sentinel({nc}, dt) : host_values(c0, {nc}, dt);
  std::ostringstream shape;
  shape << groups.size() << " groups (m,n,k):";
  for (std::size_t i = 0; i < groups.size() && i < 8; ++i)
    shape << " " << groups[i].m << "," << groups[i].n << "," << groups[i].k;
  if (groups.size() > 8) shape << " ...";
  shape << (ta ? " A^T" : "") << (tb ? " B^T" : "");
  Case c("grouped_gemm", dt_name(dt), shape.str(), what + " alpha " + num(alpha) + " beta " + num(beta));
  const int ia = c.in(a), ib = c.in(b);
  const int ic = c.out("c", c_init, gemm_tol(dt, kmax), f64_tensor(mag, {nc}));
  c.call = [=](Backend& be, Args& t) {
    // Each operand of a group is a row-major view into one flat tensor, as the MoE experts' are.
    auto view = [](const Tensor& flat, std::int64_t off, std::int64_t rows, std::int64_t cols) {
      return flat.rows(off, off + rows * cols).reshape({rows, cols});
    };
    std::vector<GemmGroup> gs;
    for (std::size_t i = 0; i < groups.size(); ++i) {
      const GroupDims& g = groups[i];
      GemmGroup x;
      x.a = view(t[ia], oa[i], ta ? g.k : g.m, ta ? g.m : g.k);
      x.b = view(t[ib], ob[i], tb ? g.n : g.k, tb ? g.k : g.n);
      x.c = view(t[ic], oc[i], g.m, g.n);
      x.m = g.m;
      x.n = g.n;
      x.k = g.k;
      gs.push_back(x);
    }
    be.grouped_gemm(ta, tb, alpha, beta, gs);
  };
  run(c);
}

void grouped_gemm_cases(const Sink& run) {
  Seq seed{4000};
  // MoE-like: 16 experts sharing n and k, row counts between 0 and 39 (several empty).
  std::vector<GroupDims> experts;
  const std::vector<double> rows = values_of(host_ints({16}, DType::i64, 77, 0, 40));
  for (std::size_t i = 0; i < rows.size(); ++i) experts.push_back({i % 5 == 2 ? 0 : static_cast<std::int64_t>(rows[i]), 24, 16});
  const std::vector<std::pair<std::string, std::vector<GroupDims>>> lists = {
      {"mixed (empty m, empty n, k == 0)", {{3, 5, 7}, {0, 5, 7}, {4, 0, 7}, {6, 5, 0}, {33, 17, 65}, {1, 1, 1}}},
      {"experts", experts},
      {"one large group", {{257, 64, 128}}},
      {"no groups", {}}};
  for (DType dt : kFloats)
    for (const auto& [what, groups] : lists)
      for (int t = 0; t < 4; ++t)
        for (auto [alpha, beta] : {std::pair{1.0, 0.0}, std::pair{0.5, -1.0}})
          add_grouped_case(run, dt, (t & 1) != 0, (t & 2) != 0, alpha, beta, groups, seed() * 3, what);
}

// =================================================================================================
// elementwise
// =================================================================================================

const UnaryOp kUnaryOps[] = {UnaryOp::neg,     UnaryOp::exp,        UnaryOp::log,  UnaryOp::sqrt,
                             UnaryOp::rsqrt,   UnaryOp::square,     UnaryOp::abs,  UnaryOp::tanh,
                             UnaryOp::sigmoid, UnaryOp::reciprocal, UnaryOp::relu, UnaryOp::gelu_tanh,
                             UnaryOp::gelu_erf, UnaryOp::silu};

// Ops whose result is one correctly rounded IEEE operation (or a sign / select): rounded tier.
bool correctly_rounded(UnaryOp op) {
  return op == UnaryOp::neg || op == UnaryOp::abs || op == UnaryOp::square || op == UnaryOp::relu ||
         op == UnaryOp::sqrt || op == UnaryOp::reciprocal;
}

Tolerance unary_tol(UnaryOp op, DType dt) { return correctly_rounded(op) ? rounded_tol(dt) : transcendental_tol(dt); }

// Inputs inside each op's domain: (0.05, 5) for log / sqrt / rsqrt, the same with alternating signs
// for reciprocal (away from the pole), (-6, 6) otherwise (both tails of tanh / sigmoid / gelu).
Tensor unary_input(UnaryOp op, const Shape& s, DType dt, std::uint64_t seed) {
  if (op == UnaryOp::log || op == UnaryOp::sqrt || op == UnaryOp::rsqrt) return host_uniform(s, dt, seed, 0.05, 5);
  if (op == UnaryOp::reciprocal) {
    std::vector<double> v = values_of(host_uniform(s, DType::f64, seed, 0.05, 5));
    for (std::size_t i = 1; i < v.size(); i += 2) v[i] = -v[i];
    return host_values(v, s, dt);
  }
  return host_uniform(s, dt, seed, -6, 6);
}

// Special inputs whose results IEEE arithmetic defines (NaN where it is NaN by design). Left out on
// purpose: exp / sigmoid beyond the f32 range of the CPU's polynomial exp (it saturates where expf
// overflows), relu(NaN), and gelu / silu at -inf (inf * 0 in some of the equal formulas).
std::vector<double> unary_specials(UnaryOp op) {
  switch (op) {
    case UnaryOp::neg:
    case UnaryOp::abs: return {0.0, -0.0, kInf, -kInf, kNaN, 1.5};
    case UnaryOp::square: return {0.0, -0.0, kInf, -kInf, kNaN, 1e20};
    case UnaryOp::sqrt: return {0.0, -0.0, kInf, -1.0, kNaN, 2.0};
    case UnaryOp::rsqrt: return {0.0, -0.0, kInf, -1.0, kNaN, 4.0};
    case UnaryOp::reciprocal: return {0.0, -0.0, kInf, -kInf, kNaN, 3.0};
    case UnaryOp::log: return {0.0, -0.0, kInf, -1.0, kNaN, 1.0};
    case UnaryOp::exp: return {-kInf, kNaN, 0.0, -100.0, 80.0};
    case UnaryOp::tanh: return {kInf, -kInf, kNaN, 0.0, 20.0, -20.0};
    case UnaryOp::sigmoid: return {kInf, -kInf, kNaN, 0.0, 50.0, -50.0};
    case UnaryOp::relu: return {kInf, -kInf, 0.0, -0.0, 3.0, -3.0};
    case UnaryOp::gelu_tanh:
    case UnaryOp::gelu_erf:
    case UnaryOp::silu: return {kInf, kNaN, 0.0, 20.0, -20.0};
  }
  return {};
}

void unary_cases(const Sink& run) {
  Seq seed{5000};
  for (UnaryOp op : kUnaryOps)
    for (DType dt : kFloats) {
      for (const Shape& s : kElementwiseShapes) {
        Case c("unary", dt_name(dt), s.str(), unary_op_name(op));
        const int x = c.in(unary_input(op, s, dt, seed()));
        const int y = c.out("y", host_sentinel(s, dt), unary_tol(op, dt));
        c.call = [op, x, y](Backend& be, Args& t) { be.unary(op, t[x], t[y]); };
        run(c);
      }
      const std::vector<double> sp = unary_specials(op);
      const Shape s{static_cast<std::int64_t>(sp.size())};
      Case c("unary", dt_name(dt), s.str(), std::string(unary_op_name(op)) + " special values");
      const int x = c.in(host_values(sp, s, dt));
      const int y = c.out("y", host_sentinel(s, dt), unary_tol(op, dt).allow_nan());
      c.call = [op, x, y](Backend& be, Args& t) { be.unary(op, t[x], t[y]); };
      run(c);
    }
}

// Whether the autograd layer computes op's derivative from its output y (and then passes no x):
// the split of src/ops/elementwise.cpp (derivative_from_output), which also passes neither for neg.
bool derivative_from_output(UnaryOp op) {
  return op == UnaryOp::exp || op == UnaryOp::sqrt || op == UnaryOp::rsqrt || op == UnaryOp::tanh ||
         op == UnaryOp::sigmoid || op == UnaryOp::reciprocal;
}

// unary_backward with x and y = f(x) from the CPU, called with both, and as the autograd layer
// calls it: only the one the derivative reads, the other undefined (a kernel that touches it
// throws or faults).
void unary_backward_cases(const Sink& run) {
  Seq seed{6000};
  for (UnaryOp op : kUnaryOps)
    for (DType dt : kFloats)
      for (const Shape& s : kElementwiseShapes)
        for (bool both : {true, false}) {
          const Tensor xv = unary_input(op, s, dt, seed());
          Tensor yv = Tensor::empty(s, dt, Device::cpu);
          cpu().unary(op, xv, yv);
          const bool from_y = derivative_from_output(op);
          Case c("unary_backward", dt_name(dt), s.str(),
                 std::string(unary_op_name(op)) + (both ? ", x and y" : from_y ? ", y only" : op == UnaryOp::neg ? ", neither x nor y" : ", x only"));
          const int x = c.in(both || (!from_y && op != UnaryOp::neg) ? xv : Tensor());
          const int y = c.in(both || from_y ? yv : Tensor());
          const int gy = c.in(host_uniform(s, dt, seed(), -1, 1));
          // gy f'(x): neg / abs / relu / square are one or two exact operations; the others carry
          // their transcendental or multi-operation derivative.
          const bool simple = op == UnaryOp::neg || op == UnaryOp::abs || op == UnaryOp::relu || op == UnaryOp::square;
          const int gx = c.out("gx", host_sentinel(s, dt), simple ? rounded_tol(dt) : transcendental_tol(dt));
          c.call = [op, x, y, gy, gx](Backend& be, Args& t) { be.unary_backward(op, t[x], t[y], t[gy], t[gx]); };
          run(c);
        }
}

const BinaryOp kBinaryOps[] = {BinaryOp::add, BinaryOp::sub, BinaryOp::mul,
                               BinaryOp::div, BinaryOp::max, BinaryOp::min};
// binary: one correctly rounded operation (max / min select): rounded tier. Same shapes, and a
// suffix operand broadcast over the leading dims of the other in both directions, including the
// [n, 1] x [1] form ops/device_scalar uses.
void binary_cases(const Sink& run) {
  Seq seed{7000};
  const std::vector<std::pair<Shape, Shape>> pairs = {
      {{0}, {0}},           {{1}, {1}},         {{33}, {33}},       {{1000}, {1000}}, {{3, 4097}, {3, 4097}},
      {{4, 1000}, {1000}},  {{1000}, {4, 1000}}, {{2, 3, 33}, {3, 33}}, {{3, 33}, {2, 3, 33}},
      {{50001, 1}, {1}},    {{1}, {5, 1}},       {{0, 7}, {7}},         {{7}, {0, 7}}};
  for (BinaryOp op : kBinaryOps)
    for (DType dt : kFloats) {
      for (const auto& [sa, sb] : pairs) {
        const Shape& big = is_suffix_of(sb, sa) ? sa : is_suffix_of(sa, sb) ? sb : sa;
        Case c("binary", dt_name(dt), sa.str() + " (op) " + sb.str(), binary_op_name(op));
        const int a = c.in(host_uniform(sa, dt, seed(), -4, 4));
        Tensor bv = host_uniform(sb, dt, seed(), -4, 4);
        if (op == BinaryOp::div) {  // divisors in +-[0.5, 2]
          std::vector<double> v = values_of(host_uniform(sb, DType::f64, seed(), 0.5, 2));
          for (std::size_t i = 1; i < v.size(); i += 2) v[i] = -v[i];
          bv = host_values(v, sb, dt);
        }
        const int b = c.in(bv);
        const int y = c.out("out", host_sentinel(big, dt), rounded_tol(dt));
        c.call = [op, a, b, y](Backend& be, Args& t) { be.binary(op, t[a], t[b], t[y]); };
        run(c);
      }
      if (op == BinaryOp::max || op == BinaryOp::min) continue;  // NaN handling of max / min is not specified
      const std::vector<double> a = {kInf, kInf, 0.0, 1.0, -1.0, kNaN, 0.0, kInf, -0.0};
      const std::vector<double> b = {-kInf, 1.0, 0.0, 0.0, 0.0, 1.0, kInf, kInf, 0.0};
      const Shape s{static_cast<std::int64_t>(a.size())};
      Case c("binary", dt_name(dt), s.str(), std::string(binary_op_name(op)) + " special values");
      const int ia = c.in(host_values(a, s, dt)), ib = c.in(host_values(b, s, dt));
      const int y = c.out("out", host_sentinel(s, dt), rounded_tol(dt).allow_nan());
      c.call = [op, ia, ib, y](Backend& be, Args& t) { be.binary(op, t[ia], t[ib], t[y]); };
      run(c);
    }
}

// affine: alpha x + beta, which the device may contract to an FMA: rounded tier with mag
// |alpha x| + |beta| (the sum cancels for some elements). Also in place (out aliases x).
void affine_cases(const Sink& run) {
  Seq seed{8000};
  const std::vector<std::pair<double, double>> coeffs = {{1, 0}, {-2.5, 0.75}, {0, 3}, {1e-3, -1}};
  for (DType dt : kFloats)
    for (const Shape& s : kElementwiseShapes)
      for (auto [alpha, beta] : coeffs)
        for (bool in_place : {false, true}) {
          const Tensor xv = host_uniform(s, dt, seed(), -4, 4);
          std::vector<double> mag = values_of(xv);
          for (double& m : mag) m = std::abs(alpha * m) + std::abs(beta);
          Case c("affine", dt_name(dt), s.str(),
                 "alpha " + num(alpha) + " beta " + num(beta) + (in_place ? " out == x" : ""));
          if (in_place) {
            const int y = c.out("out", xv, rounded_tol(dt), f64_tensor(mag, s));
            c.call = [y, alpha = alpha, beta = beta](Backend& be, Args& t) { be.affine(t[y], t[y], alpha, beta); };
          } else {
            const int x = c.in(xv);
            const int y = c.out("out", host_sentinel(s, dt), rounded_tol(dt), f64_tensor(mag, s));
            c.call = [x, y, alpha = alpha, beta = beta](Backend& be, Args& t) { be.affine(t[x], t[y], alpha, beta); };
          }
          run(c);
        }
}

// axpy: y + alpha x (an FMA on the device): rounded tier with mag |y| + |alpha x|.
void axpy_cases(const Sink& run) {
  Seq seed{9000};
  for (DType dt : kFloats)
    for (const Shape& s : kElementwiseShapes)
      for (double alpha : {1.0, -0.5, 0.0}) {
        const Tensor xv = host_uniform(s, dt, seed(), -4, 4), yv = host_uniform(s, dt, seed(), -4, 4);
        const std::vector<double> xs = values_of(xv), ys = values_of(yv);
        std::vector<double> mag(xs.size());
        for (std::size_t i = 0; i < xs.size(); ++i) mag[i] = std::abs(ys[i]) + std::abs(alpha * xs[i]);
        Case c("axpy", dt_name(dt), s.str(), "alpha " + num(alpha));
        const int x = c.in(xv);
        const int y = c.out("y", yv, rounded_tol(dt), f64_tensor(mag, s));
        c.call = [x, y, alpha](Backend& be, Args& t) { be.axpy(alpha, t[x], t[y]); };
        run(c);
      }
}

// pow_scalar: pow of the two math libraries (CUDA's powf is within 4 ulp): transcendental tier.
// Integer exponents on both signs, fractional ones on positive bases.
void pow_scalar_cases(const Sink& run) {
  Seq seed{10000};
  for (DType dt : kFloats)
    for (const Shape& s : kElementwiseShapes)
      for (double p : {2.0, 3.0, 0.5, -1.0, 1.5, -2.5, 0.0}) {
        const bool integer = p == std::floor(p);
        Case c("pow_scalar", dt_name(dt), s.str(), "p " + num(p));
        const int x = c.in(integer ? host_uniform(s, dt, seed(), -3, 3) : host_uniform(s, dt, seed(), 0.05, 4));
        const int y = c.out("out", host_sentinel(s, dt), transcendental_tol(dt));
        c.call = [x, y, p](Backend& be, Args& t) { be.pow_scalar(t[x], t[y], p); };
        run(c);
      }
}

// masked_fill: a select, exact. Masks of every numeric dtype, of x's shape or a suffix of it;
// float masks include -0 (equal to 0: filled) and integer masks negative values (kept).
void masked_fill_cases(const Sink& run) {
  Seq seed{11000};
  const std::vector<std::pair<Shape, Shape>> shapes = {{{33}, {33}},         {{4, 1000}, {1000}}, {{3, 4097}, {3, 4097}},
                                                       {{0, 5}, {5}},        {{1}, {1}},          {{2, 3, 33}, {3, 33}}};
  for (DType dt : kFloats)
    for (DType mt : kAllTypes)
      for (const auto& [xs, ms] : shapes)
        for (double value : {-kInf, 0.0, 2.5}) {
          std::vector<double> mv = values_of(host_ints(ms, DType::i64, seed(), 0, 4));
          const double pattern_f[4] = {0.0, -0.0, 0.5, -1.0};
          const double pattern_i[4] = {0.0, 1.0, -3.0, 0.0};
          for (double& m : mv) m = is_floating(mt) ? pattern_f[static_cast<int>(m)] : pattern_i[static_cast<int>(m)];
          Case c("masked_fill", dt_name(dt) + " mask " + dt_name(mt), xs.str() + " mask " + ms.str(),
                 "value " + num(value));
          const int x = c.in(host_uniform(xs, dt, seed(), -4, 4));
          const int m = c.in(host_values(mv, ms, mt));
          const int y = c.out("out", host_sentinel(xs, dt), exact_match());
          c.call = [x, m, y, value](Backend& be, Args& t) { be.masked_fill(t[x], t[m], value, t[y]); };
          run(c);
        }
}

// =================================================================================================
// reductions
// =================================================================================================

struct Axes {
  std::int64_t outer, axis, inner;
};
std::string axes_str(const Axes& a) {
  return "[" + std::to_string(a.outer) + ", " + std::to_string(a.axis) + ", " + std::to_string(a.inner) + "]";
}

// reduce: sum / mean in the reduction tier with mag = sum |x| (/ axis for mean): the device may
// sum in another order and in float. max selects: exact (an empty axis gives -inf on the CPU).
// inner == 1 and > 1, a long axis with few outer rows (the CPU's chunked path), an empty axis
// (sum 0, max -inf; the mean of nothing is not specified), and no outer rows.
void reduce_cases(const Sink& run) {
  Seq seed{12000};
  const std::vector<Axes> axes = {{0, 5, 3},    {1, 1, 1},   {3, 0, 4},   {1, 33, 1},  {7, 1000, 1}, {2, 50000, 1},
                                  {1, 4097, 3}, {5, 33, 7}, {3, 1, 1000}, {8, 300, 33}, {100, 65, 2}};
  for (ReduceOp op : {ReduceOp::sum, ReduceOp::mean, ReduceOp::max})
    for (DType dt : kFloats)
      for (const Axes& a : axes) {
        if (op == ReduceOp::mean && a.axis == 0) continue;
        const Tensor xv = host_uniform({a.outer, a.axis, a.inner}, dt, seed(), -1, 1);
        const std::vector<double> x = values_of(xv);
        std::vector<double> mag(static_cast<std::size_t>(a.outer * a.inner), 0.0);
        for (std::int64_t o = 0; o < a.outer; ++o)
          for (std::int64_t j = 0; j < a.axis; ++j)
            for (std::int64_t i = 0; i < a.inner; ++i)
              mag[static_cast<std::size_t>(o * a.inner + i)] +=
                  std::abs(x[static_cast<std::size_t>((o * a.axis + j) * a.inner + i)]);
        if (op == ReduceOp::mean)
          for (double& m : mag) m /= static_cast<double>(a.axis);
        const char* name = op == ReduceOp::sum ? "sum" : op == ReduceOp::mean ? "mean" : "max";
        Case c("reduce", dt_name(dt), axes_str(a), name);
        const int xi = c.in(xv);
        const Shape os{a.outer, a.inner};
        const int y = op == ReduceOp::max ? c.out("out", host_sentinel(os, dt), exact_match())
                                          : c.out("out", host_sentinel(os, dt), reduction_tol(dt), f64_tensor(mag, os));
        c.call = [op, a, xi, y](Backend& be, Args& t) { be.reduce(op, t[xi], t[y], a.outer, a.axis, a.inner); };
        run(c);
      }
}

// expand_axis: alpha x repeated, one multiplication: rounded tier.
void expand_axis_cases(const Sink& run) {
  Seq seed{13000};
  const std::vector<Axes> axes = {{0, 3, 2}, {1, 1, 1}, {2, 33, 5}, {3, 1000, 1}, {1, 4097, 2}, {4, 0, 3}, {2, 5, 1000}};
  for (DType dt : kFloats)
    for (const Axes& a : axes)
      for (double alpha : {1.0, -0.5}) {
        Case c("expand_axis", dt_name(dt), axes_str(a), "alpha " + num(alpha));
        const int x = c.in(host_uniform({a.outer, a.inner}, dt, seed(), -4, 4));
        const int y = c.out("out", host_sentinel({a.outer, a.axis, a.inner}, dt), rounded_tol(dt));
        c.call = [a, alpha, x, y](Backend& be, Args& t) { be.expand_axis(t[x], t[y], a.outer, a.axis, a.inner, alpha); };
        run(c);
      }
}

// sum_squares into one f64: every square of an f32 or f64 element is exact in double (f32) or one
// rounding (f64), and a double sum of N non-negative terms in any order is within N u of the
// exact sum (a rigorous bound, no cancellation): rtol = (N + 4) eps(f64). Summing in float fails it.
void sum_squares_cases(const Sink& run) {
  Seq seed{14000};
  using List = std::vector<std::pair<DType, Shape>>;
  std::vector<std::pair<std::string, List>> lists = {{"none", {}}};
  for (DType dt : kFloats) {
    lists.push_back({dt_name(dt), {{dt, {0}}}});
    lists.push_back({dt_name(dt), {{dt, {1}}}});
    lists.push_back({dt_name(dt), {{dt, {33}}, {dt, {1000, 3}}, {dt, {0}}, {dt, {50001}}}});
  }
  lists.push_back({"mixed", {{DType::f32, {1000}}, {DType::f64, {33}}, {DType::f32, {7}}}});
  for (const auto& [what, list] : lists) {
    std::string shape;
    std::int64_t total = 0;
    Case c("sum_squares", what, "", "");
    std::vector<int> xs;
    for (const auto& [dt, s] : list) {
      shape += (shape.empty() ? "" : " ") + std::string(dt_name(dt)) + s.str();
      total += s.numel();
      xs.push_back(c.in(host_normal(s, dt, seed(), 0, 1)));
    }
    c.shape = shape.empty() ? "no tensors" : shape;
    Tolerance tol;
    tol.rtol = static_cast<double>(total + 4) * eps_of(DType::f64);
    const int y = c.out("out", host_sentinel({1}, DType::f64), tol);
    c.call = [xs, y](Backend& be, Args& t) {
      std::vector<Tensor> v;
      for (int i : xs) v.push_back(t[i]);
      be.sum_squares(v, t[y]);
    };
    run(c);
  }
}

// =================================================================================================
// layout
// =================================================================================================

// permute: data movement of every dtype, exact. Ranks 1 to 6, size-1 dims, tile edges (33 x 65),
// the attention head split and the ViT patchify permutation.
void permute_cases(const Sink& run) {
  Seq seed{15000};
  const std::vector<std::pair<Shape, std::vector<int>>> perms = {
      {{5}, {0}},                   {{3, 4}, {1, 0}},          {{2, 3, 4}, {0, 2, 1}},
      {{2, 3, 4}, {2, 1, 0}},       {{2, 3, 4}, {1, 0, 2}},    {{2, 3, 4, 5}, {0, 2, 1, 3}},
      {{2, 3, 4, 5}, {3, 2, 1, 0}}, {{2, 1, 3, 1, 4}, {4, 2, 0, 3, 1}}, {{2, 3, 2, 2, 3, 2}, {0, 2, 4, 1, 3, 5}},
      {{33, 65}, {1, 0}},           {{0, 3}, {1, 0}},          {{1, 1}, {1, 0}},
      {{17, 33, 9}, {2, 0, 1}},     {{4, 1000}, {1, 0}},       {{2, 4, 3, 8}, {0, 2, 1, 3}}};
  for (DType dt : kAllTypes)
    for (const auto& [s, perm] : perms) {
      Shape os;
      std::string ps;
      for (int p : perm) {
        os.push_back(s[p]);
        ps += (ps.empty() ? "" : ",") + std::to_string(p);
      }
      Case c("permute", dt_name(dt), s.str(), "perm (" + ps + ")");
      const int x = c.in(is_floating(dt) ? host_uniform(s, dt, seed(), -4, 4) : host_ints(s, dt, seed(), -1000, 1000));
      const int y = c.out("out", host_sentinel(os, dt), exact_match());
      c.call = [x, y, perm = perm](Backend& be, Args& t) { be.permute(t[x], t[y], perm.data()); };
      run(c);
    }
}

struct Slab {
  std::int64_t outer, src_axis, src_off, dst_axis, dst_off, len, inner;
};

// copy_axis: a copy (every dtype, exact) or an accumulation (floats, one addition: rounded tier
// with mag |dst| + |src|). dst starts from data that must survive outside the slab.
void copy_axis_cases(const Sink& run) {
  Seq seed{16000};
  const std::vector<Slab> slabs = {{1, 5, 1, 7, 2, 3, 4},     {3, 10, 0, 10, 0, 10, 1},        {2, 33, 5, 40, 7, 20, 33},
                                   {4, 8, 8, 8, 0, 0, 3},     {0, 3, 0, 3, 0, 3, 2},           {2, 4097, 0, 5000, 903, 4097, 1},
                                   {1, 3, 1, 2, 0, 1, 50000}, {3, 4, 0, 4, 0, 4, 0}};
  for (bool acc : {false, true})
    for (DType dt : kAllTypes) {
      if (acc && !is_floating(dt)) continue;
      for (const Slab& b : slabs) {
        const Shape ss{b.outer, b.src_axis, b.inner}, ds{b.outer, b.dst_axis, b.inner};
        auto make = [&](const Shape& s) {
          return is_floating(dt) ? host_uniform(s, dt, seed(), -4, 4) : host_ints(s, dt, seed(), -1000, 1000);
        };
        const Tensor src = make(ss), dst = make(ds);
        Tolerance tol = exact_match();
        Tensor mag;
        if (acc) {
          tol = rounded_tol(dt);
          std::vector<double> m = values_of(dst);
          const std::vector<double> sv = values_of(src);
          for (double& v : m) v = std::abs(v);
          for (std::int64_t o = 0; o < b.outer; ++o)
            for (std::int64_t j = 0; j < b.len; ++j)
              for (std::int64_t i = 0; i < b.inner; ++i)
                m[static_cast<std::size_t>((o * b.dst_axis + b.dst_off + j) * b.inner + i)] +=
                    std::abs(sv[static_cast<std::size_t>((o * b.src_axis + b.src_off + j) * b.inner + i)]);
          mag = f64_tensor(m, ds);
        }
        std::ostringstream shape;
        shape << "src " << ss.str() << " at " << b.src_off << " -> dst " << ds.str() << " at " << b.dst_off << ", len "
              << b.len;
        Case c("copy_axis", dt_name(dt), shape.str(), acc ? "accumulate" : "copy");
        const int si = c.in(src);
        const int di = c.out("dst", dst, tol, mag);
        c.call = [b, si, di, acc](Backend& be, Args& t) {
          be.copy_axis(t[si], b.src_axis, b.src_off, t[di], b.dst_axis, b.dst_off, b.outer, b.len, b.inner, acc);
        };
        run(c);
      }
    }
}

// =================================================================================================
// rows: softmax family, causal mask, cross-entropy
// =================================================================================================

// Row inputs: normal(0, 3); "offset": + 1000 (exp would overflow without the row max); "masked":
// -inf at every 4th column from 1 (attention masks; softmax gives exactly 0 there, log_softmax
// -inf), never a whole row.
enum class RowValues { plain, offset, masked };
const char* row_values_name(RowValues v) {
  return v == RowValues::plain ? "normal(0, 3)" : v == RowValues::offset ? "normal(1000, 3)" : "-inf every 4th";
}
Tensor row_input(const Shape& s, DType dt, std::uint64_t seed, RowValues kind) {
  Tensor x = host_normal(s, DType::f64, seed, kind == RowValues::offset ? 1000.0 : 0.0, 3.0);
  if (kind == RowValues::masked) {
    std::vector<double> v = values_of(x);
    const std::int64_t cols = s.dim(-1);
    if (cols >= 2)
      for (std::size_t i = 0; i < v.size(); ++i)
        if (static_cast<std::int64_t>(i) % cols % 4 == 1) v[i] = -kInf;
    x = host_values(v, s, DType::f64);
  }
  return x.to(dt);
}

// softmax: every output is exp(x - max) / sum, all terms positive, so its relative error is that
// of exp (a few ulp) plus that of the sum: rtol = reduction tier (atol 1e-30 for exp underflowing
// to 0 on one side and to a denormal on the other).
// log_softmax: (x - max) - log(sum), both terms <= 0, so |y| is the magnitude: rtol 4 eps for the
// roundings, atol = reduction tier for the relative error of the sum (an absolute error of its log).
void softmax_family_cases(const Sink& run, bool log) {
  Seq seed{log ? 17000ull : 18000ull};
  for (DType dt : kFloats)
    for (const Shape& s : kRowShapes)
      for (RowValues kind : {RowValues::plain, RowValues::offset, RowValues::masked}) {
        Case c(log ? "log_softmax" : "softmax", dt_name(dt), s.str(), row_values_name(kind));
        Tolerance tol;
        if (log) {
          tol.rtol = 4.0 * eps_of(dt);
          tol.atol = reduction_rel(dt);
        } else {
          tol.rtol = reduction_rel(dt);
          tol.atol = 1e-30;
        }
        const int x = c.in(row_input(s, dt, seed(), kind));
        const int y = c.out("y", host_sentinel(s, dt), tol);
        c.call = [x, y, log](Backend& be, Args& t) {
          if (log) be.log_softmax(t[x], t[y]);
          else be.softmax(t[x], t[y]);
        };
        run(c);
      }
}
void softmax_cases(const Sink& run) { softmax_family_cases(run, false); }
void log_softmax_cases(const Sink& run) { softmax_family_cases(run, true); }

// softmax_backward: gx = y (gy - sum_k gy_k y_k); the row sum cancels, so mag_j = |y_j| (|gy_j| +
// sum_k |gy_k y_k|) in the reduction tier. log_softmax_backward: gx = gy - exp(y) sum_k gy_k, mag_j
// = |gy_j| + exp(y_j) sum_k |gy_k|. y comes from the CPU's forward.
void softmax_backward_family_cases(const Sink& run, bool log) {
  Seq seed{log ? 19000ull : 20000ull};
  for (DType dt : kFloats)
    for (const Shape& s : kRowShapes) {
      const RowsCols rc = rows_cols(s);
      const Tensor xv = row_input(s, dt, seed(), RowValues::plain);
      Tensor yv = Tensor::empty(s, dt, Device::cpu);
      if (log) cpu().log_softmax(xv, yv);
      else cpu().softmax(xv, yv);
      const Tensor gv = host_uniform(s, dt, seed(), -1, 1);
      const std::vector<double> y = values_of(yv), g = values_of(gv);
      std::vector<double> mag(y.size());
      for (std::int64_t r = 0; r < rc.rows; ++r) {
        double row = 0.0;
        for (std::int64_t j = 0; j < rc.cols; ++j) {
          const auto e = static_cast<std::size_t>(r * rc.cols + j);
          row += log ? std::abs(g[e]) : std::abs(g[e] * y[e]);
        }
        for (std::int64_t j = 0; j < rc.cols; ++j) {
          const auto e = static_cast<std::size_t>(r * rc.cols + j);
          mag[e] = log ? std::abs(g[e]) + std::exp(y[e]) * row : std::abs(y[e]) * (std::abs(g[e]) + row);
        }
      }
      Tolerance tol;
      tol.rtol = 4.0 * eps_of(dt);
      tol.mtol = reduction_rel(dt);
      Case c(log ? "log_softmax_backward" : "softmax_backward", dt_name(dt), s.str());
      const int yi = c.in(yv), gi = c.in(gv);
      const int gx = c.out("gx", host_sentinel(s, dt), tol, f64_tensor(mag, s));
      c.call = [yi, gi, gx, log](Backend& be, Args& t) {
        if (log) be.log_softmax_backward(t[yi], t[gi], t[gx]);
        else be.softmax_backward(t[yi], t[gi], t[gx]);
      };
      run(c);
    }
}
void softmax_backward_cases(const Sink& run) { softmax_backward_family_cases(run, false); }
void log_softmax_backward_cases(const Sink& run) { softmax_backward_family_cases(run, true); }

// causal_mask: entries set to -inf or untouched, exact. t == s, s > t (decoding), t > s (whole
// rows masked), a long key axis, and an empty batch.
void causal_mask_cases(const Sink& run) {
  Seq seed{21000};
  const std::vector<std::array<std::int64_t, 3>> dims = {{1, 1, 1}, {2, 4, 4},     {3, 5, 8}, {2, 8, 5},
                                                         {1, 33, 4097}, {4, 65, 65}, {0, 3, 3}};
  for (DType dt : kFloats)
    for (const auto& [b, tq, sk] : dims) {
      Case c("causal_mask", dt_name(dt), "[" + std::to_string(b) + ", " + std::to_string(tq) + ", " + std::to_string(sk) + "]");
      const int x = c.out("scores", host_normal({b, tq, sk}, dt, seed(), 0, 1), exact_match());
      c.call = [x, tq = tq, sk = sk](Backend& be, Args& t) { be.causal_mask(t[x], tq, sk); };
      run(c);
    }
}

struct CrossEntropySpec {
  std::int64_t rows, classes;
};
const std::vector<CrossEntropySpec> kCrossEntropyShapes = {{0, 5},    {1, 1},     {4, 33}, {7, 1000},
                                                           {3, 4097}, {2, 50000}, {64, 10}};

// Targets in [0, C); with ignore_index -100 every third row is ignored, with ignore_index 2 the
// rows whose target is class 2 are (row 0 is made one when C > 2).
Tensor ce_targets(std::int64_t rows, std::int64_t classes, std::int64_t ignore, std::uint64_t seed) {
  std::vector<double> v = values_of(host_ints({rows}, DType::i64, seed, 0, classes));
  for (std::int64_t r = 0; r < rows; ++r) {
    if (ignore < 0 && r % 3 == 1) v[static_cast<std::size_t>(r)] = static_cast<double>(ignore);
    if (ignore == 2 && r == 0 && classes > 2) v[0] = 2.0;
  }
  return host_values(v, {rows}, DType::i64);
}

// Per row of the logits (in double): max, log sum exp(x - max), sum |x|.
struct RowStats {
  std::vector<double> max, log_sum, abs_sum;
};
RowStats row_stats(const std::vector<double>& x, std::int64_t rows, std::int64_t cols) {
  RowStats st;
  for (std::int64_t r = 0; r < rows; ++r) {
    const double* xr = x.data() + r * cols;
    double m = -kInf, s = 0.0, a = 0.0;
    for (std::int64_t j = 0; j < cols; ++j) m = std::max(m, xr[j]);
    for (std::int64_t j = 0; j < cols; ++j) {
      s += std::exp(xr[j] - m);
      a += std::abs(xr[j]);
    }
    st.max.push_back(m);
    st.log_sum.push_back(std::log(s));
    st.abs_sum.push_back(a);
  }
  return st;
}

// cross_entropy: lse = max + log(sum) and loss = lse - (1 - eps) x_t - (eps / C) sum x, which can
// cancel: reduction tier with mag |max| + log(sum) + 1 for lse (the +1 bounds the sum's relative
// error seen as an absolute error of its log) and that plus (1 - eps)|x_t| + (eps / C) sum|x| for
// the loss. Ignored rows must be exactly 0 (mag 0).
void cross_entropy_cases(const Sink& run) {
  Seq seed{22000};
  for (DType dt : kFloats)
    for (const CrossEntropySpec& sp : kCrossEntropyShapes)
      for (std::int64_t ignore : {std::int64_t{-100}, std::int64_t{2}})
        for (double eps : {0.0, 0.1}) {
          const Shape s{sp.rows, sp.classes};
          const Tensor xv = host_normal(s, dt, seed(), 0, 2);
          const Tensor tv = ce_targets(sp.rows, sp.classes, ignore, seed());
          const std::vector<double> x = values_of(xv), tg = values_of(tv);
          const RowStats st = row_stats(x, sp.rows, sp.classes);
          std::vector<double> mag_lse, mag_loss;
          for (std::int64_t r = 0; r < sp.rows; ++r) {
            const auto k = static_cast<std::size_t>(r);
            const double l = std::abs(st.max[k]) + st.log_sum[k] + 1.0;
            mag_lse.push_back(l);
            const auto t = static_cast<std::int64_t>(tg[k]);
            mag_loss.push_back(t == ignore ? 0.0
                                           : l + (1.0 - eps) * std::abs(x[static_cast<std::size_t>(r * sp.classes + t)]) +
                                                 eps / static_cast<double>(sp.classes) * st.abs_sum[k]);
          }
          Case c("cross_entropy", dt_name(dt), s.str(), "ignore_index " + std::to_string(ignore) + " smoothing " + num(eps));
          const int xi = c.in(xv), ti = c.in(tv);
          const int loss = c.out("losses", host_sentinel({sp.rows}, dt), reduction_tol(dt), f64_tensor(mag_loss, {sp.rows}));
          const int lse = c.out("lse", host_sentinel({sp.rows}, dt), reduction_tol(dt), f64_tensor(mag_lse, {sp.rows}));
          c.call = [xi, ti, loss, lse, ignore, eps](Backend& be, Args& t) {
            be.cross_entropy(t[xi], t[ti], ignore, eps, t[loss], t[lse]);
          };
          run(c);
        }
}

// cross_entropy_backward: scale (exp(x - lse) - q) per element, with lse from the CPU's forward.
// exp of the same argument on both sides, then one subtraction that cancels at the target:
// mtol = transcendental tier with mag |scale| (p_j + q_j); ignored rows exactly 0.
void cross_entropy_backward_cases(const Sink& run) {
  Seq seed{23000};
  for (DType dt : kFloats)
    for (const CrossEntropySpec& sp : kCrossEntropyShapes)
      for (std::int64_t ignore : {std::int64_t{-100}, std::int64_t{2}})
        for (double eps : {0.0, 0.1})
          for (double scale : {1.0, -0.25}) {
            const Shape s{sp.rows, sp.classes};
            const Tensor xv = host_normal(s, dt, seed(), 0, 2);
            const Tensor tv = ce_targets(sp.rows, sp.classes, ignore, seed());
            Tensor losses = Tensor::empty({sp.rows}, dt, Device::cpu), lse = Tensor::empty({sp.rows}, dt, Device::cpu);
            cpu().cross_entropy(xv, tv, ignore, eps, losses, lse);
            const std::vector<double> x = values_of(xv), tg = values_of(tv), e = values_of(lse);
            std::vector<double> mag(x.size(), 0.0);
            for (std::int64_t r = 0; r < sp.rows; ++r) {
              const auto t = static_cast<std::int64_t>(tg[static_cast<std::size_t>(r)]);
              if (t == ignore) continue;
              for (std::int64_t j = 0; j < sp.classes; ++j) {
                const auto k = static_cast<std::size_t>(r * sp.classes + j);
                const double q = (j == t ? 1.0 - eps : 0.0) + eps / static_cast<double>(sp.classes);
                mag[k] = std::abs(scale) * (std::exp(x[k] - e[static_cast<std::size_t>(r)]) + q);
              }
            }
            Tolerance tol;
            tol.rtol = 4.0 * eps_of(dt);
            tol.mtol = transcendental_rel(dt);
            Case c("cross_entropy_backward", dt_name(dt), s.str(),
                   "ignore_index " + std::to_string(ignore) + " smoothing " + num(eps) + " scale " + num(scale));
            const int xi = c.in(xv), ti = c.in(tv), li = c.in(lse);
            const int g = c.out("glogits", host_sentinel(s, dt), tol, f64_tensor(mag, s));
            c.call = [xi, ti, li, g, ignore, eps, scale](Backend& be, Args& t) {
              be.cross_entropy_backward(t[xi], t[ti], t[li], ignore, eps, scale, t[g]);
            };
            run(c);
          }
}

// =================================================================================================
// norms
// =================================================================================================

// Norm shapes: D = 1 (zero variance), odd widths, long rows, many rows, 3-D; no rows.
const std::vector<Shape> kNormShapes = {{0, 8},     {1, 1},     {3, 33},  {5, 1000}, {2, 4097},
                                        {2, 50000}, {2, 3, 33}, {300, 65}, {7, 1}};
// The backward kernels take the same shapes; with no rows, ggamma / gbeta are exact zeros.
const std::vector<Shape>& kNormBackwardShapes = kNormShapes;

struct NormRow {
  double mean = 0, rstd = 0, mean_abs = 0;
};
std::vector<NormRow> norm_rows(const std::vector<double>& x, std::int64_t rows, std::int64_t d, double eps, bool rms) {
  std::vector<NormRow> out;
  for (std::int64_t r = 0; r < rows; ++r) {
    const double* xr = x.data() + r * d;
    NormRow n;
    for (std::int64_t j = 0; j < d; ++j) {
      n.mean += xr[j];
      n.mean_abs += std::abs(xr[j]);
    }
    n.mean /= static_cast<double>(d);
    n.mean_abs /= static_cast<double>(d);
    double sq = 0.0;
    for (std::int64_t j = 0; j < d; ++j) sq += rms ? xr[j] * xr[j] : (xr[j] - n.mean) * (xr[j] - n.mean);
    n.rstd = 1.0 / std::sqrt(sq / static_cast<double>(d) + eps);
    out.push_back(n);
  }
  return out;
}

// layernorm: statistics in the reduction tier. mean: mag mean|x|; rstd: relative (a variance of
// squares has no cancellation when computed around the mean); y = (x - mean) rstd gamma + beta:
// mag |gamma| rstd (|x - mean| + mean|x|) + |beta|, which covers the mean's error scaled by rstd.
// Rows with offset 10 catch a one-pass E[x^2] - E[x]^2 variance in float (off by ~1e-4).
void layernorm_cases(const Sink& run) {
  Seq seed{24000};
  const double eps = 1e-5;
  for (DType dt : kFloats)
    for (const Shape& s : kNormShapes)
      for (int affine = 0; affine < 3; ++affine)  // gamma and beta, neither, gamma only
        for (double offset : {0.0, 10.0}) {
          const RowsCols rc = rows_cols(s);
          const Tensor xv = host_normal(s, dt, seed(), offset, 1.0);
          const Tensor gv = affine != 1 ? host_uniform({rc.cols}, dt, seed(), 0.5, 1.5) : Tensor();
          const Tensor bv = affine == 0 ? host_uniform({rc.cols}, dt, seed(), -0.5, 0.5) : Tensor();
          const std::vector<double> x = values_of(xv);
          const std::vector<double> g = gv.defined() ? values_of(gv) : std::vector<double>(static_cast<std::size_t>(rc.cols), 1.0);
          const std::vector<double> b = bv.defined() ? values_of(bv) : std::vector<double>(static_cast<std::size_t>(rc.cols), 0.0);
          const std::vector<NormRow> st = norm_rows(x, rc.rows, rc.cols, eps, false);
          std::vector<double> mag_y(x.size()), mag_mean;
          for (std::int64_t r = 0; r < rc.rows; ++r) {
            const NormRow& n = st[static_cast<std::size_t>(r)];
            mag_mean.push_back(n.mean_abs);
            for (std::int64_t j = 0; j < rc.cols; ++j) {
              const auto k = static_cast<std::size_t>(r * rc.cols + j);
              mag_y[k] = std::abs(g[static_cast<std::size_t>(j)]) * n.rstd * (std::abs(x[k] - n.mean) + n.mean_abs) +
                         std::abs(b[static_cast<std::size_t>(j)]);
            }
          }
          const char* names[3] = {"gamma, beta", "no affine", "gamma only"};
          Case c("layernorm", dt_name(dt), s.str(), std::string(names[affine]) + ", rows normal(" + num(offset) + ", 1)");
          const Shape rs{rc.rows};
          Tolerance tol_y, tol_mean, tol_rstd;
          tol_y.rtol = tol_mean.rtol = 4.0 * eps_of(dt);
          tol_y.mtol = tol_mean.mtol = reduction_rel(dt);
          tol_rstd.rtol = reduction_rel(dt);
          const int xi = c.in(xv), gi = c.in(gv), bi = c.in(bv);
          const int y = c.out("y", host_sentinel(s, dt), tol_y, f64_tensor(mag_y, s));
          const int mean = c.out("mean", host_sentinel(rs, dt), tol_mean, f64_tensor(mag_mean, rs));
          const int rstd = c.out("rstd", host_sentinel(rs, dt), tol_rstd);
          c.call = [xi, gi, bi, y, mean, rstd, eps](Backend& be, Args& t) {
            be.layernorm(t[xi], t[gi], t[bi], eps, t[y], t[mean], t[rstd]);
          };
          run(c);
        }
}

// layernorm_backward with mean / rstd from the CPU's forward. With xhat = (x - mean) rstd and
// g = gy gamma: gx = rstd (g - mean(g) - xhat mean(g xhat)) cancels, so mag = rstd (|g| + mean|g|
// + (|xhat| + rstd mean|x|) mean|g xhat|) (the rstd mean|x| term: the rounding of x - mean for
// rows far from 0); ggamma = sum_rows gy xhat with mag sum |gy| (|xhat| + 1); gbeta = sum_rows gy
// with mag sum |gy|; all in the reduction tier.
void layernorm_backward_cases(const Sink& run) {
  Seq seed{25000};
  const double eps = 1e-5;
  for (DType dt : kFloats)
    for (const Shape& s : kNormBackwardShapes)
      for (int variant = 0; variant < 3; ++variant)  // (gamma, ggamma, gbeta), (none), (gamma, ggamma)
        for (double offset : {0.0, 10.0}) {
          const RowsCols rc = rows_cols(s);
          const bool has_gamma = variant != 1, want_gg = variant != 1, want_gb = variant == 0;
          const Tensor xv = host_normal(s, dt, seed(), offset, 1.0);
          const Tensor gamma = has_gamma ? host_uniform({rc.cols}, dt, seed(), 0.5, 1.5) : Tensor();
          const Shape rs{rc.rows};
          Tensor y = Tensor::empty(s, dt, Device::cpu), mean = Tensor::empty(rs, dt, Device::cpu),
                 rstd = Tensor::empty(rs, dt, Device::cpu);
          cpu().layernorm(xv, gamma, Tensor(), eps, y, mean, rstd);
          const Tensor gyv = host_uniform(s, dt, seed(), -1, 1);
          const std::vector<double> x = values_of(xv), gy = values_of(gyv), mv = values_of(mean), kv = values_of(rstd);
          const std::vector<double> gam =
              has_gamma ? values_of(gamma) : std::vector<double>(static_cast<std::size_t>(rc.cols), 1.0);
          std::vector<double> mag_gx(x.size()), mag_gg(static_cast<std::size_t>(rc.cols), 0.0),
              mag_gb(static_cast<std::size_t>(rc.cols), 0.0);
          for (std::int64_t r = 0; r < rc.rows; ++r) {
            const double m = mv[static_cast<std::size_t>(r)], k = kv[static_cast<std::size_t>(r)];
            double mean_g = 0, mean_gx = 0, mean_x = 0;
            for (std::int64_t j = 0; j < rc.cols; ++j) {
              const auto e = static_cast<std::size_t>(r * rc.cols + j);
              const double xh = (x[e] - m) * k, g = gy[e] * gam[static_cast<std::size_t>(j)];
              mean_g += std::abs(g);
              mean_gx += std::abs(g * xh);
              mean_x += std::abs(x[e]);
              mag_gg[static_cast<std::size_t>(j)] += std::abs(gy[e]) * (std::abs(xh) + 1.0);
              mag_gb[static_cast<std::size_t>(j)] += std::abs(gy[e]);
            }
            const double inv = 1.0 / static_cast<double>(rc.cols);
            mean_g *= inv;
            mean_gx *= inv;
            mean_x *= inv;
            for (std::int64_t j = 0; j < rc.cols; ++j) {
              const auto e = static_cast<std::size_t>(r * rc.cols + j);
              const double xh = (x[e] - m) * k, g = gy[e] * gam[static_cast<std::size_t>(j)];
              mag_gx[e] = k * (std::abs(g) + mean_g + (std::abs(xh) + k * mean_x) * mean_gx);
            }
          }
          Tolerance tol;
          tol.rtol = 4.0 * eps_of(dt);
          tol.mtol = reduction_rel(dt);
          const char* names[3] = {"gamma; ggamma, gbeta", "no gamma, no parameter gradients", "gamma; ggamma only"};
          Case c("layernorm_backward", dt_name(dt), s.str(), std::string(names[variant]) + ", rows normal(" + num(offset) + ", 1)");
          const Shape ds{rc.cols};
          const int xi = c.in(xv), gi = c.in(gamma), mi = c.in(mean), ki = c.in(rstd), gyi = c.in(gyv);
          const int gx = c.out("gx", host_sentinel(s, dt), tol, f64_tensor(mag_gx, s));
          const int gg = want_gg ? c.out("ggamma", host_sentinel(ds, dt), tol, f64_tensor(mag_gg, ds)) : -1;
          const int gb = want_gb ? c.out("gbeta", host_sentinel(ds, dt), tol, f64_tensor(mag_gb, ds)) : -1;
          c.call = [xi, gi, mi, ki, gyi, gx, gg, gb](Backend& be, Args& t) {
            Tensor none_g, none_b;
            be.layernorm_backward(t[xi], t[gi], t[mi], t[ki], t[gyi], t[gx], gg >= 0 ? t[gg] : none_g,
                                  gb >= 0 ? t[gb] : none_b);
          };
          run(c);
        }
}

// rmsnorm: y = x rstd gamma with mag |x rstd gamma| (rstd's relative error carries over) and rstd
// relative, both in the reduction tier.
void rmsnorm_cases(const Sink& run) {
  Seq seed{26000};
  const double eps = 1e-6;
  for (DType dt : kFloats)
    for (const Shape& s : kNormShapes)
      for (bool has_gamma : {true, false})
        for (double offset : {0.0, 3.0}) {
          const RowsCols rc = rows_cols(s);
          const Tensor xv = host_normal(s, dt, seed(), offset, 1.0);
          const Tensor gv = has_gamma ? host_uniform({rc.cols}, dt, seed(), 0.5, 1.5) : Tensor();
          const std::vector<double> x = values_of(xv);
          const std::vector<double> g =
              has_gamma ? values_of(gv) : std::vector<double>(static_cast<std::size_t>(rc.cols), 1.0);
          const std::vector<NormRow> st = norm_rows(x, rc.rows, rc.cols, eps, true);
          std::vector<double> mag(x.size());
          for (std::int64_t r = 0; r < rc.rows; ++r)
            for (std::int64_t j = 0; j < rc.cols; ++j) {
              const auto k = static_cast<std::size_t>(r * rc.cols + j);
              mag[k] = std::abs(x[k] * g[static_cast<std::size_t>(j)]) * st[static_cast<std::size_t>(r)].rstd;
            }
          Case c("rmsnorm", dt_name(dt), s.str(), std::string(has_gamma ? "gamma" : "no gamma") + ", rows normal(" + num(offset) + ", 1)");
          const Shape rs{rc.rows};
          Tolerance tol_y, tol_r;
          tol_y.rtol = 4.0 * eps_of(dt);
          tol_y.mtol = tol_r.rtol = reduction_rel(dt);
          const int xi = c.in(xv), gi = c.in(gv);
          const int y = c.out("y", host_sentinel(s, dt), tol_y, f64_tensor(mag, s));
          const int rstd = c.out("rstd", host_sentinel(rs, dt), tol_r);
          c.call = [xi, gi, y, rstd, eps](Backend& be, Args& t) { be.rmsnorm(t[xi], t[gi], eps, t[y], t[rstd]); };
          run(c);
        }
}

// rmsnorm_backward with rstd from the CPU's forward: xhat = x rstd, g = gy gamma,
// gx = rstd (g - xhat mean(g xhat)) with mag rstd (|g| + |xhat| mean|g xhat|); ggamma = sum_rows
// gy xhat with mag sum |gy xhat|; reduction tier.
void rmsnorm_backward_cases(const Sink& run) {
  Seq seed{27000};
  const double eps = 1e-6;
  for (DType dt : kFloats)
    for (const Shape& s : kNormBackwardShapes)
      for (int variant = 0; variant < 3; ++variant) {  // (gamma, ggamma), (none), (gamma, no ggamma)
        const RowsCols rc = rows_cols(s);
        const bool has_gamma = variant != 1, want_gg = variant == 0;
        const Tensor xv = host_normal(s, dt, seed(), 0.5, 1.0);
        const Tensor gamma = has_gamma ? host_uniform({rc.cols}, dt, seed(), 0.5, 1.5) : Tensor();
        const Shape rs{rc.rows};
        Tensor y = Tensor::empty(s, dt, Device::cpu), rstd = Tensor::empty(rs, dt, Device::cpu);
        cpu().rmsnorm(xv, gamma, eps, y, rstd);
        const Tensor gyv = host_uniform(s, dt, seed(), -1, 1);
        const std::vector<double> x = values_of(xv), gy = values_of(gyv), kv = values_of(rstd);
        const std::vector<double> gam =
            has_gamma ? values_of(gamma) : std::vector<double>(static_cast<std::size_t>(rc.cols), 1.0);
        std::vector<double> mag_gx(x.size()), mag_gg(static_cast<std::size_t>(rc.cols), 0.0);
        for (std::int64_t r = 0; r < rc.rows; ++r) {
          const double k = kv[static_cast<std::size_t>(r)];
          double mean_gx = 0;
          for (std::int64_t j = 0; j < rc.cols; ++j) {
            const auto e = static_cast<std::size_t>(r * rc.cols + j);
            mean_gx += std::abs(gy[e] * gam[static_cast<std::size_t>(j)] * x[e] * k);
            mag_gg[static_cast<std::size_t>(j)] += std::abs(gy[e] * x[e] * k);
          }
          mean_gx /= static_cast<double>(rc.cols);
          for (std::int64_t j = 0; j < rc.cols; ++j) {
            const auto e = static_cast<std::size_t>(r * rc.cols + j);
            mag_gx[e] = k * (std::abs(gy[e] * gam[static_cast<std::size_t>(j)]) + std::abs(x[e] * k) * mean_gx);
          }
        }
        Tolerance tol;
        tol.rtol = 4.0 * eps_of(dt);
        tol.mtol = reduction_rel(dt);
        const char* names[3] = {"gamma; ggamma", "no gamma, no ggamma", "gamma; no ggamma"};
        Case c("rmsnorm_backward", dt_name(dt), s.str(), names[variant]);
        const Shape ds{rc.cols};
        const int xi = c.in(xv), gi = c.in(gamma), ki = c.in(rstd), gyi = c.in(gyv);
        const int gx = c.out("gx", host_sentinel(s, dt), tol, f64_tensor(mag_gx, s));
        const int gg = want_gg ? c.out("ggamma", host_sentinel(ds, dt), tol, f64_tensor(mag_gg, ds)) : -1;
        c.call = [xi, gi, ki, gyi, gx, gg](Backend& be, Args& t) {
          Tensor none;
          be.rmsnorm_backward(t[xi], t[gi], t[ki], t[gyi], t[gx], gg >= 0 ? t[gg] : none);
        };
        run(c);
      }
}

// =================================================================================================
// indexing
// =================================================================================================

struct RowsSpec {
  std::int64_t v, d;
  Shape idx;
};
const std::vector<RowsSpec> kRowsSpecs = {{1, 1, {0}},     {1, 1, {1}},        {5, 33, {40}},
                                          {1000, 7, {4097}}, {50, 1000, {10}}, {3, 4, {3, 11}}};

// gather_rows: copies, exact. Indices of both dtypes, repeated, of any shape.
void gather_rows_cases(const Sink& run) {
  Seq seed{28000};
  for (DType dt : kFloats)
    for (DType it : kIndexTypes)
      for (const RowsSpec& sp : kRowsSpecs) {
        Case c("gather_rows", dt_name(dt) + " idx " + dt_name(it), "table [" + std::to_string(sp.v) + ", " +
                                                                        std::to_string(sp.d) + "] idx " + sp.idx.str());
        const int tab = c.in(host_uniform({sp.v, sp.d}, dt, seed(), -4, 4));
        const int idx = c.in(host_ints(sp.idx, it, seed(), 0, sp.v));
        const int y = c.out("out", host_sentinel({sp.idx.numel(), sp.d}, dt), exact_match());
        c.call = [tab, idx, y](Backend& be, Args& t) { be.gather_rows(t[tab], t[idx], t[y]); };
        run(c);
      }
}

// Magnitude of out[idx[i], :] += src[i, :] (index_add_rows / scatter_add_last): the additions into
// one element happen in any order (atomics on the device), count + 1 roundings of at most the sum
// of |terms| each, so mag = (count + 1)(|out| + sum |src|) in the rounded tier.
std::vector<double> scatter_magnitude(const std::vector<double>& out0, const std::vector<double>& src,
                                      const std::vector<std::size_t>& target) {
  std::vector<double> sum(out0.size()), count(out0.size(), 0.0);
  for (std::size_t e = 0; e < out0.size(); ++e) sum[e] = std::abs(out0[e]);
  for (std::size_t i = 0; i < src.size(); ++i) {
    sum[target[i]] += std::abs(src[i]);
    count[target[i]] += 1.0;
  }
  for (std::size_t e = 0; e < sum.size(); ++e) sum[e] *= count[e] + 1.0;
  return sum;
}

void index_add_rows_cases(const Sink& run) {
  Seq seed{29000};
  for (DType dt : kFloats)
    for (DType it : kIndexTypes)
      for (const RowsSpec& sp : kRowsSpecs) {
        const std::int64_t n = sp.idx.numel();
        const Tensor out0 = host_uniform({sp.v, sp.d}, dt, seed(), -4, 4);
        const Tensor iv = host_ints({n}, it, seed(), 0, sp.v);
        const Tensor sv = host_uniform({n, sp.d}, dt, seed(), -4, 4);
        const std::vector<double> ids = values_of(iv);
        std::vector<std::size_t> target;
        for (std::int64_t i = 0; i < n; ++i)
          for (std::int64_t j = 0; j < sp.d; ++j)
            target.push_back(static_cast<std::size_t>(static_cast<std::int64_t>(ids[static_cast<std::size_t>(i)]) * sp.d + j));
        const std::vector<double> mag = scatter_magnitude(values_of(out0), values_of(sv), target);
        Case c("index_add_rows", dt_name(dt) + " idx " + dt_name(it),
               "out [" + std::to_string(sp.v) + ", " + std::to_string(sp.d) + "] idx [" + std::to_string(n) + "]");
        const int idx = c.in(iv), src = c.in(sv);
        const int y = c.out("out", out0, rounded_tol(dt), f64_tensor(mag, {sp.v, sp.d}));
        c.call = [idx, src, y](Backend& be, Args& t) { be.index_add_rows(t[y], t[idx], t[src]); };
        run(c);
      }
}

struct LastSpec {
  Shape x;
  std::int64_t k;
};
const std::vector<LastSpec> kLastSpecs = {{{0, 5}, 3},   {{1, 1}, 1},     {{7, 33}, 2}, {{300, 8}, 2},
                                          {{3, 4097}, 40}, {{2, 3, 33}, 4}, {{4, 10}, 0}};

// gather_last: copies, exact (k may exceed the width; indices repeat).
void gather_last_cases(const Sink& run) {
  Seq seed{30000};
  for (DType dt : kFloats)
    for (DType it : kIndexTypes)
      for (const LastSpec& sp : kLastSpecs) {
        const Shape is = with_last(sp.x, sp.k);
        Case c("gather_last", dt_name(dt) + " idx " + dt_name(it), sp.x.str() + " idx " + is.str());
        const int x = c.in(host_uniform(sp.x, dt, seed(), -4, 4));
        const int idx = c.in(host_ints(is, it, seed(), 0, sp.x.dim(-1)));
        const int y = c.out("out", host_sentinel(is, dt), exact_match());
        c.call = [x, idx, y](Backend& be, Args& t) { be.gather_last(t[x], t[idx], t[y]); };
        run(c);
      }
}

void scatter_add_last_cases(const Sink& run) {
  Seq seed{31000};
  for (DType dt : kFloats)
    for (DType it : kIndexTypes)
      for (const LastSpec& sp : kLastSpecs) {
        const Shape is = with_last(sp.x, sp.k);
        const RowsCols rc = rows_cols(sp.x);
        const Tensor out0 = host_uniform(sp.x, dt, seed(), -4, 4);
        const Tensor iv = host_ints(is, it, seed(), 0, sp.x.dim(-1));
        const Tensor sv = host_uniform(is, dt, seed(), -4, 4);
        const std::vector<double> ids = values_of(iv);
        std::vector<std::size_t> target;
        for (std::int64_t r = 0; r < rc.rows; ++r)
          for (std::int64_t j = 0; j < sp.k; ++j)
            target.push_back(static_cast<std::size_t>(r * rc.cols + static_cast<std::int64_t>(ids[static_cast<std::size_t>(r * sp.k + j)])));
        const std::vector<double> mag = scatter_magnitude(values_of(out0), values_of(sv), target);
        Case c("scatter_add_last", dt_name(dt) + " idx " + dt_name(it), sp.x.str() + " idx " + is.str());
        const int idx = c.in(iv), src = c.in(sv);
        const int y = c.out("out", out0, rounded_tol(dt), f64_tensor(mag, sp.x));
        c.call = [idx, src, y](Backend& be, Args& t) { be.scatter_add_last(t[y], t[idx], t[src]); };
        run(c);
      }
}

// Values for the sorting kernels: continuous, heavy ties (integers 0..4: the order of equal values
// is the lower index first, or stable), and +-inf among normal values.
enum class SortValues { continuous, ties, infinities };
const char* sort_values_name(SortValues v) {
  return v == SortValues::continuous ? "continuous" : v == SortValues::ties ? "ties (0..4)" : "with +-inf";
}
Tensor sort_input(const Shape& s, DType dt, std::uint64_t seed, SortValues kind) {
  if (kind == SortValues::ties) return host_ints(s, DType::i64, seed, 0, 5).to(dt);
  Tensor x = host_normal(s, DType::f64, seed, 0, 1);
  if (kind == SortValues::infinities) {
    std::vector<double> v = values_of(x);
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (i % 7 == 3) v[i] = kInf;
      if (i % 11 == 5) v[i] = -kInf;
    }
    x = host_values(v, s, DType::f64);
  }
  return x.to(dt);
}

// topk: a selection, exact (values are copies of x, indices the positions).
void topk_cases(const Sink& run) {
  Seq seed{32000};
  const std::vector<std::pair<Shape, std::vector<std::int64_t>>> specs = {
      {{0, 5}, {0, 2}},      {{1, 1}, {0, 1}}, {{4, 33}, {1, 2, 33}}, {{7, 1000}, {8}},
      {{2, 4097}, {2}},      {{1, 50000}, {8}}, {{300, 8}, {2}},       {{2, 3, 33}, {4}}};
  for (DType dt : kFloats)
    for (const auto& [s, ks] : specs)
      for (std::int64_t k : ks)
        for (SortValues kind : {SortValues::continuous, SortValues::ties, SortValues::infinities}) {
          const Shape os = with_last(s, k);
          Case c("topk", dt_name(dt), s.str(), "k " + std::to_string(k) + ", " + sort_values_name(kind));
          const int x = c.in(sort_input(s, dt, seed(), kind));
          const int v = c.out("values", host_sentinel(os, dt), exact_match());
          const int i = c.out("idx", host_sentinel(os, DType::i64), exact_match());
          c.call = [x, v, i, k = k](Backend& be, Args& t) { be.topk(t[x], k, t[v], t[i]); };
          run(c);
        }
}

// argsort: a stable permutation, exact.
void argsort_cases(const Sink& run) {
  Seq seed{33000};
  const std::vector<Shape> shapes = {{0, 5}, {1, 1}, {4, 33}, {7, 1000}, {2, 4097}, {1, 50000}, {300, 8}, {2, 3, 33}};
  for (DType dt : kFloats)
    for (const Shape& s : shapes)
      for (bool desc : {false, true})
        for (SortValues kind : {SortValues::continuous, SortValues::ties, SortValues::infinities}) {
          Case c("argsort", dt_name(dt), s.str(), std::string(desc ? "descending" : "ascending") + ", " + sort_values_name(kind));
          const int x = c.in(sort_input(s, dt, seed(), kind));
          const int i = c.out("idx", host_sentinel(s, DType::i64), exact_match());
          c.call = [x, i, desc](Backend& be, Args& t) { be.argsort(t[x], desc, t[i]); };
          run(c);
        }
}

// =================================================================================================
// MoE dispatch
// =================================================================================================

struct DispatchSpec {
  std::int64_t tokens, k, experts, capacity;
  int routing;  // 0 uniform (repeats allowed), 1 skewed (70% to expert 0), 2 distinct experts per token
};

// moe_dispatch: integer bookkeeping, exact. kept_slots / kept_tokens only over their first
// sum(kept) entries (the rest is unspecified); capacity 0 (dropless), 1, small and large.
void moe_dispatch_cases(const Sink& run) {
  Seq seed{34000};
  const std::vector<DispatchSpec> specs = {{0, 2, 4, 0, 0},      {1, 1, 1, 0, 0},      {33, 2, 4, 0, 0},
                                           {33, 2, 4, 3, 0},     {1000, 2, 8, 0, 0},   {1000, 2, 8, 200, 0},
                                           {4097, 2, 64, 0, 0},  {4097, 1, 64, 50, 0}, {100, 4, 16, 1, 0},
                                           {1000, 2, 8, 100, 1}, {257, 2, 8, 0, 2},    {257, 2, 8, 40, 2}};
  for (const DispatchSpec& sp : specs) {
    const std::int64_t slots = sp.tokens * sp.k;
    std::vector<double> ids = values_of(host_ints({slots}, DType::i64, seed(), 0, sp.experts));
    if (sp.routing == 1) {
      const std::vector<double> u = values_of(host_ints({slots}, DType::i64, seed(), 0, 10));
      for (std::size_t s = 0; s < ids.size(); ++s)
        if (u[s] < 7) ids[s] = 0;
    } else if (sp.routing == 2) {
      for (std::int64_t t = 0; t < sp.tokens; ++t)  // k consecutive experts from a random first one
        for (std::int64_t j = 0; j < sp.k; ++j)
          ids[static_cast<std::size_t>(t * sp.k + j)] =
              static_cast<double>((static_cast<std::int64_t>(ids[static_cast<std::size_t>(t * sp.k)]) + j) % sp.experts);
    }
    std::vector<std::int64_t> routed(static_cast<std::size_t>(sp.experts), 0);
    for (double e : ids) ++routed[static_cast<std::size_t>(e)];
    std::int64_t kept = 0;
    for (std::int64_t r : routed) kept += sp.capacity > 0 ? std::min(r, sp.capacity) : r;
    const char* routing[3] = {"uniform", "skewed", "distinct per token"};
    Case c("moe_dispatch", "i64",
           "[" + std::to_string(sp.tokens) + ", " + std::to_string(sp.k) + "] E " + std::to_string(sp.experts),
           "capacity " + std::to_string(sp.capacity) + ", routing " + routing[sp.routing]);
    const int idx = c.in(host_values(ids, {sp.tokens, sp.k}, DType::i64));
    const int counts = c.out("counts", host_sentinel({2, sp.experts}, DType::i64), exact_match());
    const int ks = c.out("kept_slots", host_sentinel({slots}, DType::i64), exact_match(), Tensor(), kept);
    const int kt = c.out("kept_tokens", host_sentinel({slots}, DType::i64), exact_match(), Tensor(), kept);
    const int dr = c.out("slot_dropped", host_sentinel({slots}, DType::i64), exact_match());
    c.call = [idx, counts, ks, kt, dr, sp](Backend& be, Args& t) {
      be.moe_dispatch(t[idx], sp.experts, sp.capacity, t[counts], t[ks], t[kt], t[dr]);
    };
    run(c);
  }
}

// =================================================================================================
// clustering (spherical k-means)
// =================================================================================================

// normalize_rows. Both sides sum a row's squares in double, in different orders: a sum of D
// non-negative terms in any order is within D u of the exact one, sqrt halves that and 1 / norm
// and the product add a rounding each, so the norms and the f64 units agree to rtol (D + 4) eps64.
// An f32 unit is that double value rounded to f32: the two double values, (D + 4) eps64 apart,
// round to the same f32 or to neighbours, one ulp <= eps32 |value| apart: rtol eps32. Special
// rows: all zero and a denormal (norm 0 or tiny, computed exactly in double), +-inf and NaN
// (norm inf or NaN, unit zeros), and values whose squares overflow f32 but not double.
void normalize_rows_cases(const Sink& run) {
  Seq seed{36000};
  const std::vector<Shape> shapes = {{0, 7}, {1, 1}, {1, 33}, {5, 1000}, {3, 4097}, {2, 50000}, {300, 65}, {7, 0}};
  for (DType dt : kFloats)
    for (const Shape& s : shapes) {
      const RowsCols rc{s.dim(0), s.dim(1)};  // [7, 0] has 7 rows (of norm 0)
      Tensor x = host_normal(s, dt, seed(), 0, 3);
      if (rc.cols > 0) {
        std::vector<double> v = values_of(x);
        const std::vector<double> specials = {0.0, 1e-40, kInf, -kInf, kNaN, 3e30};
        for (std::int64_t r = 1; r < rc.rows && r <= static_cast<std::int64_t>(specials.size()); ++r) {
          const double sp = specials[static_cast<std::size_t>(r - 1)];
          for (std::int64_t j = 0; j < rc.cols; ++j) {
            double& e = v[static_cast<std::size_t>(r * rc.cols + j)];
            // zero / denormal rows entirely; one special element in the others
            if (sp == 0.0 || sp == 1e-40) e = (sp == 0.0 || j == 0) ? sp : 0.0;
            else if (j == rc.cols / 2) e = sp;
            else if (sp == 3e30) e *= 1e29;
          }
        }
        x = host_values(v, s, dt);
      }
      Case c("normalize_rows", dt_name(dt), s.str());
      const int xi = c.in(x);
      Tolerance unit_tol;
      unit_tol.rtol = dt == DType::f32 ? eps_of(DType::f32) : static_cast<double>(rc.cols + 4) * eps_of(DType::f64);
      Tolerance norm_tol;
      norm_tol.rtol = static_cast<double>(rc.cols + 4) * eps_of(DType::f64);
      const int yi = c.out("out", host_sentinel(s, dt), unit_tol);
      const int ni = c.out("norms", host_sentinel({rc.rows}, DType::f64), norm_tol.allow_nan());
      c.call = [xi, yi, ni](Backend& be, Args& t) { be.normalize_rows(t[xi], t[yi], t[ni]); };
      run(c);
    }
  // In place (out is x), as the contract allows.
  for (DType dt : kFloats) {
    Case c("normalize_rows", dt_name(dt), "[300, 65]", "in place");
    Tolerance unit_tol;
    unit_tol.rtol = dt == DType::f32 ? eps_of(DType::f32) : 69.0 * eps_of(DType::f64);
    const int xi = c.out("x", host_normal({300, 65}, dt, seed(), 1, 2), unit_tol);
    Tolerance norm_tol;
    norm_tol.rtol = 69.0 * eps_of(DType::f64);
    const int ni = c.out("norms", host_sentinel({300}, DType::f64), norm_tol);
    c.call = [xi, ni](Backend& be, Args& t) { be.normalize_rows(t[xi], t[xi], t[ni]); };
    run(c);
  }
}

struct ClusterSpec {
  std::int64_t rows, dim, clusters, chunk_rows;
};

// cluster_sums: the contract fixes the order of every addition (chunks of chunk_rows rows, rows in
// order, partials in chunk order), so exact. Chunks of 1 row, of a few, of 1024 (k-means' size),
// one chunk for all rows, and a last chunk that is short; previous values of -1 (first step),
// equal to the assignment and different. An element summed in another order (by rows overall, or
// by atomics) misses the exact tier.
void cluster_sums_cases(const Sink& run) {
  Seq seed{37000};
  const std::vector<ClusterSpec> specs = {{0, 4, 3, 16},   {1, 1, 1, 1},      {33, 7, 3, 1},    {33, 7, 3, 5},
                                          {1000, 33, 8, 64}, {4097, 16, 6, 1024}, {4097, 65, 2, 5000},
                                          {5000, 3, 40, 7}};
  for (DType dt : kFloats)
    for (const ClusterSpec& sp : specs) {
      Case c("cluster_sums", dt_name(dt),
             "[" + std::to_string(sp.rows) + ", " + std::to_string(sp.dim) + "] K " + std::to_string(sp.clusters),
             "chunk_rows " + std::to_string(sp.chunk_rows));
      const Shape pts{sp.rows, sp.dim};
      const int x = c.in(host_normal(pts, dt, seed(), 0.5, 2));
      const int score = c.in(host_uniform({sp.rows}, dt, seed(), -1, 1));
      std::vector<double> a = values_of(host_ints({sp.rows}, DType::i64, seed(), 0, sp.clusters));
      std::vector<double> prev = values_of(host_ints({sp.rows}, DType::i64, seed(), -1, sp.clusters));
      for (std::size_t i = 0; i < prev.size(); i += 3) prev[i] = a[i];  // a third unchanged
      const int ai = c.in(host_values(a, {sp.rows}, DType::i64));
      const int pi = c.in(host_values(prev, {sp.rows}, DType::i64));
      const int y = c.out("out", host_sentinel({sp.clusters * sp.dim + sp.clusters + 2}, DType::f64), exact_match());
      c.call = [x, score, ai, pi, y, sp](Backend& be, Args& t) {
        be.cluster_sums(t[x], t[score], t[ai], t[pi], sp.clusters, sp.chunk_rows, t[y]);
      };
      run(c);
    }
}

// =================================================================================================
// optimiser
// =================================================================================================

// adamw over several tensors at once (empty, one element, odd, long; weight decay on some).
// The error model. Each side rounds a chain of ~8 operations (FMAs on the device), and, above all,
// may compute the step's scalar coefficients 1 - b1, 1 - b2 and the bias corrections
// c = 1 - b^t in the tensor's dtype or in double: 1 - fl(b) in float is off by up to
// eps b / (1 - b) relative (1.2e-4 for b2 = 0.999: 1 - 0.999f = 9.99987e-4), and the CPU does
// the former for 1 - b and the latter for c. So, per element, with mag_m = |b1 m| + |(1-b1) g|,
// mag_v = |b2 v| + |(1-b2) g^2| and the update u = (lr / c1) |m'| / (sqrt(v') / sqrt(c2) + eps):
//   m:     |diff| <= (4 + b1 / (1 - b1)) eps mag_m
//   v:     |diff| <= (4 + b2 / (1 - b2)) eps mag_v
//   param: |diff| <= 4 eps |p (1 - lr wd)| + k eps (u + (lr / c1) mag_m / (sqrt(v') / sqrt(c2) + eps)),
//          k = 16 + b1/(1-b1) + b2/(2(1-b2)) + b1^t/(1-b1^t) + b2^t/(2(1-b2^t)) (the relative
//          errors of m', sqrt(v'), c1 and sqrt(c2)); the mag_m term covers an m' that cancelled.
// (In the magnitudes below the factors are folded in and mtol = 1.) Still ~1e-4 of the update for
// f32 at b2 = 0.999 and ~1e-13 for f64: a missing bias correction (10x), a wrong step count or a
// missing weight decay (lr wd |p| = 5e-5 |p|) is far outside.
void adamw_cases(const Sink& run) {
  Seq seed{35000};
  struct StepSpec {
    AdamWStep step;
    bool fresh;  // m = v = 0 (the first step)
  };
  AdamWStep first;
  first.lr = 1e-3;
  AdamWStep later;
  later.lr = 0.01;
  later.beta1 = 0.8;
  later.beta2 = 0.95;
  later.eps = 1e-6;
  later.step = 7;
  const std::vector<StepSpec> steps = {{first, true}, {later, false}};
  const std::vector<Shape> shapes = {{0}, {1}, {33}, {1000, 3}, {50001}};
  const double decays[] = {0.05, 0.0, 0.1, 0.0, 0.05};
  for (DType dt : kFloats)
    for (const StepSpec& sp : steps)
      for (int count : {0, 1, 5}) {
        const AdamWStep st = sp.step;
        const double c1 = 1.0 - std::pow(st.beta1, static_cast<double>(st.step));
        const double c2 = 1.0 - std::pow(st.beta2, static_cast<double>(st.step));
        Case c("adamw", dt_name(dt), "", "step " + std::to_string(st.step) + " lr " + num(st.lr) + " betas " +
                                             num(st.beta1) + "/" + num(st.beta2) + " eps " + num(st.eps));
        struct Slots {
          int p, g, m, v;
          double wd;
        };
        std::vector<Slots> slots;
        std::string shape;
        for (int i = 0; i < count; ++i) {
          // With one tensor: the long one.
          const Shape s = count == 1 ? shapes.back() : shapes[static_cast<std::size_t>(i)];
          const double wd = count == 1 ? 0.05 : decays[i];
          shape += (shape.empty() ? "" : " ") + s.str() + (wd > 0 ? " wd " + num(wd) : "");
          const Tensor pv = host_normal(s, dt, seed(), 0, 1);
          std::vector<double> g = values_of(host_normal(s, DType::f64, seed(), 0, 1e-2));
          for (std::size_t e = 0; e < g.size(); ++e) {
            if (e % 17 == 3) g[e] = 0.0;    // no gradient: m = v = 0 on the first step
            if (e % 23 == 5) g[e] *= 100.0;  // a large one
          }
          const Tensor gv = host_values(g, s, dt);
          const Tensor mv0 = sp.fresh ? host_values(std::vector<double>(g.size(), 0.0), s, dt) : host_normal(s, dt, seed(), 0, 1e-2);
          const Tensor vv0 = sp.fresh ? host_values(std::vector<double>(g.size(), 0.0), s, dt) : host_uniform(s, dt, seed(), 0, 1e-4);
          const std::vector<double> p = values_of(pv), gq = values_of(gv), m0 = values_of(mv0), v0 = values_of(vv0);
          const double e = eps_of(dt), t = static_cast<double>(st.step);
          const double km = 4 + st.beta1 / (1 - st.beta1), kv = 4 + st.beta2 / (1 - st.beta2);
          const double ku = 16 + st.beta1 / (1 - st.beta1) + st.beta2 / (2 * (1 - st.beta2)) +
                            std::pow(st.beta1, t) / c1 + std::pow(st.beta2, t) / (2 * c2);
          std::vector<double> mag_p(p.size()), mag_m(p.size()), mag_v(p.size());
          for (std::size_t e_ = 0; e_ < p.size(); ++e_) {
            const double m1 = st.beta1 * m0[e_] + (1 - st.beta1) * gq[e_];
            const double v1 = st.beta2 * v0[e_] + (1 - st.beta2) * gq[e_] * gq[e_];
            const double am = std::abs(st.beta1 * m0[e_]) + std::abs((1 - st.beta1) * gq[e_]);
            const double av = std::abs(st.beta2 * v0[e_]) + std::abs((1 - st.beta2) * gq[e_] * gq[e_]);
            const double denom = std::sqrt(v1) / std::sqrt(c2) + st.eps;
            mag_m[e_] = km * e * am;
            mag_v[e_] = kv * e * av;
            mag_p[e_] = 4 * e * std::abs(p[e_] * (1 - st.lr * wd)) + ku * e * st.lr / c1 * (std::abs(m1) + am) / denom;
          }
          Tolerance tp, tm;
          tp.mtol = tm.mtol = 1.0;  // the factors are in the magnitudes
          Slots sl;
          sl.wd = wd;
          sl.g = c.in(gv);
          const std::string k = "[" + std::to_string(i) + "] ";
          sl.p = c.out(k + "param", pv, tp, f64_tensor(mag_p, s));
          sl.m = c.out(k + "m", mv0, tm, f64_tensor(mag_m, s));
          sl.v = c.out(k + "v", vv0, tm, f64_tensor(mag_v, s));
          slots.push_back(sl);
        }
        c.shape = count == 0 ? "no tensors" : shape;
        c.call = [slots, st](Backend& be, Args& t) {
          std::vector<AdamWTensor> ts;
          for (const Slots& s : slots) {
            AdamWTensor a;
            a.param = t[s.p];
            a.grad = t[s.g];
            a.m = t[s.m];
            a.v = t[s.v];
            a.weight_decay = s.wd;
            ts.push_back(a);
          }
          be.adamw(ts, st);
        };
        run(c);
      }
}

// ema over several tensors at once. Each side rounds m a + (1 - m) v once per product and once for
// the sum (or fuses them into an FMA), with m and 1 - m each rounded once from double: |diff| <=
// 3 eps (|m a| + |(1 - m) v|) per element. m = 0 and m = 1 must be exact (the teacher equals the
// student, or stays frozen), so their magnitudes are 0.
void ema_cases(const Sink& run) {
  Seq seed{36000};
  const std::vector<Shape> shapes = {{0}, {1}, {33}, {1000, 3}, {50001}};
  for (DType dt : kFloats)
    for (double m : {0.0, 1.0, 0.5, 0.999})
      for (int count : {0, 1, 5}) {
        Case c("ema", dt_name(dt), "", "momentum " + num(m));
        std::vector<std::pair<int, int>> slots;  // (average, value)
        std::string shape;
        for (int i = 0; i < count; ++i) {
          const Shape s = count == 1 ? shapes.back() : shapes[static_cast<std::size_t>(i)];
          shape += (shape.empty() ? "" : " ") + s.str();
          const Tensor av = host_normal(s, dt, seed(), 0, 1);
          const Tensor vv = host_normal(s, dt, seed(), 0.5, 1);
          const std::vector<double> a = values_of(av), v = values_of(vv);
          std::vector<double> mag(a.size());
          const bool exact = m == 0.0 || m == 1.0;
          for (std::size_t e = 0; e < a.size(); ++e)
            mag[e] = exact ? 0.0 : 3 * eps_of(dt) * (std::abs(m * a[e]) + std::abs((1 - m) * v[e]));
          Tolerance t;
          t.mtol = 1.0;  // the factor is in the magnitude
          const int vi = c.in(vv);
          const int ai = c.out("[" + std::to_string(i) + "] average", av, t, f64_tensor(mag, s));
          slots.emplace_back(ai, vi);
        }
        c.shape = count == 0 ? "no tensors" : shape;
        c.call = [slots, m](Backend& be, Args& t) {
          std::vector<EmaTensor> ts;
          for (const auto& [a, v] : slots) ts.push_back({t[a], t[v]});
          be.ema(ts, m);
        };
        run(c);
      }
}

// =================================================================================================
// error cases: both backends must throw, naming the kernel (the CUDA backend at the next wait)
// =================================================================================================

Case error_case(const std::string& kernel, const std::string& what) {
  Case c(kernel, "f32", "", what);
  c.expect_error = true;
  return c;
}

void gather_rows_errors(const Sink& run) {
  for (double bad : {5.0, -1.0}) {
    Case c = error_case("gather_rows", "index " + num(bad) + " of a 5-row table");
    const int tab = c.in(host_uniform({5, 3}, DType::f32, 1, -1, 1));
    const int idx = c.in(host_values({0, bad, 1, 2}, {4}, DType::i64));
    const int y = c.in(host_sentinel({4, 3}, DType::f32));
    c.call = [tab, idx, y](Backend& be, Args& t) { be.gather_rows(t[tab], t[idx], t[y]); };
    run(c);
  }
}

void index_add_rows_errors(const Sink& run) {
  Case c = error_case("index_add_rows", "index 7 into 5 rows");
  const int y = c.in(host_uniform({5, 3}, DType::f32, 2, -1, 1));
  const int idx = c.in(host_values({1, 7}, {2}, DType::i32));
  const int src = c.in(host_uniform({2, 3}, DType::f32, 3, -1, 1));
  c.call = [y, idx, src](Backend& be, Args& t) { be.index_add_rows(t[y], t[idx], t[src]); };
  run(c);
}

void gather_last_errors(const Sink& run) {
  Case c = error_case("gather_last", "index 4 of 4 columns");
  const int x = c.in(host_uniform({2, 4}, DType::f32, 4, -1, 1));
  const int idx = c.in(host_values({0, 4, 1, 1}, {2, 2}, DType::i64));
  const int y = c.in(host_sentinel({2, 2}, DType::f32));
  c.call = [x, idx, y](Backend& be, Args& t) { be.gather_last(t[x], t[idx], t[y]); };
  run(c);
}

void scatter_add_last_errors(const Sink& run) {
  Case c = error_case("scatter_add_last", "index -1");
  const int y = c.in(host_uniform({2, 4}, DType::f32, 5, -1, 1));
  const int idx = c.in(host_values({0, -1, 2, 3}, {2, 2}, DType::i64));
  const int src = c.in(host_uniform({2, 2}, DType::f32, 6, -1, 1));
  c.call = [y, idx, src](Backend& be, Args& t) { be.scatter_add_last(t[y], t[idx], t[src]); };
  run(c);
}

void moe_dispatch_errors(const Sink& run) {
  Case c = error_case("moe_dispatch", "expert 4 of 4");
  c.dtype = "i64";
  const int idx = c.in(host_values({0, 1, 2, 4, 1, 0}, {3, 2}, DType::i64));
  const int counts = c.in(host_sentinel({2, 4}, DType::i64));
  const int ks = c.in(host_sentinel({6}, DType::i64)), kt = c.in(host_sentinel({6}, DType::i64)),
            dr = c.in(host_sentinel({6}, DType::i64));
  c.call = [idx, counts, ks, kt, dr](Backend& be, Args& t) { be.moe_dispatch(t[idx], 4, 0, t[counts], t[ks], t[kt], t[dr]); };
  run(c);
}

void cluster_sums_errors(const Sink& run) {
  for (double bad : {3.0, -1.0}) {
    Case c = error_case("cluster_sums", "assignment " + num(bad) + " of K = 3");
    const int x = c.in(host_uniform({4, 2}, DType::f32, 8, -1, 1));
    const int score = c.in(host_uniform({4}, DType::f32, 9, -1, 1));
    const int a = c.in(host_values({0, 2, bad, 1}, {4}, DType::i64));
    const int prev = c.in(host_values({-1, -1, -1, -1}, {4}, DType::i64));
    const int y = c.in(host_sentinel({3 * 2 + 3 + 2}, DType::f64));
    c.call = [x, score, a, prev, y](Backend& be, Args& t) {
      be.cluster_sums(t[x], t[score], t[a], t[prev], 3, 2, t[y]);
    };
    run(c);
  }
}

void cross_entropy_errors(const Sink& run) {
  Case c = error_case("cross_entropy", "target 5 of 5 classes");
  const int x = c.in(host_normal({3, 5}, DType::f32, 7, 0, 1));
  const int tg = c.in(host_values({0, 5, 1}, {3}, DType::i64));
  const int l = c.in(host_sentinel({3}, DType::f32)), e = c.in(host_sentinel({3}, DType::f32));
  c.call = [x, tg, l, e](Backend& be, Args& t) { be.cross_entropy(t[x], t[tg], -100, 0.0, t[l], t[e]); };
  run(c);
}

// =================================================================================================
// the table
// =================================================================================================

struct Entry {
  const char* kernel;
  void (*cases)(const Sink&);
  void (*errors)(const Sink&);  // null: no error cases
};

const Entry kEntries[] = {
    {"fill", fill_cases, nullptr},
    {"cast", cast_cases, nullptr},
    {"arange", arange_cases, nullptr},
    {"uniform", uniform_cases, nullptr},
    {"normal", normal_cases, nullptr},
    {"dropout_mask", dropout_mask_cases, nullptr},
    {"gemm", gemm_cases, nullptr},
    {"grouped_gemm", grouped_gemm_cases, nullptr},
    {"unary", unary_cases, nullptr},
    {"unary_backward", unary_backward_cases, nullptr},
    {"binary", binary_cases, nullptr},
    {"affine", affine_cases, nullptr},
    {"axpy", axpy_cases, nullptr},
    {"pow_scalar", pow_scalar_cases, nullptr},
    {"masked_fill", masked_fill_cases, nullptr},
    {"reduce", reduce_cases, nullptr},
    {"expand_axis", expand_axis_cases, nullptr},
    {"sum_squares", sum_squares_cases, nullptr},
    {"permute", permute_cases, nullptr},
    {"copy_axis", copy_axis_cases, nullptr},
    {"softmax", softmax_cases, nullptr},
    {"softmax_backward", softmax_backward_cases, nullptr},
    {"log_softmax", log_softmax_cases, nullptr},
    {"log_softmax_backward", log_softmax_backward_cases, nullptr},
    {"causal_mask", causal_mask_cases, nullptr},
    {"cross_entropy", cross_entropy_cases, cross_entropy_errors},
    {"cross_entropy_backward", cross_entropy_backward_cases, nullptr},
    {"layernorm", layernorm_cases, nullptr},
    {"layernorm_backward", layernorm_backward_cases, nullptr},
    {"rmsnorm", rmsnorm_cases, nullptr},
    {"rmsnorm_backward", rmsnorm_backward_cases, nullptr},
    {"gather_rows", gather_rows_cases, gather_rows_errors},
    {"index_add_rows", index_add_rows_cases, index_add_rows_errors},
    {"gather_last", gather_last_cases, gather_last_errors},
    {"scatter_add_last", scatter_add_last_cases, scatter_add_last_errors},
    {"topk", topk_cases, nullptr},
    {"argsort", argsort_cases, nullptr},
    {"moe_dispatch", moe_dispatch_cases, moe_dispatch_errors},
    {"normalize_rows", normalize_rows_cases, nullptr},
    {"cluster_sums", cluster_sums_cases, cluster_sums_errors},
    {"adamw", adamw_cases, nullptr},
    {"ema", ema_cases, nullptr},
};

// Runs a case on one backend: fresh copies of every argument on its device, the call, a
// synchronize (device-side errors surface here), and the outputs back on the host. Returns false
// with the exception's message when anything threw.
bool execute(Backend& be, const Case& c, Args& outputs, std::string& error) {
  try {
    Args dev;
    dev.reserve(c.args.size());
    for (const Tensor& a : c.args) dev.push_back(copy_to(a, be.device()));
    c.call(be, dev);
    be.synchronize();
    outputs.clear();
    for (const Output& o : c.outputs) outputs.push_back(copy_to(dev[static_cast<std::size_t>(o.arg)], Device::cpu));
    return true;
  } catch (const std::exception& e) {
    error = e.what();
    return false;
  }
}

class Runner {
 public:
  Runner(Backend& reference, Backend& under_test, std::vector<OpFailure>& failures, OpSuiteStats& stats)
      : reference_(reference), under_test_(under_test), failures_(failures), stats_(stats) {}

  void operator()(Case& c) {
    ++stats_.cases;
    ++stats_.per_kernel[c.kernel];
    Args ref_out, got_out;
    std::string ref_err, got_err;
    const bool ref_ok = execute(reference_, c, ref_out, ref_err);
    const bool got_ok = execute(under_test_, c, got_out, got_err);
    if (c.expect_error) {
      if (ref_ok) fail(c, "", "harness error: the reference backend did not throw");
      if (got_ok) fail(c, "", "did not throw (the reference throws: " + ref_err + ")");
      else if (got_err.find(c.kernel) == std::string::npos)
        fail(c, "", "threw without naming the kernel: " + got_err);
      return;
    }
    if (!ref_ok) return fail(c, "", "harness error: the reference backend threw: " + ref_err);
    if (!got_ok) return fail(c, "", "threw: " + got_err);
    for (std::size_t i = 0; i < c.outputs.size(); ++i) {
      const Output& o = c.outputs[i];
      const Comparison cmp = compare_tensors(got_out[i], ref_out[i], o.tol, o.magnitude, o.count);
      if (!cmp.ok) fail(c, o.name, cmp.message);
    }
  }

 private:
  void fail(const Case& c, const std::string& output, const std::string& detail) {
    failures_.push_back({c.kernel, c.dtype, c.shape, c.params, output, detail});
  }

  Backend& reference_;
  Backend& under_test_;
  std::vector<OpFailure>& failures_;
  OpSuiteStats& stats_;
};

}  // namespace

bool op_suite_selects(const std::string& filter, const std::string& kernel) {
  if (filter.empty()) return true;
  std::stringstream ss(filter);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const auto b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
    if (b == std::string::npos) continue;
    item = item.substr(b, e - b + 1);
    if (!item.empty() && item.back() == '*') {
      if (kernel.compare(0, item.size() - 1, item, 0, item.size() - 1) == 0) return true;
    } else if (item == kernel) {
      return true;
    }
  }
  return false;
}

std::vector<std::string> backend_op_suite_kernels() {
  std::vector<std::string> names;
  for (const Entry& e : kEntries) names.emplace_back(e.kernel);
  return names;
}

std::vector<OpFailure> run_backend_op_suite(Backend& reference, Backend& under_test, const std::string& filter,
                                            OpSuiteStats* stats, OpSuitePass pass) {
  std::vector<OpFailure> failures;
  OpSuiteStats local;
  OpSuiteStats& st = stats ? *stats : local;
  Runner runner(reference, under_test, failures, st);
  const Sink sink = [&runner](Case& c) { runner(c); };
  if (pass != OpSuitePass::errors)
    for (const Entry& e : kEntries)
      if (op_suite_selects(filter, e.kernel)) e.cases(sink);
  // Error cases last: a device fault one of them might cause cannot hide any other result.
  if (pass != OpSuitePass::compare)
    for (const Entry& e : kEntries)
      if (e.errors && op_suite_selects(filter, e.kernel)) e.errors(sink);
  return failures;
}

}  // namespace upcycle::testing
