#pragma once
// The one interface of primitive kernels. Autograd ops and models call these through
// backend_for(device); each backend (cpu in src/backend/cpu, cuda in kernels/) implements all of
// them. Kernels write into outputs the caller allocated, so ops control allocation. All tensors
// are contiguous. Floating kernels accept f32 and f64 (f64 exists for gradient checks).
// One virtual call per kernel launch, never per element.
//
// Execution model. A backend issues its kernels in order on one compute stream. The CPU backend
// runs each kernel before returning; the CUDA backend only enqueues it, so the host sees a result
// after synchronize(), an event, or a blocking copy to the host (copy_bytes, Tensor::to_vector).
// Kernel argument errors are thrown on the host before anything is enqueued; errors only the
// device can see (an index out of range) are raised, naming the kernel, at the next point where
// the host waits for the device.
#include <cstdint>
#include <vector>

#include "upcycle/core/device_runtime.hpp"
#include "upcycle/core/tensor.hpp"

namespace upcycle {

enum class UnaryOp {
  neg, exp, log, sqrt, rsqrt, square, abs, tanh, sigmoid, reciprocal,
  relu, gelu_tanh, gelu_erf, silu
};
enum class BinaryOp { add, sub, mul, div, max, min };
const char* unary_op_name(UnaryOp op);    // "gelu_tanh", ... (for graph nodes and profiles)
const char* binary_op_name(BinaryOp op);  // "add", ...
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

// Native handles of the execution context (cudaStream_t / cudaEvent_t on CUDA; null on the CPU,
// where every kernel has finished when it returns).
using StreamHandle = void*;
using EventHandle = void*;

// Counters of a backend's caching allocator and of the host's waits for the device. A training
// step after warm-up adds no system allocation or free (its sizes repeat, so the cache serves
// them); tests read the counters around a step.
struct AllocatorStats {
  std::int64_t system_allocs = 0;    // blocks obtained from the system (aligned_alloc / cudaMalloc)
  std::int64_t system_frees = 0;     // blocks given back to the system (free / cudaFree)
  std::int64_t cache_hits = 0;       // allocations served from the cache
  std::int64_t host_waits = 0;       // times the host waited for the device (always 0 on the CPU)
  std::int64_t bytes_in_use = 0;     // handed out and not yet returned
  std::int64_t peak_bytes_in_use = 0;
  std::int64_t bytes_cached = 0;     // free blocks kept for reuse
};

// One tensor of a multi-tensor AdamW step (Tensor handles share storage: the update is in place).
struct AdamWTensor {
  Tensor param, grad, m, v;
  double weight_decay = 0.0;
};
// The hyper-parameters shared by every tensor of one step; `step` counts from 1.
struct AdamWStep {
  double lr = 0.0, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  std::int64_t step = 1;
};

// One tensor of a multi-tensor exponential moving average: `average` is updated in place from
// `value` (same size, dtype and device).
struct EmaTensor {
  Tensor average, value;
};

// One product of a grouped GEMM: C = alpha op(A) op(B) + beta C with op(A) m x k, op(B) k x n,
// C m x n, all row-major views (typically row blocks of one tensor per operand).
struct GemmGroup {
  Tensor a, b, c;
  std::int64_t m = 0, n = 0, k = 0;
};

class Backend : public DeviceRuntime {
 public:
  ~Backend() override = default;

  // --- memory (DeviceRuntime: allocate, deallocate, copy_bytes, fill, cast) ---
  // Page-locked host memory, the source or destination of asynchronous copies (plain aligned host
  // memory on the CPU).
  virtual void* allocate_pinned(std::size_t bytes) = 0;
  virtual void deallocate_pinned(void* ptr) = 0;
  virtual AllocatorStats allocator_stats() const = 0;
  // Restarts peak_bytes_in_use from the bytes in use now (to measure one phase's peak).
  virtual void reset_peak_bytes() = 0;

  // --- execution context ---
  // The host waits until every kernel and copy issued so far has finished (counted in host_waits).
  virtual void synchronize() = 0;
  // The stream kernels are issued on. Other streams (communication, copies) order themselves
  // against it with events.
  virtual StreamHandle compute_stream() = 0;
  virtual StreamHandle create_stream() = 0;
  virtual void destroy_stream(StreamHandle stream) = 0;
  virtual EventHandle create_event() = 0;
  virtual void destroy_event(EventHandle event) = 0;
  // Marks the point of `stream` (null = the compute stream) reached so far.
  virtual void record_event(EventHandle event, StreamHandle stream) = 0;
  // Work issued to `stream` later waits for the event (the host does not wait).
  virtual void wait_event(StreamHandle stream, EventHandle event) = 0;
  // The host waits for the event (counted in host_waits).
  virtual void synchronize_event(EventHandle event) = 0;
  // Whether the work before the event has finished, without waiting (true on the CPU).
  virtual bool event_done(EventHandle event) = 0;
  // A copy ordered on the compute stream that the host does not wait for. The host side must be
  // pinned memory (allocate_pinned) that stays valid and unchanged until the copy has run.
  virtual void copy_bytes_async(void* dst, Device dst_device, const void* src, Device src_device,
                                std::size_t bytes) = 0;
  // Scratch memory of at least `bytes` for library calls and multi-pass kernels, valid for work
  // issued on the compute stream until the next workspace() call (grown on demand, never shrunk).
  virtual void* workspace(std::size_t bytes) = 0;

  // --- creation and conversion (fill and cast: DeviceRuntime) ---
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
  // Independent products that share the transposes and the scalars (the experts of an MoE
  // layer): one launch for all on the CUDA backend. A group with k == 0 sets C = beta C (zero when
  // beta == 0); one with m == 0 or n == 0 does nothing.
  virtual void grouped_gemm(bool trans_a, bool trans_b, double alpha, double beta,
                            const std::vector<GemmGroup>& groups) = 0;
  // Whether f32 GEMMs may round their inputs to TF32 on tensor cores (off by default so that the
  // CUDA backend matches the CPU one; a no-op on the CPU).
  virtual void set_allow_tf32(bool allow) = 0;

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
  // The sum of squares of every element of every tensor of xs into out[0] (f64 [1]): one global
  // gradient norm without a host round trip per tensor. Summed in a fixed order (deterministic).
  virtual void sum_squares(const std::vector<Tensor>& xs, Tensor& out) = 0;

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

  // --- Mixture-of-Experts dispatch bookkeeping ---
  // indices [T, k] i64: the experts (in [0, E)) of the k routing slots of each token; slot
  // s = t k + j. Sorts the T k slots by expert, stably (token order within an expert), and keeps
  // each expert's first `capacity` slots (capacity 0: all). Writes, all i64 on this device:
  //   counts [2, E]: row 0 the slots routed to each expert, row 1 the slots kept;
  //   kept_slots [T k]: the kept slots in that order (the first sum(kept) entries; the rest are
  //     unspecified), kept_tokens [T k]: kept_slots / k;
  //   slot_dropped [T k]: 1 where capacity dropped slot s, else 0.
  // Only `counts` needs to reach the host (for the exchange sizes and the expert GEMMs).
  // An expert id outside [0, E) is an error.
  virtual void moe_dispatch(const Tensor& indices, std::int64_t num_experts, std::int64_t capacity,
                            Tensor& counts, Tensor& kept_slots, Tensor& kept_tokens, Tensor& slot_dropped) = 0;

  // --- clustering (the Lloyd steps of init/spherical_kmeans.hpp) ---
  // Rows scaled to unit length: norms[i] = ||x[i, :]|| with the squares summed in float64 (f32
  // rows too), out[i, :] = x[i, :] * (1 / norms[i]) computed in float64 and rounded to out's dtype.
  // A row whose norm is 0 or not finite is written as zeros (callers check `norms`). x and out
  // [n, D] of one floating dtype (out may be x), norms [n] f64.
  virtual void normalize_rows(const Tensor& x, Tensor& out, Tensor& norms) = 0;
  // The sums of one k-means assignment step, in float64 and in a fixed order. points [n, D]
  // (f32 or f64), score [n] (points' dtype), assignment [n] i64 with values in [0, K), previous
  // [n] i64 (any values; -1 = none). out [K D + K + 2] f64 receives
  //   [the sum of the points of each cluster (K rows of D), the size of each cluster (K),
  //    sum_i score[i], the number of i with assignment[i] != previous[i]].
  // The rows are taken in chunks of chunk_rows consecutive rows: within a chunk every sum runs in
  // row order from 0.0, and the chunk partials are added in chunk order from 0.0. So the bits
  // depend on chunk_rows only, not on threads or the device: every backend gives the same out.
  // Uses ceil(n / chunk_rows) (K D + K + 2) doubles of workspace(). An assignment outside
  // [0, K) is an error.
  virtual void cluster_sums(const Tensor& points, const Tensor& score, const Tensor& assignment,
                            const Tensor& previous, std::int64_t clusters, std::int64_t chunk_rows,
                            Tensor& out) = 0;

  // --- optimisers ---
  // One AdamW step in place over every tensor at once (decoupled weight decay, bias-corrected
  // moments): m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr (m_hat / (sqrt(v_hat) + eps) + wd p).
  virtual void adamw(const std::vector<AdamWTensor>& tensors, const AdamWStep& step) = 0;
  // average = m average + (1 - m) value over every pair at once, m = momentum in [0, 1], with the
  // coefficients m and 1 - m rounded once to the dtype: m = 0 copies `value` and m = 1 keeps
  // `average`, exactly (EESD's teacher, train/eesd.hpp).
  virtual void ema(const std::vector<EmaTensor>& tensors, double momentum) = 0;
};

// The backend that owns `device`; throws when it was not built in or could not start (for cuda:
// the message names the CUDA error).
Backend& backend_for(Device device);
inline Backend& backend_of(const Tensor& t) { return backend_for(t.device()); }
// Installs `backend` for `device` (also as the device's DeviceRuntime); null puts back the
// backend built in (the profiler's decorator uses this to wrap and unwrap).
void register_backend(Device device, Backend* backend);

}  // namespace upcycle
