// Self-test of the backend op suite (tests/gpu/backend_op_suite.hpp) without a GPU:
//   * the CPU backend against itself passes every case, and the suite calls every kernel of the
//     Backend interface;
//   * a decorator that forwards to the CPU but corrupts one kernel's output (a value off by 1e-3,
//     a NaN, two indices swapped, a count off by one, one bit flipped, an output not written, an
//     exception) makes the suite report exactly that kernel, naming the bad element: it can fail;
//   * a decorator that computes the rounding-sensitive f32 kernels the way a GPU plausibly does
//     (float block reductions, other math functions, FMAs, Welford, ...) passes every case: its
//     tolerances reject errors, not correct implementations;
//   * the comparison rule itself (tests/support/backend_compare.hpp) on hand-made tensors: a NaN,
//     an infinity or a sign never passes by accident.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <ostream>
#include <set>
#include <string>
#include <vector>

#include "backend_compare.hpp"
#include "backend_op_suite.hpp"
#include "upcycle/backend/backend.hpp"
#include "upcycle/backend/gemm.hpp"

namespace upcycle {
namespace {

using testing::compare_tensors;
using testing::OpFailure;
using testing::OpSuiteStats;
using testing::run_backend_op_suite;

// Every kernel of the Backend interface (backend.hpp). A kernel added there needs an override in
// FaultyBackend below (it is pure virtual) and a name here, and the suite must then cover it.
const std::set<std::string> kKernels = {
    "fill",          "cast",          "arange",         "uniform",          "normal",
    "dropout_mask",  "gemm",          "grouped_gemm",   "unary",            "unary_backward",
    "binary",        "affine",        "axpy",           "pow_scalar",       "masked_fill",
    "reduce",        "expand_axis",   "sum_squares",    "permute",          "copy_axis",
    "softmax",       "softmax_backward", "log_softmax", "log_softmax_backward", "causal_mask",
    "cross_entropy", "cross_entropy_backward", "layernorm", "layernorm_backward", "rmsnorm",
    "rmsnorm_backward", "gather_rows", "index_add_rows", "gather_last",    "scatter_add_last",
    "topk",          "argsort",       "moe_dispatch",   "adamw",
    "ema",           "normalize_rows", "cluster_sums"};

enum class Fault {
  none,
  softmax_value_off,      // one element of y off by 1e-3
  layernorm_nan,          // one element of y NaN
  topk_index_swapped,     // the first two indices of the first row swapped
  moe_dispatch_count_off, // counts[0, 0] one too many
  uniform_bit_flipped,    // the lowest mantissa bit of one element flipped
  gather_rows_not_written,  // the output left as it was
  argsort_throws,         // an exception instead of a result
  cluster_sums_reordered, // the rows summed in one pass instead of the contract's chunks
};

const char* fault_name(Fault f) {
  switch (f) {
    case Fault::none: return "none";
    case Fault::softmax_value_off: return "softmax_value_off";
    case Fault::layernorm_nan: return "layernorm_nan";
    case Fault::topk_index_swapped: return "topk_index_swapped";
    case Fault::moe_dispatch_count_off: return "moe_dispatch_count_off";
    case Fault::uniform_bit_flipped: return "uniform_bit_flipped";
    case Fault::gather_rows_not_written: return "gather_rows_not_written";
    case Fault::argsort_throws: return "argsort_throws";
    case Fault::cluster_sums_reordered: return "cluster_sums_reordered";
  }
  return "?";
}

// Test names and parameter printouts (gtest, CTest) show the fault by name.
void PrintTo(Fault f, std::ostream* os) { *os << fault_name(f); }

// The kernel each fault breaks.
const char* faulty_kernel(Fault f) {
  switch (f) {
    case Fault::softmax_value_off: return "softmax";
    case Fault::layernorm_nan: return "layernorm";
    case Fault::topk_index_swapped: return "topk";
    case Fault::moe_dispatch_count_off: return "moe_dispatch";
    case Fault::uniform_bit_flipped: return "uniform";
    case Fault::gather_rows_not_written: return "gather_rows";
    case Fault::argsort_throws: return "argsort";
    case Fault::cluster_sums_reordered: return "cluster_sums";
    case Fault::none: break;
  }
  return "";
}

// Host-memory corruptions (the decorator runs on the CPU, so outputs are host tensors).
void add_to_middle(Tensor& t, double delta) {
  if (t.numel() == 0) return;
  const std::int64_t i = t.numel() / 2;
  if (t.dtype() == DType::f32) t.data<float>()[i] += static_cast<float>(delta);
  else t.data<double>()[i] += delta;
}

void nan_in_middle(Tensor& t) {
  if (t.numel() == 0) return;
  const std::int64_t i = t.numel() / 2;
  if (t.dtype() == DType::f32) t.data<float>()[i] = std::numeric_limits<float>::quiet_NaN();
  else t.data<double>()[i] = std::numeric_limits<double>::quiet_NaN();
}

void flip_low_bit_in_middle(Tensor& t) {
  if (t.numel() == 0) return;
  const std::int64_t i = t.numel() / 2;
  if (t.dtype() == DType::f32) {
    std::uint32_t bits;
    std::memcpy(&bits, t.data<float>() + i, sizeof bits);
    bits ^= 1u;
    std::memcpy(t.data<float>() + i, &bits, sizeof bits);
  } else {
    std::uint64_t bits;
    std::memcpy(&bits, t.data<double>() + i, sizeof bits);
    bits ^= 1u;
    std::memcpy(t.data<double>() + i, &bits, sizeof bits);
  }
}

// Forwards every call to `base` (the CPU backend) and records which kernels were called; the
// decorators below override some kernels.
class ForwardingBackend : public Backend {
 public:
  explicit ForwardingBackend(Backend& base) : base_(base) {}
  const std::set<std::string>& called() const { return called_; }

  // --- memory and execution context: forwarded, not kernels ---
  Device device() const override { return base_.device(); }
  void* allocate(std::size_t bytes) override { return base_.allocate(bytes); }
  void deallocate(void* ptr) override { base_.deallocate(ptr); }
  void copy_bytes(void* dst, Device dd, const void* src, Device sd, std::size_t bytes) override {
    base_.copy_bytes(dst, dd, src, sd, bytes);
  }
  void* allocate_pinned(std::size_t bytes) override { return base_.allocate_pinned(bytes); }
  void deallocate_pinned(void* ptr) override { base_.deallocate_pinned(ptr); }
  AllocatorStats allocator_stats() const override { return base_.allocator_stats(); }
  void reset_peak_bytes() override { base_.reset_peak_bytes(); }
  void synchronize() override { base_.synchronize(); }
  StreamHandle compute_stream() override { return base_.compute_stream(); }
  StreamHandle create_stream() override { return base_.create_stream(); }
  void destroy_stream(StreamHandle s) override { base_.destroy_stream(s); }
  EventHandle create_event() override { return base_.create_event(); }
  void destroy_event(EventHandle e) override { base_.destroy_event(e); }
  void record_event(EventHandle e, StreamHandle s) override { base_.record_event(e, s); }
  void wait_event(StreamHandle s, EventHandle e) override { base_.wait_event(s, e); }
  void synchronize_event(EventHandle e) override { base_.synchronize_event(e); }
  bool event_done(EventHandle e) override { return base_.event_done(e); }
  void copy_bytes_async(void* dst, Device dd, const void* src, Device sd, std::size_t bytes) override {
    base_.copy_bytes_async(dst, dd, src, sd, bytes);
  }
  void* workspace(std::size_t bytes) override { return base_.workspace(bytes); }
  void set_allow_tf32(bool allow) override { base_.set_allow_tf32(allow); }

  // --- kernels ---
  void fill(Tensor& out, double value) override {
    note("fill");
    base_.fill(out, value);
  }
  void cast(const Tensor& src, Tensor& dst) override {
    note("cast");
    base_.cast(src, dst);
  }
  void arange(Tensor& out, double start, double step) override {
    note("arange");
    base_.arange(out, start, step);
  }
  void uniform(Tensor& out, std::uint64_t seed, std::uint64_t offset, double lo, double hi) override {
    note("uniform");
    base_.uniform(out, seed, offset, lo, hi);
  }
  void normal(Tensor& out, std::uint64_t seed, std::uint64_t offset, double mean, double std) override {
    note("normal");
    base_.normal(out, seed, offset, mean, std);
  }
  void dropout_mask(Tensor& mask, double p, std::uint64_t seed, std::uint64_t offset) override {
    note("dropout_mask");
    base_.dropout_mask(mask, p, seed, offset);
  }
  void gemm(const GemmDesc& d, const Tensor& a, const Tensor& b, Tensor& c) override {
    note("gemm");
    base_.gemm(d, a, b, c);
  }
  void grouped_gemm(bool ta, bool tb, double alpha, double beta, const std::vector<GemmGroup>& groups) override {
    note("grouped_gemm");
    base_.grouped_gemm(ta, tb, alpha, beta, groups);
  }
  void unary(UnaryOp op, const Tensor& x, Tensor& y) override {
    note("unary");
    base_.unary(op, x, y);
  }
  void unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& gy, Tensor& gx) override {
    note("unary_backward");
    base_.unary_backward(op, x, y, gy, gx);
  }
  void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) override {
    note("binary");
    base_.binary(op, a, b, out);
  }
  void affine(const Tensor& x, Tensor& out, double alpha, double beta) override {
    note("affine");
    base_.affine(x, out, alpha, beta);
  }
  void axpy(double alpha, const Tensor& x, Tensor& y) override {
    note("axpy");
    base_.axpy(alpha, x, y);
  }
  void pow_scalar(const Tensor& x, Tensor& out, double p) override {
    note("pow_scalar");
    base_.pow_scalar(x, out, p);
  }
  void masked_fill(const Tensor& x, const Tensor& mask, double value, Tensor& out) override {
    note("masked_fill");
    base_.masked_fill(x, mask, value, out);
  }
  void reduce(ReduceOp op, const Tensor& x, Tensor& out, std::int64_t outer, std::int64_t axis,
              std::int64_t inner) override {
    note("reduce");
    base_.reduce(op, x, out, outer, axis, inner);
  }
  void expand_axis(const Tensor& x, Tensor& out, std::int64_t outer, std::int64_t axis, std::int64_t inner,
                   double alpha) override {
    note("expand_axis");
    base_.expand_axis(x, out, outer, axis, inner, alpha);
  }
  void sum_squares(const std::vector<Tensor>& xs, Tensor& out) override {
    note("sum_squares");
    base_.sum_squares(xs, out);
  }
  void permute(const Tensor& x, Tensor& out, const int* perm) override {
    note("permute");
    base_.permute(x, out, perm);
  }
  void copy_axis(const Tensor& src, std::int64_t src_axis, std::int64_t src_off, Tensor& dst, std::int64_t dst_axis,
                 std::int64_t dst_off, std::int64_t outer, std::int64_t len, std::int64_t inner, bool acc) override {
    note("copy_axis");
    base_.copy_axis(src, src_axis, src_off, dst, dst_axis, dst_off, outer, len, inner, acc);
  }
  void softmax(const Tensor& x, Tensor& y) override {
    note("softmax");
    base_.softmax(x, y);
  }
  void softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx) override {
    note("softmax_backward");
    base_.softmax_backward(y, gy, gx);
  }
  void log_softmax(const Tensor& x, Tensor& y) override {
    note("log_softmax");
    base_.log_softmax(x, y);
  }
  void log_softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx) override {
    note("log_softmax_backward");
    base_.log_softmax_backward(y, gy, gx);
  }
  void causal_mask(Tensor& scores, std::int64_t t, std::int64_t s) override {
    note("causal_mask");
    base_.causal_mask(scores, t, s);
  }
  void cross_entropy(const Tensor& logits, const Tensor& targets, std::int64_t ignore, double smoothing, Tensor& losses,
                     Tensor& lse) override {
    note("cross_entropy");
    base_.cross_entropy(logits, targets, ignore, smoothing, losses, lse);
  }
  void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse, std::int64_t ignore,
                              double smoothing, double scale, Tensor& g) override {
    note("cross_entropy_backward");
    base_.cross_entropy_backward(logits, targets, lse, ignore, smoothing, scale, g);
  }
  void layernorm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps, Tensor& y, Tensor& mean,
                 Tensor& rstd) override {
    note("layernorm");
    base_.layernorm(x, gamma, beta, eps, y, mean, rstd);
  }
  void layernorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& mean, const Tensor& rstd,
                          const Tensor& gy, Tensor& gx, Tensor& ggamma, Tensor& gbeta) override {
    note("layernorm_backward");
    base_.layernorm_backward(x, gamma, mean, rstd, gy, gx, ggamma, gbeta);
  }
  void rmsnorm(const Tensor& x, const Tensor& gamma, double eps, Tensor& y, Tensor& rstd) override {
    note("rmsnorm");
    base_.rmsnorm(x, gamma, eps, y, rstd);
  }
  void rmsnorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& rstd, const Tensor& gy, Tensor& gx,
                        Tensor& ggamma) override {
    note("rmsnorm_backward");
    base_.rmsnorm_backward(x, gamma, rstd, gy, gx, ggamma);
  }
  void gather_rows(const Tensor& table, const Tensor& idx, Tensor& out) override {
    note("gather_rows");
    base_.gather_rows(table, idx, out);
  }
  void index_add_rows(Tensor& out, const Tensor& idx, const Tensor& src) override {
    note("index_add_rows");
    base_.index_add_rows(out, idx, src);
  }
  void gather_last(const Tensor& x, const Tensor& idx, Tensor& out) override {
    note("gather_last");
    base_.gather_last(x, idx, out);
  }
  void scatter_add_last(Tensor& out, const Tensor& idx, const Tensor& src) override {
    note("scatter_add_last");
    base_.scatter_add_last(out, idx, src);
  }
  void topk(const Tensor& x, std::int64_t k, Tensor& values, Tensor& idx) override {
    note("topk");
    base_.topk(x, k, values, idx);
  }
  void argsort(const Tensor& x, bool descending, Tensor& idx) override {
    note("argsort");
    base_.argsort(x, descending, idx);
  }
  void moe_dispatch(const Tensor& indices, std::int64_t num_experts, std::int64_t capacity, Tensor& counts,
                    Tensor& kept_slots, Tensor& kept_tokens, Tensor& slot_dropped) override {
    note("moe_dispatch");
    base_.moe_dispatch(indices, num_experts, capacity, counts, kept_slots, kept_tokens, slot_dropped);
  }
  void adamw(const std::vector<AdamWTensor>& tensors, const AdamWStep& step) override {
    note("adamw");
    base_.adamw(tensors, step);
  }
  void ema(const std::vector<EmaTensor>& tensors, double momentum) override {
    note("ema");
    base_.ema(tensors, momentum);
  }
  void normalize_rows(const Tensor& x, Tensor& out, Tensor& norms) override {
    note("normalize_rows");
    base_.normalize_rows(x, out, norms);
  }
  void cluster_sums(const Tensor& points, const Tensor& score, const Tensor& assignment, const Tensor& previous,
                    std::int64_t clusters, std::int64_t chunk_rows, Tensor& out) override {
    note("cluster_sums");
    base_.cluster_sums(points, score, assignment, previous, clusters, chunk_rows, out);
  }

 protected:
  void note(const char* kernel) { called_.insert(kernel); }
  Backend& base_;

 private:
  std::set<std::string> called_;
};

// The forwarding backend with one kernel's output corrupted (or not written, or an exception).
class FaultyBackend final : public ForwardingBackend {
 public:
  FaultyBackend(Backend& base, Fault fault) : ForwardingBackend(base), fault_(fault) {}

  void uniform(Tensor& out, std::uint64_t seed, std::uint64_t offset, double lo, double hi) override {
    ForwardingBackend::uniform(out, seed, offset, lo, hi);
    if (fault_ == Fault::uniform_bit_flipped) flip_low_bit_in_middle(out);
  }
  void softmax(const Tensor& x, Tensor& y) override {
    ForwardingBackend::softmax(x, y);
    if (fault_ == Fault::softmax_value_off) add_to_middle(y, 1e-3);
  }
  void layernorm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps, Tensor& y, Tensor& mean,
                 Tensor& rstd) override {
    ForwardingBackend::layernorm(x, gamma, beta, eps, y, mean, rstd);
    if (fault_ == Fault::layernorm_nan) nan_in_middle(y);
  }
  void gather_rows(const Tensor& table, const Tensor& idx, Tensor& out) override {
    if (fault_ == Fault::gather_rows_not_written) return note("gather_rows");
    ForwardingBackend::gather_rows(table, idx, out);
  }
  void topk(const Tensor& x, std::int64_t k, Tensor& values, Tensor& idx) override {
    ForwardingBackend::topk(x, k, values, idx);
    if (fault_ == Fault::topk_index_swapped && k >= 2 && idx.numel() >= 2) {
      std::int64_t* p = idx.data<std::int64_t>();
      std::swap(p[0], p[1]);
    }
  }
  void argsort(const Tensor& x, bool descending, Tensor& idx) override {
    if (fault_ == Fault::argsort_throws) UPCYCLE_THROW("argsort: injected failure");
    ForwardingBackend::argsort(x, descending, idx);
  }
  void moe_dispatch(const Tensor& indices, std::int64_t num_experts, std::int64_t capacity, Tensor& counts,
                    Tensor& kept_slots, Tensor& kept_tokens, Tensor& slot_dropped) override {
    ForwardingBackend::moe_dispatch(indices, num_experts, capacity, counts, kept_slots, kept_tokens, slot_dropped);
    if (fault_ == Fault::moe_dispatch_count_off) counts.data<std::int64_t>()[0] += 1;
  }
  // The same sums with every row in one pass (chunk_rows ignored): right up to rounding, but not
  // the order the contract fixes.
  void cluster_sums(const Tensor& points, const Tensor& score, const Tensor& assignment, const Tensor& previous,
                    std::int64_t clusters, std::int64_t chunk_rows, Tensor& out) override {
    const std::int64_t n = points.dim(0);
    ForwardingBackend::cluster_sums(points, score, assignment, previous, clusters,
                                    fault_ == Fault::cluster_sums_reordered ? std::max<std::int64_t>(n, 1) : chunk_rows,
                                    out);
  }

 private:
  Fault fault_;
};

// --- a correct backend that rounds differently -------------------------------------------------
// The f32 kernels whose results depend on rounding, re-implemented the way a CUDA backend
// plausibly computes them: float accumulation in block reductions (each of `threads` threads sums
// a strided share, then a tree), expf / logf / tanhf / erff / powf, the gelu tanh form, FMAs,
// Welford statistics, GEMM dot products with `accumulators` interleaved partial sums, column sums
// and scatter-adds in reverse order (atomics), AdamW written as in the header with its scalar
// coefficients in float or in double, and Box-Muller in float. Everything else (f64, and the
// exact kernels) is forwarded. The suite must accept it: its tolerances are those of the error
// models, not of one implementation. (It found that the AdamW bound first ignored how 1 - 0.999f
// rounds.)
struct Rounding {
  int threads = 256;
  int accumulators = 4;
  bool double_coefficients = false;
  const char* name = "";
};

void PrintTo(const Rounding& r, std::ostream* os) { *os << r.name; }

class ReroundedBackend final : public ForwardingBackend {
 public:
  ReroundedBackend(Backend& base, Rounding r) : ForwardingBackend(base), r_(r) {}

  void normal(Tensor& out, std::uint64_t seed, std::uint64_t offset, double mean, double std) override {
    if (out.dtype() != DType::f32) return ForwardingBackend::normal(out, seed, offset, mean, std);
    note("normal");
    Tensor u = Tensor::empty({2 * out.numel()}, DType::f32, Device::cpu);
    base_.uniform(u, seed, offset, 0.0, 1.0);
    const float* pu = u.data<float>();
    float* p = out.data<float>();
    for (std::int64_t i = 0; i < out.numel(); ++i) {
      const float z = sqrtf(-2.0f * logf(1.0f - pu[2 * i])) * cosf(6.28318530718f * pu[2 * i + 1]);
      p[i] = fmaf(static_cast<float>(std), z, static_cast<float>(mean));
    }
  }
  void gemm(const GemmDesc& d, const Tensor& a, const Tensor& b, Tensor& c) override {
    if (a.dtype() != DType::f32 || d.k == 0) return ForwardingBackend::gemm(d, a, b, c);
    note("gemm");
    const float* pa = a.data<float>();
    const float* pb = b.data<float>();
    float* pc = c.data<float>();
    for (std::int64_t q = 0; q < d.batch; ++q)
      for (std::int64_t i = 0; i < d.m; ++i)
        for (std::int64_t j = 0; j < d.n; ++j) {
          float acc[8] = {};
          for (std::int64_t l = 0; l < d.k; ++l) {
            const float x = pa[q * d.stride_a + (d.trans_a ? l * d.m + i : i * d.k + l)];
            const float y = pb[q * d.stride_b + (d.trans_b ? j * d.k + l : l * d.n + j)];
            float& s = acc[l % r_.accumulators];
            s = fmaf(x, y, s);
          }
          float sum = 0.0f;
          for (int t = 0; t < r_.accumulators; ++t) sum += acc[t];
          float& out = pc[q * d.stride_c + i * d.n + j];
          out = d.beta == 0.0 ? static_cast<float>(d.alpha) * sum
                              : fmaf(static_cast<float>(d.alpha), sum, static_cast<float>(d.beta) * out);
        }
  }
  void grouped_gemm(bool ta, bool tb, double alpha, double beta, const std::vector<GemmGroup>& groups) override {
    note("grouped_gemm");
    grouped_gemm_as_gemms(*this, ta, tb, alpha, beta, groups);
  }
  void unary(UnaryOp op, const Tensor& x, Tensor& y) override {
    if (x.dtype() != DType::f32) return ForwardingBackend::unary(op, x, y);
    note("unary");
    const float* px = x.data<float>();
    float* py = y.data<float>();
    for (std::int64_t i = 0; i < x.numel(); ++i) py[i] = unary_f32(op, px[i]);
  }
  void unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& gy, Tensor& gx) override {
    if (gy.dtype() != DType::f32) return ForwardingBackend::unary_backward(op, x, y, gy, gx);
    note("unary_backward");
    // Each derivative reads one of x and y; the autograd layer leaves the other undefined.
    const float* px = x.defined() ? x.data<float>() : nullptr;
    const float* py = y.defined() ? y.data<float>() : nullptr;
    for (std::int64_t i = 0; i < gy.numel(); ++i)
      gx.data<float>()[i] = gy.data<float>()[i] * derivative_f32(op, px ? px[i] : 0.0f, py ? py[i] : 0.0f);
  }
  void affine(const Tensor& x, Tensor& out, double alpha, double beta) override {
    if (x.dtype() != DType::f32) return ForwardingBackend::affine(x, out, alpha, beta);
    note("affine");
    for (std::int64_t i = 0; i < x.numel(); ++i)
      out.data<float>()[i] = fmaf(static_cast<float>(alpha), x.data<float>()[i], static_cast<float>(beta));
  }
  void axpy(double alpha, const Tensor& x, Tensor& y) override {
    if (x.dtype() != DType::f32) return ForwardingBackend::axpy(alpha, x, y);
    note("axpy");
    for (std::int64_t i = 0; i < x.numel(); ++i)
      y.data<float>()[i] = fmaf(static_cast<float>(alpha), x.data<float>()[i], y.data<float>()[i]);
  }
  void pow_scalar(const Tensor& x, Tensor& out, double p) override {
    if (x.dtype() != DType::f32) return ForwardingBackend::pow_scalar(x, out, p);
    note("pow_scalar");
    for (std::int64_t i = 0; i < x.numel(); ++i) {
      const float v = x.data<float>()[i];
      out.data<float>()[i] = p == 2.0 ? v * v : powf(v, static_cast<float>(p));
    }
  }
  void reduce(ReduceOp op, const Tensor& x, Tensor& out, std::int64_t outer, std::int64_t axis,
              std::int64_t inner) override {
    if (x.dtype() != DType::f32 || op == ReduceOp::max) return ForwardingBackend::reduce(op, x, out, outer, axis, inner);
    note("reduce");
    const float* px = x.data<float>();
    for (std::int64_t o = 0; o < outer; ++o)
      for (std::int64_t i = 0; i < inner; ++i) {
        const float s = block_sum(axis, [&](std::int64_t a) { return px[(o * axis + a) * inner + i]; });
        out.data<float>()[o * inner + i] = op == ReduceOp::mean ? s / static_cast<float>(axis) : s;
      }
  }
  void sum_squares(const std::vector<Tensor>& xs, Tensor& out) override {
    note("sum_squares");
    double total = 0.0;  // eight strided double partial sums per tensor
    for (const Tensor& x : xs) {
      const Tensor d = x.to(DType::f64);
      double part[8] = {};
      for (std::int64_t i = 0; i < d.numel(); ++i) part[i % 8] += d.data<double>()[i] * d.data<double>()[i];
      for (double v : part) total += v;
    }
    out.data<double>()[0] = total;
  }
  void softmax(const Tensor& x, Tensor& y) override { softmax_rows(x, y, false); }
  void log_softmax(const Tensor& x, Tensor& y) override { softmax_rows(x, y, true); }
  void softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx) override { softmax_backward_rows(y, gy, gx, false); }
  void log_softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx) override {
    softmax_backward_rows(y, gy, gx, true);
  }
  void cross_entropy(const Tensor& x, const Tensor& targets, std::int64_t ignore, double eps, Tensor& losses,
                     Tensor& lse) override {
    ForwardingBackend::cross_entropy(x, targets, ignore, eps, losses, lse);  // validates, then overwritten
    if (x.dtype() != DType::f32) return;
    const std::int64_t c = x.dim(-1), rows = x.numel() / c;
    for (std::int64_t r = 0; r < rows; ++r) {
      const float* xr = x.data<float>() + r * c;
      const float m = *std::max_element(xr, xr + c);
      const float l = m + logf(block_sum(c, [&](std::int64_t j) { return expf(xr[j] - m); }));
      const std::int64_t t = targets.data<std::int64_t>()[r];
      lse.data<float>()[r] = l;
      float loss = t == ignore ? 0.0f : l - static_cast<float>(1.0 - eps) * xr[t];
      if (t != ignore && eps != 0.0)
        loss -= static_cast<float>(eps / static_cast<double>(c)) * block_sum(c, [&](std::int64_t j) { return xr[j]; });
      losses.data<float>()[r] = loss;
    }
  }
  void cross_entropy_backward(const Tensor& x, const Tensor& targets, const Tensor& lse, std::int64_t ignore,
                              double eps, double scale, Tensor& g) override {
    if (x.dtype() != DType::f32) return ForwardingBackend::cross_entropy_backward(x, targets, lse, ignore, eps, scale, g);
    note("cross_entropy_backward");
    const std::int64_t c = x.dim(-1), rows = x.numel() / c;
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int64_t t = targets.data<std::int64_t>()[r];
      for (std::int64_t j = 0; j < c; ++j) {
        const float q = (j == t ? static_cast<float>(1.0 - eps) : 0.0f) + static_cast<float>(eps / static_cast<double>(c));
        g.data<float>()[r * c + j] =
            t == ignore ? 0.0f : static_cast<float>(scale) * (expf(x.data<float>()[r * c + j] - lse.data<float>()[r]) - q);
      }
    }
  }
  void layernorm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps, Tensor& y, Tensor& mean,
                 Tensor& rstd) override {
    if (x.dtype() != DType::f32) return ForwardingBackend::layernorm(x, gamma, beta, eps, y, mean, rstd);
    note("layernorm");
    const std::int64_t d = x.dim(-1), rows = x.numel() / d;
    for (std::int64_t r = 0; r < rows; ++r) {
      const float* xr = x.data<float>() + r * d;
      // Welford per thread, combined pairwise (Chan et al.), all in float.
      std::vector<float> n(static_cast<std::size_t>(r_.threads)), mu(n.size()), m2(n.size());
      for (std::size_t t = 0; t < n.size(); ++t)
        for (std::int64_t j = static_cast<std::int64_t>(t); j < d; j += r_.threads) {
          n[t] += 1.0f;
          const float delta = xr[j] - mu[t];
          mu[t] += delta / n[t];
          m2[t] = fmaf(delta, xr[j] - mu[t], m2[t]);
        }
      for (std::size_t w = n.size() / 2; w > 0; w /= 2)
        for (std::size_t t = 0; t < w; ++t) {
          const float nn = n[t] + n[t + w];
          if (nn == 0.0f) continue;
          const float delta = mu[t + w] - mu[t];
          mu[t] += delta * n[t + w] / nn;
          m2[t] += m2[t + w] + delta * delta * n[t] * n[t + w] / nn;
          n[t] = nn;
        }
      const float k = 1.0f / sqrtf(m2[0] / static_cast<float>(d) + static_cast<float>(eps));
      mean.data<float>()[r] = mu[0];
      rstd.data<float>()[r] = k;
      for (std::int64_t j = 0; j < d; ++j)
        y.data<float>()[r * d + j] = fmaf((xr[j] - mu[0]) * k, gamma.defined() ? gamma.data<float>()[j] : 1.0f,
                                          beta.defined() ? beta.data<float>()[j] : 0.0f);
    }
  }
  void layernorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& mean, const Tensor& rstd,
                          const Tensor& gy, Tensor& gx, Tensor& ggamma, Tensor& gbeta) override {
    if (x.dtype() != DType::f32) return ForwardingBackend::layernorm_backward(x, gamma, mean, rstd, gy, gx, ggamma, gbeta);
    note("layernorm_backward");
    const std::int64_t d = x.dim(-1), rows = x.numel() / d;
    for (Tensor* t : {&ggamma, &gbeta})
      if (t->defined()) std::fill(t->data<float>(), t->data<float>() + d, 0.0f);
    for (std::int64_t r = rows - 1; r >= 0; --r) {
      const float* xr = x.data<float>() + r * d;
      const float* gr = gy.data<float>() + r * d;
      const float m = mean.data<float>()[r], k = rstd.data<float>()[r];
      auto g = [&](std::int64_t j) { return gr[j] * (gamma.defined() ? gamma.data<float>()[j] : 1.0f); };
      const float a = block_sum(d, g) / static_cast<float>(d);
      const float b = block_sum(d, [&](std::int64_t j) { return g(j) * (xr[j] - m) * k; }) / static_cast<float>(d);
      for (std::int64_t j = 0; j < d; ++j) {
        const float xh = (xr[j] - m) * k;
        gx.data<float>()[r * d + j] = k * (g(j) - a - xh * b);
        if (ggamma.defined()) ggamma.data<float>()[j] += gr[j] * xh;
        if (gbeta.defined()) gbeta.data<float>()[j] += gr[j];
      }
    }
  }
  void rmsnorm(const Tensor& x, const Tensor& gamma, double eps, Tensor& y, Tensor& rstd) override {
    if (x.dtype() != DType::f32) return ForwardingBackend::rmsnorm(x, gamma, eps, y, rstd);
    note("rmsnorm");
    const std::int64_t d = x.dim(-1), rows = x.numel() / d;
    for (std::int64_t r = 0; r < rows; ++r) {
      const float* xr = x.data<float>() + r * d;
      const float k = 1.0f / sqrtf(block_sum(d, [&](std::int64_t j) { return xr[j] * xr[j]; }) / static_cast<float>(d) +
                                   static_cast<float>(eps));
      rstd.data<float>()[r] = k;
      for (std::int64_t j = 0; j < d; ++j)
        y.data<float>()[r * d + j] = xr[j] * k * (gamma.defined() ? gamma.data<float>()[j] : 1.0f);
    }
  }
  void rmsnorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& rstd, const Tensor& gy, Tensor& gx,
                        Tensor& ggamma) override {
    if (x.dtype() != DType::f32) return ForwardingBackend::rmsnorm_backward(x, gamma, rstd, gy, gx, ggamma);
    note("rmsnorm_backward");
    const std::int64_t d = x.dim(-1), rows = x.numel() / d;
    if (ggamma.defined()) std::fill(ggamma.data<float>(), ggamma.data<float>() + d, 0.0f);
    for (std::int64_t r = rows - 1; r >= 0; --r) {
      const float* xr = x.data<float>() + r * d;
      const float* gr = gy.data<float>() + r * d;
      const float k = rstd.data<float>()[r];
      auto g = [&](std::int64_t j) { return gr[j] * (gamma.defined() ? gamma.data<float>()[j] : 1.0f); };
      const float b = block_sum(d, [&](std::int64_t j) { return g(j) * xr[j] * k; }) / static_cast<float>(d);
      for (std::int64_t j = 0; j < d; ++j) {
        gx.data<float>()[r * d + j] = k * (g(j) - xr[j] * k * b);
        if (ggamma.defined()) ggamma.data<float>()[j] += gr[j] * xr[j] * k;
      }
    }
  }
  void index_add_rows(Tensor& out, const Tensor& idx, const Tensor& src) override {
    if (out.dtype() != DType::f32 || idx.dtype() != DType::i64) return ForwardingBackend::index_add_rows(out, idx, src);
    note("index_add_rows");
    const std::int64_t d = out.dim(1);
    for (std::int64_t i = idx.numel() - 1; i >= 0; --i) {
      const std::int64_t row = idx.data<std::int64_t>()[i];
      UPCYCLE_CHECK(row >= 0 && row < out.dim(0), "index_add_rows: index ", row, " out of range");
      for (std::int64_t j = 0; j < d; ++j) out.data<float>()[row * d + j] += src.data<float>()[i * d + j];
    }
  }
  // The squares of a row in eight strided double partials added pairwise (a warp's order), then
  // the unit row from that norm.
  void normalize_rows(const Tensor& x, Tensor& out, Tensor& norms) override {
    const Tensor xd = x.to(DType::f64).clone();         // before the call: out may be x
    ForwardingBackend::normalize_rows(x, out, norms);  // validates; the values are overwritten
    const std::int64_t n = x.dim(0), d = x.dim(1);
    for (std::int64_t r = 0; r < n; ++r) {
      const double* xr = xd.data<double>() + r * d;
      double part[8] = {};
      for (std::int64_t j = 0; j < d; ++j) part[j % 8] += xr[j] * xr[j];
      for (int w = 4; w > 0; w /= 2)
        for (int t = 0; t < w; ++t) part[t] += part[t + w];
      const double norm = std::sqrt(part[0]);
      norms.data<double>()[r] = norm;
      const bool scalable = std::isfinite(norm) && norm != 0.0;
      for (std::int64_t j = 0; j < d; ++j) {
        const double v = scalable ? xr[j] * (1.0 / norm) : 0.0;
        if (out.dtype() == DType::f32) out.data<float>()[r * d + j] = static_cast<float>(v);
        else out.data<double>()[r * d + j] = v;
      }
    }
  }
  void adamw(const std::vector<AdamWTensor>& tensors, const AdamWStep& s) override {
    note("adamw");
    for (const AdamWTensor& a : tensors) {
      if (a.param.dtype() != DType::f32) {
        base_.adamw({a}, s);
        continue;
      }
      // p -= lr (m_hat / (sqrt(v_hat) + eps) + wd p), literally, in float.
      const float b1 = static_cast<float>(s.beta1), b2 = static_cast<float>(s.beta2);
      const double t = static_cast<double>(s.step);
      const float c1 = r_.double_coefficients ? static_cast<float>(1.0 - std::pow(s.beta1, t)) : 1.0f - powf(b1, static_cast<float>(t));
      const float c2 = r_.double_coefficients ? static_cast<float>(1.0 - std::pow(s.beta2, t)) : 1.0f - powf(b2, static_cast<float>(t));
      const float one_b1 = r_.double_coefficients ? static_cast<float>(1.0 - s.beta1) : 1.0f - b1;
      const float one_b2 = r_.double_coefficients ? static_cast<float>(1.0 - s.beta2) : 1.0f - b2;
      float* p = a.param.data<float>();
      float* m = a.m.data<float>();
      float* v = a.v.data<float>();
      const float* g = a.grad.data<float>();
      for (std::int64_t i = 0; i < a.param.numel(); ++i) {
        m[i] = fmaf(b1, m[i], one_b1 * g[i]);
        v[i] = fmaf(b2, v[i], one_b2 * g[i] * g[i]);
        p[i] -= static_cast<float>(s.lr) *
                (m[i] / c1 / (sqrtf(v[i] / c2) + static_cast<float>(s.eps)) + static_cast<float>(a.weight_decay) * p[i]);
      }
    }
  }

 private:
  template <class F>
  float block_sum(std::int64_t n, F term) const {
    std::vector<float> part(static_cast<std::size_t>(r_.threads), 0.0f);
    for (std::size_t t = 0; t < part.size(); ++t)
      for (std::int64_t i = static_cast<std::int64_t>(t); i < n; i += r_.threads) part[t] += term(i);
    for (std::size_t w = part.size() / 2; w > 0; w /= 2)
      for (std::size_t t = 0; t < w; ++t) part[t] += part[t + w];
    return part[0];
  }

  void softmax_rows(const Tensor& x, Tensor& y, bool log) {
    if (x.dtype() != DType::f32) return log ? ForwardingBackend::log_softmax(x, y) : ForwardingBackend::softmax(x, y);
    note(log ? "log_softmax" : "softmax");
    const std::int64_t c = x.dim(-1), rows = c ? x.numel() / c : 0;
    for (std::int64_t r = 0; r < rows; ++r) {
      const float* xr = x.data<float>() + r * c;
      float* yr = y.data<float>() + r * c;
      const float m = *std::max_element(xr, xr + c);
      const float s = block_sum(c, [&](std::int64_t j) { return expf(xr[j] - m); });
      const float ls = logf(s);
      for (std::int64_t j = 0; j < c; ++j) yr[j] = log ? (xr[j] - m) - ls : expf(xr[j] - m) / s;
    }
  }

  void softmax_backward_rows(const Tensor& y, const Tensor& gy, Tensor& gx, bool log) {
    if (y.dtype() != DType::f32)
      return log ? ForwardingBackend::log_softmax_backward(y, gy, gx) : ForwardingBackend::softmax_backward(y, gy, gx);
    note(log ? "log_softmax_backward" : "softmax_backward");
    const std::int64_t c = y.dim(-1), rows = c ? y.numel() / c : 0;
    for (std::int64_t r = 0; r < rows; ++r) {
      const float* yr = y.data<float>() + r * c;
      const float* gr = gy.data<float>() + r * c;
      float* out = gx.data<float>() + r * c;
      const float s = block_sum(c, [&](std::int64_t j) { return log ? gr[j] : gr[j] * yr[j]; });
      for (std::int64_t j = 0; j < c; ++j) out[j] = log ? fmaf(-expf(yr[j]), s, gr[j]) : yr[j] * (gr[j] - s);
    }
  }

  static float unary_f32(UnaryOp op, float v) {
    switch (op) {
      case UnaryOp::neg: return -v;
      case UnaryOp::exp: return expf(v);
      case UnaryOp::log: return logf(v);
      case UnaryOp::sqrt: return sqrtf(v);
      case UnaryOp::rsqrt: return 1.0f / sqrtf(v);
      case UnaryOp::square: return v * v;
      case UnaryOp::abs: return fabsf(v);
      case UnaryOp::tanh: return tanhf(v);
      case UnaryOp::sigmoid: return 1.0f / (1.0f + expf(-v));
      case UnaryOp::reciprocal: return 1.0f / v;
      case UnaryOp::relu: return fmaxf(v, 0.0f);
      case UnaryOp::gelu_tanh: return 0.5f * v * (1.0f + tanhf(0.7978845608f * fmaf(0.044715f * v * v, v, v)));
      case UnaryOp::gelu_erf: return 0.5f * v * (1.0f + erff(v * 0.70710678118f));
      case UnaryOp::silu: return v / (1.0f + expf(-v));
    }
    return 0.0f;
  }

  static float derivative_f32(UnaryOp op, float v, float o) {
    switch (op) {
      case UnaryOp::neg: return -1.0f;
      case UnaryOp::exp: return o;
      case UnaryOp::log: return 1.0f / v;
      case UnaryOp::sqrt: return 0.5f / o;
      case UnaryOp::rsqrt: return -0.5f * o * o * o;
      case UnaryOp::square: return 2.0f * v;
      case UnaryOp::abs: return v > 0.0f ? 1.0f : (v < 0.0f ? -1.0f : 0.0f);
      case UnaryOp::tanh: return fmaf(-o, o, 1.0f);
      case UnaryOp::sigmoid: return o * (1.0f - o);
      case UnaryOp::reciprocal: return -o * o;
      case UnaryOp::relu: return v > 0.0f ? 1.0f : 0.0f;
      case UnaryOp::gelu_tanh: {
        const float t = tanhf(0.7978845608f * (v + 0.044715f * v * v * v));
        return 0.5f * (1.0f + t) + 0.5f * v * fmaf(-t, t, 1.0f) * 0.7978845608f * (1.0f + 3.0f * 0.044715f * v * v);
      }
      case UnaryOp::gelu_erf: return 0.5f * (1.0f + erff(v * 0.70710678118f)) + v * 0.39894228040f * expf(-0.5f * v * v);
      case UnaryOp::silu: {
        const float s = 1.0f / (1.0f + expf(-v));
        return s * (1.0f + v * (1.0f - s));
      }
    }
    return 0.0f;
  }

  Rounding r_;
};

std::string listing(const std::vector<OpFailure>& failures, std::size_t max = 20) {
  std::string s;
  for (std::size_t i = 0; i < failures.size() && i < max; ++i) s += "\n  " + failures[i].str();
  if (failures.size() > max) s += "\n  ... " + std::to_string(failures.size() - max) + " more";
  return s;
}

std::set<std::string> failing_kernels(const std::vector<OpFailure>& failures) {
  std::set<std::string> k;
  for (const OpFailure& f : failures) k.insert(f.kernel);
  return k;
}

TEST(BackendOpSuite, CpuAgainstItselfPassesEveryCaseOfEveryKernel) {
  Backend& cpu = backend_for(Device::cpu);
  ForwardingBackend recorder(cpu);
  OpSuiteStats stats;
  const std::vector<OpFailure> failures = run_backend_op_suite(cpu, recorder, "", &stats);
  EXPECT_TRUE(failures.empty()) << failures.size() << " failures of the CPU against itself:" << listing(failures);

  // Every kernel of the interface is in the suite's table, was called, and ran more than a case or two.
  const std::vector<std::string> listed = testing::backend_op_suite_kernels();
  EXPECT_EQ(std::set<std::string>(listed.begin(), listed.end()), kKernels);
  EXPECT_EQ(listed.size(), kKernels.size()) << "a kernel is listed twice in the suite's table";
  EXPECT_EQ(recorder.called(), kKernels);
  for (const std::string& k : kKernels) EXPECT_GE(stats.per_kernel[k], 4) << k;
  EXPECT_GT(stats.cases, 1000);
}

class InjectedFault : public ::testing::TestWithParam<Fault> {};

TEST_P(InjectedFault, IsReportedUnderItsKernelOnly) {
  Backend& cpu = backend_for(Device::cpu);
  FaultyBackend faulty(cpu, GetParam());
  const std::vector<OpFailure> failures = run_backend_op_suite(cpu, faulty);
  const std::string kernel = faulty_kernel(GetParam());
  ASSERT_FALSE(failures.empty()) << "the suite missed " << fault_name(GetParam());
  EXPECT_EQ(failing_kernels(failures), std::set<std::string>{kernel}) << listing(failures);
  // The report names what broke: an exception's message, or an element with its value.
  const std::string first = failures.front().str();
  std::printf("%s: %zu failures, first: %s\n", fault_name(GetParam()), failures.size(), first.c_str());
  if (GetParam() == Fault::argsort_throws) EXPECT_NE(first.find("injected failure"), std::string::npos) << first;
  else EXPECT_NE(first.find("got "), std::string::npos) << first;
}

INSTANTIATE_TEST_SUITE_P(Faults, InjectedFault,
                         ::testing::Values(Fault::softmax_value_off, Fault::layernorm_nan, Fault::topk_index_swapped,
                                           Fault::moe_dispatch_count_off, Fault::uniform_bit_flipped,
                                           Fault::gather_rows_not_written, Fault::argsort_throws,
                                           Fault::cluster_sums_reordered),
                         [](const ::testing::TestParamInfo<Fault>& info) { return std::string(fault_name(info.param)); });

class CorrectButRoundedDifferently : public ::testing::TestWithParam<Rounding> {};

TEST_P(CorrectButRoundedDifferently, PassesEveryCase) {
  Backend& cpu = backend_for(Device::cpu);
  ReroundedBackend rerounded(cpu, GetParam());
  const std::vector<OpFailure> failures = run_backend_op_suite(cpu, rerounded);
  EXPECT_TRUE(failures.empty()) << failures.size() << " cases reject a correct implementation:" << listing(failures);
  // It did compute the kernels it re-implements (those set the name only on the f32 path).
  for (const char* k : {"gemm", "softmax", "layernorm_backward", "adamw", "normal"})
    EXPECT_EQ(rerounded.called().count(k), 1u) << k;
}

INSTANTIATE_TEST_SUITE_P(
    Variants, CorrectButRoundedDifferently,
    ::testing::Values(Rounding{256, 4, false, "blocks_of_256_four_accumulators_float_coefficients"},
                      Rounding{32, 1, true, "blocks_of_32_one_accumulator_double_coefficients"},
                      Rounding{1024, 8, true, "blocks_of_1024_eight_accumulators_double_coefficients"}),
    [](const ::testing::TestParamInfo<Rounding>& info) { return std::string(info.param.name); });

TEST(BackendOpSuite, FilterSelectsKernelsExactlyOrByPrefix) {
  Backend& cpu = backend_for(Device::cpu);
  FaultyBackend faulty(cpu, Fault::softmax_value_off);
  OpSuiteStats only;
  EXPECT_FALSE(run_backend_op_suite(cpu, faulty, "softmax", &only).empty());
  ASSERT_EQ(only.per_kernel.size(), 1u);
  EXPECT_GT(only.per_kernel["softmax"], 0);

  OpSuiteStats prefix;
  run_backend_op_suite(cpu, cpu, "softmax*, topk", &prefix);
  std::set<std::string> ran;
  for (const auto& [k, n] : prefix.per_kernel) ran.insert(k);
  EXPECT_EQ(ran, (std::set<std::string>{"softmax", "softmax_backward", "topk"}));

  OpSuiteStats none;
  EXPECT_TRUE(run_backend_op_suite(cpu, faulty, "no_such_kernel", &none).empty());
  EXPECT_EQ(none.cases, 0);
}

// --- the comparison rule -------------------------------------------------------------------------

Tensor f64(const std::vector<double>& v) {
  return Tensor::from_vector(v, {static_cast<std::int64_t>(v.size())}, Device::cpu);
}

TEST(CompareTensors, NaNPassesOnlyAgainstNaNWhereAllowed) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  testing::Tolerance loose;
  loose.atol = 1e300;  // a bound that would accept any finite difference
  EXPECT_FALSE(compare_tensors(f64({1, nan}), f64({1, 2}), loose).ok);
  EXPECT_FALSE(compare_tensors(f64({1, 2}), f64({1, nan}), loose).ok);
  EXPECT_FALSE(compare_tensors(f64({1, nan}), f64({1, nan}), loose).ok) << "NaN = NaN only by design";
  EXPECT_TRUE(compare_tensors(f64({1, nan}), f64({1, nan}), loose.allow_nan()).ok);
  EXPECT_FALSE(compare_tensors(f64({nan}), f64({nan}), testing::exact_match()).ok);
}

TEST(CompareTensors, InfinitiesMatchExactlyAndBoundsNeverOverflowIntoAPass) {
  const double inf = std::numeric_limits<double>::infinity();
  testing::Tolerance loose;
  loose.atol = 1e300;
  EXPECT_TRUE(compare_tensors(f64({inf, -inf}), f64({inf, -inf}), loose).ok);
  EXPECT_FALSE(compare_tensors(f64({inf}), f64({-inf}), loose).ok);
  EXPECT_FALSE(compare_tensors(f64({1e308}), f64({inf}), loose).ok);
  EXPECT_FALSE(compare_tensors(f64({inf}), f64({1.0}), loose).ok);
  // A magnitude of +inf would make the bound infinite: the element must then match exactly.
  testing::Tolerance by_mag;
  by_mag.mtol = 1.0;
  EXPECT_FALSE(compare_tensors(f64({1.0}), f64({2.0}), by_mag, f64({inf})).ok);
  EXPECT_TRUE(compare_tensors(f64({2.0}), f64({2.0}), by_mag, f64({inf})).ok);
}

TEST(CompareTensors, BoundIsAtolPlusRtolRefPlusMtolMagnitude) {
  testing::Tolerance t;
  t.atol = 1e-3;
  t.rtol = 1e-2;
  t.mtol = 1e-1;
  // bound = 1e-3 + 1e-2 * 10 + 1e-1 * 1 = 0.201
  EXPECT_TRUE(compare_tensors(f64({10.2}), f64({10.0}), t, f64({1.0})).ok);
  const testing::Comparison c = compare_tensors(f64({0, 10.21}), f64({0, 10.0}), t, f64({0.0, 1.0}));
  EXPECT_FALSE(c.ok);
  EXPECT_EQ(c.worst, 1);
  EXPECT_EQ(c.bad, 1);
  EXPECT_NE(c.message.find("[1]"), std::string::npos) << c.message;
  // Only the first `count` elements when the tail is unspecified.
  EXPECT_TRUE(compare_tensors(f64({1, 5}), f64({1, 7}), testing::exact_match(), Tensor(), 1).ok);
}

TEST(CompareTensors, ExactMeansSameSignAndIntegersCompareAsInt64) {
  EXPECT_FALSE(compare_tensors(f64({-0.0}), f64({0.0}), testing::exact_match()).ok);
  EXPECT_TRUE(compare_tensors(f64({-0.0}), f64({0.0}), testing::rounded_tol(DType::f64)).ok);
  // 2^53 + 1 and 2^53 are one apart as integers but equal as doubles.
  const std::int64_t big = (std::int64_t{1} << 53) + 1;
  const Tensor a = Tensor::from_vector(std::vector<std::int64_t>{big}, {1}, Device::cpu);
  const Tensor b = Tensor::from_vector(std::vector<std::int64_t>{big - 1}, {1}, Device::cpu);
  EXPECT_FALSE(compare_tensors(a, b, testing::exact_match()).ok);
  EXPECT_FALSE(compare_tensors(a, f64({1.0}), testing::exact_match()).ok) << "dtypes differ";
  EXPECT_FALSE(compare_tensors(f64({1, 2}), f64({1, 2, 3}), testing::exact_match()).ok) << "shapes differ";
}

}  // namespace
}  // namespace upcycle
