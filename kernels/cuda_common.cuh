#pragma once
// What every kernel file shares: error checks that throw with the CUDA / cuBLAS error's name,
// typed device pointers of tensors, grid-stride loops and the device error flag.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/dtype_dispatch.hpp"
#include "cuda_backend.hpp"
#include "launch_geometry.hpp"
#include "upcycle/core/tensor.hpp"

#define UPCYCLE_CUDA_CHECK(expr)                                                                              \
  do {                                                                                                        \
    const cudaError_t upcycle_cuda_status_ = (expr);                                                          \
    if (upcycle_cuda_status_ != cudaSuccess)                                                                  \
      UPCYCLE_THROW(#expr, " failed: ", cudaGetErrorName(upcycle_cuda_status_), " (",                       \
                    cudaGetErrorString(upcycle_cuda_status_), ")");                                           \
  } while (0)

#define UPCYCLE_CUBLAS_CHECK(expr)                                                                            \
  do {                                                                                                        \
    const cublasStatus_t upcycle_cublas_status_ = (expr);                                                     \
    if (upcycle_cublas_status_ != CUBLAS_STATUS_SUCCESS)                                                      \
      UPCYCLE_THROW(#expr, " failed: ", cublasGetStatusName(upcycle_cublas_status_), " (",                  \
                    cublasGetStatusString(upcycle_cublas_status_), ")");                                      \
  } while (0)

// After a kernel launch: a bad configuration is reported at once (not at the next wait).
#define UPCYCLE_CUDA_CHECK_LAUNCH() UPCYCLE_CUDA_CHECK(cudaGetLastError())

namespace upcycle::cuda {

// The CUDA backend a kernel entry point runs on (`this` in CudaBackend members).
// Typed device pointer of a tensor on the GPU; throws (on the host) for a host tensor or a dtype
// other than T.
template <class T>
T* device_ptr(const Tensor& t, const char* what) {
  UPCYCLE_CHECK(t.defined(), what, ": undefined tensor");
  UPCYCLE_CHECK(t.device() == Device::cuda, what, ": expected a cuda tensor, got ", describe(t));
  UPCYCLE_CHECK(t.dtype() == dtype_of<T>::value, what, ": expected ", dtype_name(dtype_of<T>::value), ", got ",
                describe(t));
  return static_cast<T*>(t.raw());
}

// Errors only the device can see. A kernel stores its code with atomicCAS (the first error wins);
// the backend reads the flag after the host's next wait and throws with the message below.
enum class DeviceError : int {
  none = 0,
  gather_rows_index = 1,       // gather_rows: index outside [0, V)
  index_add_rows_index = 2,    // index_add_rows: index outside [0, rows of out)
  gather_last_index = 3,       // gather_last: index outside [0, cols)
  scatter_add_last_index = 4,  // scatter_add_last: index outside [0, cols)
  cross_entropy_target = 5,    // cross_entropy: target neither in [0, classes) nor ignore_index
  moe_dispatch_expert = 6,     // moe_dispatch: expert id outside [0, E)
  cluster_sums_assignment = 7, // cluster_sums: cluster index outside [0, K)
};
const char* device_error_message(int code);  // cuda_backend.cpp

#ifdef __CUDACC__
__device__ inline void report_device_error(int* flag, DeviceError code) {
  atomicCAS(flag, 0, static_cast<int>(code));
}

// for (i = first; i < n; i += stride) over the whole grid.
__device__ inline std::int64_t grid_first() {
  return static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ inline std::int64_t grid_stride() { return static_cast<std::int64_t>(gridDim.x) * blockDim.x; }
#endif

}  // namespace upcycle::cuda
