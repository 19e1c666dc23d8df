#pragma once
// The CPU backend: OpenBLAS (single-threaded) for matrix products, loops split over threads by
// cpu::parallel_for (cpu_parallel.hpp; OpenMP only for `omp simd` and the thread count). Its
// definitions are split by concern over the cpu_*.cpp files beside this header.
#include "upcycle/backend/backend.hpp"

namespace upcycle {

class CpuBackend final : public Backend {
 public:
  Device device() const override;
  void* allocate(std::size_t bytes) override;
  void deallocate(void* ptr) override;
  void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes) override;
  void fill(Tensor& out, double value) override;
  void cast(const Tensor& src, Tensor& dst) override;
  void arange(Tensor& out, double start, double step) override;
  void uniform(Tensor& out, std::uint64_t seed, std::uint64_t offset, double lo, double hi) override;
  void normal(Tensor& out, std::uint64_t seed, std::uint64_t offset, double mean, double std) override;
  void dropout_mask(Tensor& mask, double p, std::uint64_t seed, std::uint64_t offset) override;
  void gemm(const GemmDesc& desc, const Tensor& a, const Tensor& b, Tensor& c) override;
  void unary(UnaryOp op, const Tensor& x, Tensor& y) override;
  void unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& gy, Tensor& gx) override;
  void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) override;
  void affine(const Tensor& x, Tensor& out, double alpha, double beta) override;
  void axpy(double alpha, const Tensor& x, Tensor& y) override;
  void pow_scalar(const Tensor& x, Tensor& out, double p) override;
  void masked_fill(const Tensor& x, const Tensor& mask, double value, Tensor& out) override;
  void reduce(ReduceOp op, const Tensor& x, Tensor& out, std::int64_t outer, std::int64_t axis, std::int64_t inner) override;
  void expand_axis(const Tensor& x, Tensor& out, std::int64_t outer, std::int64_t axis, std::int64_t inner, double alpha) override;
  void sum_squares(const Tensor& x, Tensor& out) override;
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
  void adamw(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, double lr, double beta1, double beta2,
             double eps, double weight_decay, std::int64_t step) override;
};

// Calls f(T{}) with T = float or double for a floating dtype; throws otherwise.
template <class F>
void dispatch_floating(DType dtype, const char* what, F&& f) {
  switch (dtype) {
    case DType::f32: f(float{}); return;
    case DType::f64: f(double{}); return;
    default: UPCYCLE_THROW(what, ": the CPU backend supports f32 and f64, got ", dtype_name(dtype));
  }
}

// Calls f(I{}) with I = int32_t or int64_t for an index dtype.
template <class F>
void dispatch_index(DType dtype, const char* what, F&& f) {
  switch (dtype) {
    case DType::i32: f(std::int32_t{}); return;
    case DType::i64: f(std::int64_t{}); return;
    default: UPCYCLE_THROW(what, ": index tensors must be i32 or i64, got ", dtype_name(dtype));
  }
}

}  // namespace upcycle
