#pragma once
// The CPU backend: OpenBLAS (single-threaded) for matrix products, loops split over threads by
// cpu::parallel_for (cpu_parallel.hpp; OpenMP only for `omp simd` and the thread count). Its
// definitions are split by concern over the cpu_*.cpp files beside this header.
#include "upcycle/backend/backend.hpp"
#include "backend/dtype_dispatch.hpp"

namespace upcycle {

class CpuBackend final : public Backend {
 public:
  Device device() const override;
  void* allocate(std::size_t bytes) override;
  void deallocate(void* ptr) override;
  void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes) override;
  void* allocate_pinned(std::size_t bytes) override;
  void deallocate_pinned(void* ptr) override;
  AllocatorStats allocator_stats() const override;
  void reset_peak_bytes() override;
  void synchronize() override;
  StreamHandle compute_stream() override;
  StreamHandle create_stream() override;
  void destroy_stream(StreamHandle stream) override;
  EventHandle create_event() override;
  void destroy_event(EventHandle event) override;
  void record_event(EventHandle event, StreamHandle stream) override;
  void wait_event(StreamHandle stream, EventHandle event) override;
  void synchronize_event(EventHandle event) override;
  bool event_done(EventHandle event) override;
  void copy_bytes_async(void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes) override;
  void* workspace(std::size_t bytes) override;
  void fill(Tensor& out, double value) override;
  void cast(const Tensor& src, Tensor& dst) override;
  void arange(Tensor& out, double start, double step) override;
  void uniform(Tensor& out, std::uint64_t seed, std::uint64_t offset, double lo, double hi) override;
  void normal(Tensor& out, std::uint64_t seed, std::uint64_t offset, double mean, double std) override;
  void dropout_mask(Tensor& mask, double p, std::uint64_t seed, std::uint64_t offset) override;
  void gemm(const GemmDesc& desc, const Tensor& a, const Tensor& b, Tensor& c) override;
  void grouped_gemm(bool trans_a, bool trans_b, double alpha, double beta, const std::vector<GemmGroup>& groups) override;
  void set_allow_tf32(bool allow) override;
  void unary(UnaryOp op, const Tensor& x, Tensor& y) override;
  void unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& gy, Tensor& gx) override;
  void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) override;
  void affine(const Tensor& x, Tensor& out, double alpha, double beta) override;
  void axpy(double alpha, const Tensor& x, Tensor& y) override;
  void pow_scalar(const Tensor& x, Tensor& out, double p) override;
  void masked_fill(const Tensor& x, const Tensor& mask, double value, Tensor& out) override;
  void reduce(ReduceOp op, const Tensor& x, Tensor& out, std::int64_t outer, std::int64_t axis, std::int64_t inner) override;
  void expand_axis(const Tensor& x, Tensor& out, std::int64_t outer, std::int64_t axis, std::int64_t inner, double alpha) override;
  void sum_squares(const std::vector<Tensor>& xs, Tensor& out) override;
  void permute(const Tensor& x, Tensor& out, const int* perm) override;
  void copy_axis(const Tensor& src, std::int64_t src_axis, std::int64_t src_off, Tensor& dst, std::int64_t dst_axis, std::int64_t dst_off, std::int64_t outer, std::int64_t len, std::int64_t inner, bool accumulate) override;
  void softmax(const Tensor& x, Tensor& y) override;
  void softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx) override;
  void log_softmax(const Tensor& x, Tensor& y) override;
  void log_softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx) override;
  void causal_mask(Tensor& scores, std::int64_t t, std::int64_t s) override;
  void cross_entropy(const Tensor& logits, const Tensor& targets, std::int64_t ignore_index, double smoothing, Tensor& losses, Tensor& lse) override;
  void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse, std::int64_t ignore_index, double smoothing, double scale, Tensor& glogits) override;
  void layernorm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps, Tensor& y, Tensor& mean, Tensor& rstd) override;
  void layernorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& mean, const Tensor& rstd, const Tensor& gy, Tensor& gx, Tensor& ggamma, Tensor& gbeta) override;
  void rmsnorm(const Tensor& x, const Tensor& gamma, double eps, Tensor& y, Tensor& rstd) override;
  void rmsnorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& rstd, const Tensor& gy, Tensor& gx, Tensor& ggamma) override;
  void gather_rows(const Tensor& table, const Tensor& idx, Tensor& out) override;
  void index_add_rows(Tensor& out, const Tensor& idx, const Tensor& src) override;
  void gather_last(const Tensor& x, const Tensor& idx, Tensor& out) override;
  void scatter_add_last(Tensor& out, const Tensor& idx, const Tensor& src) override;
  void topk(const Tensor& x, std::int64_t k, Tensor& values, Tensor& idx) override;
  void argsort(const Tensor& x, bool descending, Tensor& idx) override;
  void moe_dispatch(const Tensor& indices, std::int64_t num_experts, std::int64_t capacity, Tensor& counts,
                    Tensor& kept_slots, Tensor& kept_tokens, Tensor& slot_dropped) override;
  void normalize_rows(const Tensor& x, Tensor& out, Tensor& norms) override;
  void cluster_sums(const Tensor& points, const Tensor& score, const Tensor& assignment, const Tensor& previous,
                    std::int64_t clusters, std::int64_t chunk_rows, Tensor& out) override;
  void adamw(const std::vector<AdamWTensor>& tensors, const AdamWStep& step) override;
  void ema(const std::vector<EmaTensor>& tensors, double momentum) override;
};

}  // namespace upcycle
