// Creation and conversion kernels: fill, cast, arange. Grid-stride loops over the elements; the
// values and the arange formula are computed exactly as the CPU backend does (cpu_memory.cpp).
#include "backend/checks_creation.hpp"
#include "backend/scalar_math.hpp"
#include "cuda_common.cuh"

namespace upcycle {

namespace {

// CPU twin: fill_typed in src/backend/cpu/cpu_memory.cpp. The value is converted once on the host,
// so every dtype gets the CPU's bits.
template <class T>
__global__ void fill_kernel(T* out, T value, std::int64_t n) {
  for (std::int64_t i = cuda::grid_first(); i < n; i += cuda::grid_stride()) out[i] = value;
}

// CPU twin: CpuBackend::cast in src/backend/cpu/cpu_memory.cpp. static_cast rounds to nearest
// between floating types and from integers, truncates from floating to integer. A floating value
// outside the integer type's range (or NaN) is undefined behaviour in C++; the GPU saturates it
// (NaN -> 0) where x86 gives the type's minimum, so such values are not compared.
template <class S, class D>
__global__ void cast_kernel(const S* in, D* out, std::int64_t n) {
  for (std::int64_t i = cuda::grid_first(); i < n; i += cuda::grid_stride()) out[i] = static_cast<D>(in[i]);
}

// CPU twin: CpuBackend::arange in src/backend/cpu/cpu_memory.cpp (the same arange_value, with its
// explicit FMA, so the doubles agree bit for bit before the conversion to T).
template <class T>
__global__ void arange_kernel(T* out, double start, double step, std::int64_t n) {
  for (std::int64_t i = cuda::grid_first(); i < n; i += cuda::grid_stride())
    out[i] = static_cast<T>(scalar_math::arange_value(start, step, i));
}

}  // namespace

void CudaBackend::fill(Tensor& out, double value) {
  dispatch_any(out.dtype(), "fill", [&](auto t) {
    using T = decltype(t);
    T* p = cuda::device_ptr<T>(out, "fill");
    const std::int64_t n = out.numel();
    if (n == 0) return;
    fill_kernel<T><<<cuda::grid_blocks(n), cuda::kBlockThreads, 0, stream()>>>(p, static_cast<T>(value), n);
    UPCYCLE_CUDA_CHECK_LAUNCH();
  });
}

void CudaBackend::cast(const Tensor& src, Tensor& dst) {
  check_cast_args(src, dst);
  dispatch_any(src.dtype(), "cast", [&](auto s) {
    using S = decltype(s);
    dispatch_any(dst.dtype(), "cast", [&](auto d) {
      using D = decltype(d);
      const S* in = cuda::device_ptr<S>(src, "cast source");
      D* out = cuda::device_ptr<D>(dst, "cast destination");
      const std::int64_t n = src.numel();
      if (n == 0) return;
      cast_kernel<S, D><<<cuda::grid_blocks(n), cuda::kBlockThreads, 0, stream()>>>(in, out, n);
      UPCYCLE_CUDA_CHECK_LAUNCH();
    });
  });
}

void CudaBackend::arange(Tensor& out, double start, double step) {
  dispatch_any(out.dtype(), "arange", [&](auto t) {
    using T = decltype(t);
    T* p = cuda::device_ptr<T>(out, "arange");
    const std::int64_t n = out.numel();
    if (n == 0) return;
    arange_kernel<T><<<cuda::grid_blocks(n), cuda::kBlockThreads, 0, stream()>>>(p, start, step, n);
    UPCYCLE_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace upcycle
