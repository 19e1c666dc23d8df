#include <cstdlib>
#include <cstring>

#include "cpu_backend.hpp"

namespace upcycle {

Backend& cpu_backend() {
  static CpuBackend backend;
  return backend;
}

Device CpuBackend::device() const { return Device::cpu; }

void* CpuBackend::allocate(std::size_t bytes) {
  // 64-byte alignment for vector loads; aligned_alloc needs a multiple of the alignment.
  const std::size_t rounded = (bytes + 63) / 64 * 64;
  if (rounded == 0) return std::aligned_alloc(64, 64);
  void* p = std::aligned_alloc(64, rounded);
  UPCYCLE_CHECK(p != nullptr, "out of host memory allocating ", bytes, " bytes");
  return p;
}

void CpuBackend::deallocate(void* ptr) { std::free(ptr); }

void CpuBackend::copy_bytes(void* dst, Device dst_device, const void* src, Device src_device,
                            std::size_t bytes) {
  UPCYCLE_CHECK(dst_device == Device::cpu && src_device == Device::cpu,
                "the CPU backend copies host memory only");
  if (bytes) std::memmove(dst, src, bytes);
}

namespace {
template <class T>
void fill_typed(Tensor& out, double value) {
  T* p = out.data<T>();
  const T v = static_cast<T>(value);
  const std::int64_t n = out.numel();
#pragma omp parallel for schedule(static) if (n > 65536)
  for (std::int64_t i = 0; i < n; ++i) p[i] = v;
}

template <class F>
void dispatch_any(DType dtype, F&& f) {
  switch (dtype) {
    case DType::f32: f(float{}); return;
    case DType::f64: f(double{}); return;
    case DType::i32: f(std::int32_t{}); return;
    case DType::i64: f(std::int64_t{}); return;
    default: UPCYCLE_THROW("the CPU backend does not handle ", dtype_name(dtype));
  }
}
}  // namespace

void CpuBackend::fill(Tensor& out, double value) {
  dispatch_any(out.dtype(), [&](auto t) { fill_typed<decltype(t)>(out, value); });
}

void CpuBackend::cast(const Tensor& src, Tensor& dst) {
  UPCYCLE_CHECK(src.numel() == dst.numel(), "cast: ", describe(src), " -> ", describe(dst));
  dispatch_any(src.dtype(), [&](auto s) {
    using S = decltype(s);
    dispatch_any(dst.dtype(), [&](auto d) {
      using D = decltype(d);
      const S* in = src.data<S>();
      D* out = dst.data<D>();
      const std::int64_t n = src.numel();
      for (std::int64_t i = 0; i < n; ++i) out[i] = static_cast<D>(in[i]);
    });
  });
}

void CpuBackend::arange(Tensor& out, double start, double step) {
  dispatch_any(out.dtype(), [&](auto t) {
    using T = decltype(t);
    T* p = out.data<T>();
    for (std::int64_t i = 0; i < out.numel(); ++i) p[i] = static_cast<T>(start + step * static_cast<double>(i));
  });
}

}  // namespace upcycle
