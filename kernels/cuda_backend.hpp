#pragma once
// The CUDA backend: every Backend kernel on one GPU. Kernels are enqueued on the backend's own
// non-blocking compute stream and never wait for the device; the host waits only where the
// interface says so (synchronize, synchronize_event, copies to the host), and every such wait is
// counted in AllocatorStats::host_waits. Matrix products go through cuBLAS on the same stream; the
// MoE dispatch bookkeeping through Thrust. Memory comes from a caching allocator (cuda_memory.cpp):
// after warm-up a training step makes no cudaMalloc or cudaFree call.
//
// The definitions are split by concern over kernels/*.cu and kernels/*.cpp; each kernel's comment
// names its CPU twin in src/backend/cpu. Errors only the device can see (an index out of range)
// set a flag in device memory (see DeviceError in cuda_common.cuh); the host reads it after each
// wait and throws naming the kernel.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "upcycle/backend/backend.hpp"

namespace upcycle {

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device_index);
  ~CudaBackend() override;

  Device device() const override { return Device::cuda; }
  int device_index() const { return device_index_; }
  cudaStream_t stream() const { return stream_; }
  cublasHandle_t cublas() const { return cublas_; }
  bool allow_tf32() const { return allow_tf32_; }
  // Device word that kernels set to a DeviceError code (first error wins).
  int* device_error_flag() const { return error_flag_; }

  // --- memory and execution context (cuda_backend.cpp, cuda_memory.cpp) ---
  void* allocate(std::size_t bytes) override;
  void deallocate(void* ptr) override;
  void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes) override;
  void* allocate_pinned(std::size_t bytes) override;
  void deallocate_pinned(void* ptr) override;
  AllocatorStats allocator_stats() const override;
  void reset_peak_bytes() override;
  void synchronize() override;
  StreamHandle compute_stream() override { return stream_; }
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

  // --- creation and conversion (fill_cast.cu, random.cu) ---
  void fill(Tensor& out, double value) override;
  void cast(const Tensor& src, Tensor& dst) override;
  void arange(Tensor& out, double start, double step) override;
  void uniform(Tensor& out, std::uint64_t seed, std::uint64_t offset, double lo, double hi) override;
  void normal(Tensor& out, std::uint64_t seed, std::uint64_t offset, double mean, double std) override;
  void dropout_mask(Tensor& mask, double p, std::uint64_t seed, std::uint64_t offset) override;

  // --- matrix multiply (gemm.cpp, grouped_gemm.cu) ---
  void gemm(const GemmDesc& desc, const Tensor& a, const Tensor& b, Tensor& c) override;
  void grouped_gemm(bool trans_a, bool trans_b, double alpha, double beta, const std::vector<GemmGroup>& groups) override;
  void set_allow_tf32(bool allow) override;

  // --- elementwise (elementwise.cu) ---
  void unary(UnaryOp op, const Tensor& x, Tensor& y) override;
  void unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& gy, Tensor& gx) override;
  void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) override;
  void affine(const Tensor& x, Tensor& out, double alpha, double beta) override;
  void axpy(double alpha, const Tensor& x, Tensor& y) override;
  void pow_scalar(const Tensor& x, Tensor& out, double p) override;
  void masked_fill(const Tensor& x, const Tensor& mask, double value, Tensor& out) override;

  // --- reductions (reduce.cu) ---
  void reduce(ReduceOp op, const Tensor& x, Tensor& out, std::int64_t outer, std::int64_t axis, std::int64_t inner) override;
  void expand_axis(const Tensor& x, Tensor& out, std::int64_t outer, std::int64_t axis, std::int64_t inner, double alpha) override;
  void sum_squares(const std::vector<Tensor>& xs, Tensor& out) override;

  // --- layout (layout.cu) ---
  void permute(const Tensor& x, Tensor& out, const int* perm) override;
  void copy_axis(const Tensor& src, std::int64_t src_axis, std::int64_t src_off, Tensor& dst, std::int64_t dst_axis,
                 std::int64_t dst_off, std::int64_t outer, std::int64_t len, std::int64_t inner, bool accumulate) override;

  // --- rows (softmax.cu, cross_entropy.cu, norm.cu) ---
  void softmax(const Tensor& x, Tensor& y) override;
  void softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx) override;
  void log_softmax(const Tensor& x, Tensor& y) override;
  void log_softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx) override;
  void causal_mask(Tensor& scores, std::int64_t t, std::int64_t s) override;
  void cross_entropy(const Tensor& logits, const Tensor& targets, std::int64_t ignore_index, double smoothing,
                     Tensor& losses, Tensor& lse) override;
  void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse, std::int64_t ignore_index,
                              double smoothing, double scale, Tensor& glogits) override;
  void layernorm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps, Tensor& y, Tensor& mean,
                 Tensor& rstd) override;
  void layernorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& mean, const Tensor& rstd, const Tensor& gy,
                          Tensor& gx, Tensor& ggamma, Tensor& gbeta) override;
  void rmsnorm(const Tensor& x, const Tensor& gamma, double eps, Tensor& y, Tensor& rstd) override;
  void rmsnorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& rstd, const Tensor& gy, Tensor& gx,
                        Tensor& ggamma) override;

  // --- indexing (index.cu, topk.cu, moe_dispatch.cu) ---
  void gather_rows(const Tensor& table, const Tensor& idx, Tensor& out) override;
  void index_add_rows(Tensor& out, const Tensor& idx, const Tensor& src) override;
  void gather_last(const Tensor& x, const Tensor& idx, Tensor& out) override;
  void scatter_add_last(Tensor& out, const Tensor& idx, const Tensor& src) override;
  void topk(const Tensor& x, std::int64_t k, Tensor& values, Tensor& idx) override;
  void argsort(const Tensor& x, bool descending, Tensor& idx) override;
  void moe_dispatch(const Tensor& indices, std::int64_t num_experts, std::int64_t capacity, Tensor& counts,
                    Tensor& kept_slots, Tensor& kept_tokens, Tensor& slot_dropped) override;

  // --- clustering (cluster.cu) ---
  void normalize_rows(const Tensor& x, Tensor& out, Tensor& norms) override;
  void cluster_sums(const Tensor& points, const Tensor& score, const Tensor& assignment, const Tensor& previous,
                    std::int64_t clusters, std::int64_t chunk_rows, Tensor& out) override;

  // --- optimisers (adamw.cu) ---
  void adamw(const std::vector<AdamWTensor>& tensors, const AdamWStep& step) override;
  void ema(const std::vector<EmaTensor>& tensors, double momentum) override;

 private:
  class CachingAllocator;  // cuda_memory.cpp
  void init_allocator();     // cuda_memory.cpp
  // After the host waited: throws if a kernel set the device error flag (and clears it).
  void check_device_errors();
  void count_host_wait();

  int device_index_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  bool allow_tf32_ = false;
  std::atomic<std::int64_t> host_waits_{0};
  int* error_flag_ = nullptr;
  std::unique_ptr<CachingAllocator> allocator_;
  void* workspace_ = nullptr;
  std::size_t workspace_bytes_ = 0;
  // Small host-to-device copies from pageable memory go through this ring of pinned slots, so that
  // they do not make the host wait (cuda_backend.cpp, copy_bytes). A slot is refilled once the
  // event recorded after its copy has passed.
  static constexpr std::size_t kUploadSlotBytes = std::size_t{64} << 10;
  static constexpr int kUploadSlots = 32;
  char* upload_ring_ = nullptr;
  std::vector<cudaEvent_t> upload_events_;
  int upload_next_ = 0;
};

}  // namespace upcycle
