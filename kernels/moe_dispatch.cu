// CudaBackend::moe_dispatch: the MoE routing bookkeeping on the GPU through Thrust (one of the two
// translation units allowed to use Thrust/CUB). The algorithm is moe_dispatch_thrust.inl, shared
// with a CPU test that runs it under Thrust's CPP system against the CPU backend.
//
// Thrust runs with par_nosync on the compute stream (it never waits for the stream: nothing here
// needs a device value on the host) and takes its temporary memory (the radix sort's and the
// scan's) from the backend's caching allocator, so a training step makes no cudaMalloc. A block
// freed at the end of a Thrust call may be handed out again at once: all work is on the one
// compute stream, so a later user runs after the kernels that used it.
#include <cstddef>

#include <thrust/system/cuda/execution_policy.h>

#include "backend/kernel_checks.hpp"
#include "cuda_common.cuh"
#include "moe_dispatch_thrust.inl"

namespace upcycle {

namespace {

// Thrust's temporary allocations served by the backend (Thrust's allocator interface: char units).
class BackendTempAllocator {
 public:
  using value_type = char;
  explicit BackendTempAllocator(CudaBackend& backend) : backend_(backend) {}
  char* allocate(std::size_t bytes) { return static_cast<char*>(backend_.allocate(bytes)); }
  void deallocate(char* ptr, std::size_t /*bytes*/) { backend_.deallocate(ptr); }

 private:
  CudaBackend& backend_;
};

// An expert id outside [0, E): only the device sees it; the host throws at its next wait.
struct ReportBadExpert {
  int* flag;
  __host__ __device__ void operator()() const {
#ifdef __CUDA_ARCH__
    cuda::report_device_error(flag, cuda::DeviceError::moe_dispatch_expert);
#endif
  }
};

}  // namespace

// CPU twin: CpuBackend::moe_dispatch in src/backend/cpu/cpu_dispatch.cpp (which throws for an
// invalid expert id; here the slot is reported and left out of every count).
void CudaBackend::moe_dispatch(const Tensor& indices, std::int64_t num_experts, std::int64_t capacity, Tensor& counts,
                               Tensor& kept_slots, Tensor& kept_tokens, Tensor& slot_dropped) {
  check_moe_dispatch_args(indices, num_experts, capacity, counts, kept_slots, kept_tokens, slot_dropped);
  const std::int64_t* pi = cuda::device_ptr<std::int64_t>(indices, "moe_dispatch indices");
  std::int64_t* pc = cuda::device_ptr<std::int64_t>(counts, "moe_dispatch counts");
  std::int64_t* ps = cuda::device_ptr<std::int64_t>(kept_slots, "moe_dispatch kept_slots");
  std::int64_t* pt = cuda::device_ptr<std::int64_t>(kept_tokens, "moe_dispatch kept_tokens");
  std::int64_t* pd = cuda::device_ptr<std::int64_t>(slot_dropped, "moe_dispatch slot_dropped");
  const std::int64_t slots = indices.numel(), k = indices.dim(1);
  auto* scratch = static_cast<std::int64_t*>(
      workspace(static_cast<std::size_t>(moe_thrust::scratch_elements(slots, num_experts)) * sizeof(std::int64_t)));
  BackendTempAllocator alloc(*this);
  moe_thrust::moe_dispatch_thrust(thrust::cuda::par_nosync(alloc).on(stream_), pi, slots, k, num_experts, capacity, pc,
                                  ps, pt, pd, scratch, ReportBadExpert{error_flag_});
  UPCYCLE_CUDA_CHECK_LAUNCH();
}

}  // namespace upcycle
