#pragma once
// The one interface of primitive kernels. Autograd ops and models call these through
// backend_for(device); each backend (cpu here, cuda in kernels/ + src/backend/cuda) implements all
// of them. Kernels write into outputs the caller allocated, so ops control allocation. All tensors
// are contiguous. Floating kernels accept f32 and f64 on the CPU (f64 exists for gradient checks).
// One virtual call per kernel launch, never per element.
#include <cstdint>

#include "upcycle/core/tensor.hpp"

namespace upcycle {

enum class UnaryOp {
  neg, exp, log, sqrt, rsqrt, square, abs, tanh, sigmoid, reciprocal,
  relu, gelu_tanh, gelu_erf, silu
};
enum class BinaryOp { add, sub, mul, div, max, min };
const char* unary_op_name(UnaryOp op);  // "gelu_tanh", ... (for graph nodes and profiles)
enum class ReduceOp { sum, mean, max };

// Batched row-major GEMM: C[b] = alpha * op(A[b]) op(B[b]) + beta * C[b], op = transpose or not.
// A[b] starts at a + b * stride_a (in elements; 0 broadcasts one matrix over the batch), so
// op(A[b]) is m x k, op(B[b]) is k x n, C[b] is m x n.
struct GemmDesc {
  std::int64_t batch = 1, m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  std::int64_t stride_a = 0, stride_b = 0, stride_c = 0;
  double alpha = 1.0, beta = 0.0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;

  // --- memory ---
  virtual void* allocate(std::size_t bytes) = 0;
  virtual void deallocate(void* ptr) = 0;
  // Copy bytes between host and this device (either direction) or within the device.
  virtual void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device,
                          std::size_t bytes) = 0;
  virtual void synchronize() {}

  // --- creation and conversion ---
  virtual void fill(Tensor& out, double value) = 0;
  virtual void cast(const Tensor& src, Tensor& dst) = 0;  // same shape, any dtypes
  // out[i] = start + i * step (integer or floating out)
  virtual void arange(Tensor& out, double start, double step) = 0;
  // Uniform [lo, hi) from Philox stream (seed, offset + i).
  virtual void uniform(Tensor& out, std::uint64_t seed, std::uint64_t offset, double lo, double hi) = 0;
  // Normal(mean, std) by Box-Muller from Philox words (seed, offset + 2i, offset + 2i + 1).
  virtual void normal(Tensor& out, std::uint64_t seed, std::uint64_t offset, double mean, double std) = 0;
  // Inverted dropout mask: 1/(1-p) where uniform(seed, offset + i) >= p, else 0.
  virtual void dropout_mask(Tensor& mask, double p, std::uint64_t seed, std::uint64_t offset) = 0;

  // --- matrix multiply ---
  virtual void gemm(const GemmDesc& desc, const Tensor& a, const Tensor& b, Tensor& c) = 0;

  // --- elementwise ---
  virtual void unary(UnaryOp op, const Tensor& x, Tensor& y) = 0;
  // gx = gy * f'(x) for the unary op (y = f(x) is passed too: some derivatives are cheaper from y).
  virtual void unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& gy,
                              Tensor& gx) = 0;
  // out = a (op) b. Broadcasting: a.shape == b.shape, or one operand's shape is a suffix of the
  // other's and is repeated over the leading dims; out has the larger shape.
  virtual void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) = 0;
  // out = alpha * x + beta (out may alias x).
  virtual void affine(const Tensor& x, Tensor& out, double alpha, double beta) = 0;
  // y += alpha * x (same shape).
  virtual void axpy(double alpha, const Tensor& x, Tensor& y) = 0;
  // out = x^p elementwise
  virtual void pow_scalar(const Tensor& x, Tensor& out, double p) = 0;
  // out = where(mask != 0, x, value); mask has x's shape or is a suffix of it (any numeric dtype)
  virtual void masked_fill(const Tensor& x, const Tensor& mask, double value, Tensor& out) = 0;

  // --- reductions: x viewed as [outer, axis, inner], out is [outer, inner] ---
  virtual void reduce(ReduceOp op, const Tensor& x, Tensor& out, std::int64_t outer,
                      std::int64_t axis, std::int64_t inner) = 0;
  // out [outer, axis, inner] = x [outer, inner] repeated along axis, times alpha.
  virtual void expand_axis(const Tensor& x, Tensor& out, std::int64_t outer, std::int64_t axis,
                           std::int64_t inner, double alpha) = 0;
  // Global sum of squares of x into out[0] (f64 out) -- for gradient norms.
  virtual void sum_squares(const Tensor& x, Tensor& out) = 0;

  // --- layout ---
  // out = x with dims permuted: out.shape[i] = x.shape[perm[i]].
  virtual void permute(const Tensor& x, Tensor& out, const int* perm) = 0;
  // Copy a slab along one axis: for o < outer, dst[o, dst_off + j, :] (+)= src[o, src_off + j, :]
  // for j < len, with src/dst axis lengths src_axis / dst_axis and trailing size inner.
  // src and dst must not overlap in memory.
  virtual void copy_axis(const Tensor& src, std::int64_t src_axis, std::int64_t src_off,
                         Tensor& dst, std::int64_t dst_axis, std::int64_t dst_off,
                         std::int64_t outer, std::int64_t len, std::int64_t inner,
                         bool accumulate) = 0;

  // --- rows: softmax family and norms over the last dim of [rows, cols] ---
  virtual void softmax(const Tensor& x, Tensor& y) = 0;
  virtual void softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx) = 0;
  virtual void log_softmax(const Tensor& x, Tensor& y) = 0;
  virtual void log_softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx) = 0;
  // Causal mask on scores viewed as [batch, t, s]: entries with j > i + (s - t) set to -inf.
  virtual void causal_mask(Tensor& scores, std::int64_t t, std::int64_t s) = 0;
  // Cross-entropy per row with integer targets (i64). losses[r] = 0 where target == ignore_index.
  // With smoothing eps: target distribution (1 - eps) onehot + eps / C. lse[r] = logsumexp(row).
  virtual void cross_entropy(const Tensor& logits, const Tensor& targets, std::int64_t ignore_index,
                             double smoothing, Tensor& losses, Tensor& lse) = 0;
  // glogits[r] = scale * (softmax(row) - target distribution), 0 for ignored rows.
  virtual void cross_entropy_backward(const Tensor& logits, const Tensor& targets,
                                      const Tensor& lse, std::int64_t ignore_index,
                                      double smoothing, double scale, Tensor& glogits) = 0;
  // LayerNorm over the last dim; gamma/beta may be undefined (no affine). mean/rstd: [rows].
  virtual void layernorm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps,
                         Tensor& y, Tensor& mean, Tensor& rstd) = 0;
  // Writes gx; writes ggamma/gbeta when defined (sums over rows, overwriting).
  virtual void layernorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& mean,
                                  const Tensor& rstd, const Tensor& gy, Tensor& gx,
                                  Tensor& ggamma, Tensor& gbeta) = 0;
  virtual void rmsnorm(const Tensor& x, const Tensor& gamma, double eps, Tensor& y,
                       Tensor& rstd) = 0;
  virtual void rmsnorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& rstd,
                                const Tensor& gy, Tensor& gx, Tensor& ggamma) = 0;

  // --- indexing (index tensors are i32 or i64) ---
  // out[i, :] = table[idx[i], :]; table [V, D], out [N, D]. Out-of-range index throws.
  virtual void gather_rows(const Tensor& table, const Tensor& idx, Tensor& out) = 0;
  // out[idx[i], :] += src[i, :]
  virtual void index_add_rows(Tensor& out, const Tensor& idx, const Tensor& src) = 0;
  // Along the last dim of [rows, cols]: out[r, j] = x[r, idx[r, j]]
  virtual void gather_last(const Tensor& x, const Tensor& idx, Tensor& out) = 0;
  // out[r, idx[r, j]] += src[r, j]
  virtual void scatter_add_last(Tensor& out, const Tensor& idx, const Tensor& src) = 0;
  // Top-k of each row of [rows, cols], sorted descending (ties: lower index first); idx is i64.
  virtual void topk(const Tensor& x, std::int64_t k, Tensor& values, Tensor& idx) = 0;
  // Stable argsort of each row (i64 out).
  virtual void argsort(const Tensor& x, bool descending, Tensor& idx) = 0;

  // --- optimisers ---
  // One AdamW step in place (decoupled weight decay, bias-corrected moments; `step` counts from 1):
  // m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr (m_hat / (sqrt(v_hat) + eps) + wd p).
  virtual void adamw(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, double lr, double beta1,
                     double beta2, double eps, double weight_decay, std::int64_t step) = 0;
};

// The backend that owns `device`; throws when it was not built in.
Backend& backend_for(Device device);
inline Backend& backend_of(const Tensor& t) { return backend_for(t.device()); }
// Called by a backend's registration (e.g. the CUDA one) at start-up.
void register_backend(Device device, Backend* backend);

}  // namespace upcycle
