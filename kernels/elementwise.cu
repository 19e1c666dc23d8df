// Elementwise kernels: grid-stride loops, one kernel per (op, dtype) so that the op's formula
// inlines into the loop. The formulas (backend/scalar_math.hpp) and the argument checks
// (backend/checks_elementwise.hpp) are the CPU backend's own (cpu_elementwise.cpp); the
// broadcasting index math is in elementwise_math.hpp.
// Agreement with the CPU: formulas of IEEE arithmetic only (neg, square, abs, sqrt, rsqrt,
// reciprocal, relu and their derivatives, the binary ops, affine, axpy, masked_fill, and the f32
// exp, sigmoid, silu and gelu_tanh, which use exp_f32 on both) give the same bits wherever GCC
// (-march=native) and nvcc fuse the same multiply-adds into FMAs; ops through libm (log, tanh,
// erf, pow, f64 exp) may differ by the few ulp between glibc and CUDA's maths library.
#include <cmath>

#include "backend/checks_elementwise.hpp"
#include "backend/scalar_math.hpp"
#include "cuda_common.cuh"
#include "elementwise_math.hpp"

namespace upcycle {

namespace {

// CPU twin: unary_typed (map1) in src/backend/cpu/cpu_elementwise.cpp.
template <UnaryOp Op, class T>
__global__ void unary_kernel(const T* x, T* y, std::int64_t n) {
  for (std::int64_t i = cuda::grid_first(); i < n; i += cuda::grid_stride())
    y[i] = scalar_math::unary_value<Op>(x[i]);
}

// CPU twin: unary_backward_typed (map_grad) in src/backend/cpu/cpu_elementwise.cpp. Only the
// operand the derivative reads is loaded; the other pointer may be null.
template <UnaryOp Op, class T>
__global__ void unary_backward_kernel(const T* x, const T* y, const T* gy, T* gx, std::int64_t n) {
  constexpr bool kReadsX = scalar_math::derivative_reads_input(Op);
  constexpr bool kReadsY = scalar_math::derivative_reads_output(Op);
  for (std::int64_t i = cuda::grid_first(); i < n; i += cuda::grid_stride()) {
    const T xv = kReadsX ? x[i] : T(0);
    const T yv = kReadsY ? y[i] : T(0);
    gx[i] = gy[i] * scalar_math::unary_derivative<Op>(xv, yv);
  }
}

// CPU twin: binary_typed (map2) in src/backend/cpu/cpu_elementwise.cpp. The repeated operand's
// index follows the loop with a cursor (no division per element). out may alias an operand of its
// size: each element is read before it is written, by the same thread.
template <BinaryOp Op, class T>
__global__ void binary_kernel(const T* a, const T* b, T* out, std::int64_t n, cuda::BinaryBroadcast bc) {
  const std::int64_t first = cuda::grid_first(), stride = cuda::grid_stride();
  if (bc.repeat == cuda::Repeat::none) {
    for (std::int64_t i = first; i < n; i += stride) out[i] = scalar_math::binary_value<Op>(a[i], b[i]);
    return;
  }
  cuda::RepeatCursor c(first, stride, bc.period);
  if (bc.repeat == cuda::Repeat::a) {
    for (std::int64_t i = first; i < n; i += stride, c.advance())
      out[i] = scalar_math::binary_value<Op>(a[c.j], b[i]);
  } else {
    for (std::int64_t i = first; i < n; i += stride, c.advance())
      out[i] = scalar_math::binary_value<Op>(a[i], b[c.j]);
  }
}

// CPU twin: CpuBackend::affine in src/backend/cpu/cpu_elementwise.cpp (a * v + b in T, which both
// compilers fuse into one FMA). out may alias x.
template <class T>
__global__ void affine_kernel(const T* x, T* out, T alpha, T beta, std::int64_t n) {
  for (std::int64_t i = cuda::grid_first(); i < n; i += cuda::grid_stride()) out[i] = alpha * x[i] + beta;
}

// CPU twin: CpuBackend::axpy in src/backend/cpu/cpu_elementwise.cpp.
template <class T>
__global__ void axpy_kernel(T alpha, const T* x, T* y, std::int64_t n) {
  for (std::int64_t i = cuda::grid_first(); i < n; i += cuda::grid_stride()) y[i] += alpha * x[i];
}

// CPU twin: CpuBackend::pow_scalar in src/backend/cpu/cpu_elementwise.cpp (std::pow in T: powf for
// f32, pow for f64, within a few ulp of glibc's).
template <class T>
__global__ void pow_scalar_kernel(const T* x, T* out, T p, std::int64_t n) {
  for (std::int64_t i = cuda::grid_first(); i < n; i += cuda::grid_stride()) out[i] = std::pow(x[i], p);
}

// CPU twin: CpuBackend::masked_fill in src/backend/cpu/cpu_elementwise.cpp: the mask repeats every
// m elements (m == n for a mask of x's shape) and != 0 keeps x (NaN keeps, -0 fills, as on the CPU).
template <class T, class M>
__global__ void masked_fill_kernel(const T* x, const M* mask, T value, T* out, std::int64_t n, std::int64_t m) {
  const std::int64_t first = cuda::grid_first(), stride = cuda::grid_stride();
  cuda::RepeatCursor c(first, stride, m);
  for (std::int64_t i = first; i < n; i += stride, c.advance()) out[i] = mask[c.j] != M(0) ? x[i] : value;
}

}  // namespace

void CudaBackend::unary(UnaryOp op, const Tensor& x, Tensor& y) {
  check_elementwise_pair(x, y, "unary");
  dispatch_floating(x.dtype(), "unary", [&](auto t) {
    using T = decltype(t);
    const T* px = cuda::device_ptr<T>(x, "unary input");
    T* py = cuda::device_ptr<T>(y, "unary output");
    const std::int64_t n = x.numel();
    if (n == 0) return;
    scalar_math::dispatch_unary_op(op, [&](auto c) {
      unary_kernel<decltype(c)::value, T><<<cuda::grid_blocks(n), cuda::kBlockThreads, 0, stream()>>>(px, py, n);
      UPCYCLE_CUDA_CHECK_LAUNCH();
    });
  });
}

void CudaBackend::unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& gy, Tensor& gx) {
  check_elementwise_pair(gy, gx, "unary_backward");
  dispatch_floating(gy.dtype(), "unary_backward", [&](auto t) {
    using T = decltype(t);
    check_unary_backward_operand(op, x, y, gy);
    const bool reads_x = scalar_math::derivative_reads_input(op), reads_y = scalar_math::derivative_reads_output(op);
    const T* px = reads_x ? cuda::device_ptr<T>(x, "unary_backward input") : nullptr;
    const T* py = reads_y ? cuda::device_ptr<T>(y, "unary_backward output") : nullptr;
    const T* pg = cuda::device_ptr<T>(gy, "unary_backward gradient");
    T* out = cuda::device_ptr<T>(gx, "unary_backward result");
    const std::int64_t n = gy.numel();
    if (n == 0) return;
    scalar_math::dispatch_unary_op(op, [&](auto c) {
      unary_backward_kernel<decltype(c)::value, T>
          <<<cuda::grid_blocks(n), cuda::kBlockThreads, 0, stream()>>>(px, py, pg, out, n);
      UPCYCLE_CUDA_CHECK_LAUNCH();
    });
  });
}

void CudaBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  check_binary_args(a, b, out);
  dispatch_floating(a.dtype(), "binary", [&](auto t) {
    using T = decltype(t);
    const T* pa = cuda::device_ptr<T>(a, "binary a");
    const T* pb = cuda::device_ptr<T>(b, "binary b");
    T* po = cuda::device_ptr<T>(out, "binary out");
    const std::int64_t n = out.numel();
    if (n == 0) return;
    const cuda::BinaryBroadcast bc = cuda::binary_broadcast(a.numel(), b.numel());
    scalar_math::dispatch_binary_op(op, [&](auto c) {
      binary_kernel<decltype(c)::value, T>
          <<<cuda::grid_blocks(n), cuda::kBlockThreads, 0, stream()>>>(pa, pb, po, n, bc);
      UPCYCLE_CUDA_CHECK_LAUNCH();
    });
  });
}

void CudaBackend::affine(const Tensor& x, Tensor& out, double alpha, double beta) {
  check_elementwise_pair(x, out, "affine");
  dispatch_floating(x.dtype(), "affine", [&](auto t) {
    using T = decltype(t);
    const T* px = cuda::device_ptr<T>(x, "affine input");
    T* po = cuda::device_ptr<T>(out, "affine output");
    const std::int64_t n = x.numel();
    if (n == 0) return;
    affine_kernel<T><<<cuda::grid_blocks(n), cuda::kBlockThreads, 0, stream()>>>(px, po, static_cast<T>(alpha),
                                                                                  static_cast<T>(beta), n);
    UPCYCLE_CUDA_CHECK_LAUNCH();
  });
}

void CudaBackend::axpy(double alpha, const Tensor& x, Tensor& y) {
  check_elementwise_pair(x, y, "axpy");
  dispatch_floating(x.dtype(), "axpy", [&](auto t) {
    using T = decltype(t);
    const T* px = cuda::device_ptr<T>(x, "axpy x");
    T* py = cuda::device_ptr<T>(y, "axpy y");
    const std::int64_t n = x.numel();
    if (n == 0) return;
    axpy_kernel<T><<<cuda::grid_blocks(n), cuda::kBlockThreads, 0, stream()>>>(static_cast<T>(alpha), px, py, n);
    UPCYCLE_CUDA_CHECK_LAUNCH();
  });
}

void CudaBackend::pow_scalar(const Tensor& x, Tensor& out, double p) {
  check_elementwise_pair(x, out, "pow_scalar");
  dispatch_floating(x.dtype(), "pow_scalar", [&](auto t) {
    using T = decltype(t);
    const T* px = cuda::device_ptr<T>(x, "pow_scalar input");
    T* po = cuda::device_ptr<T>(out, "pow_scalar output");
    const std::int64_t n = x.numel();
    if (n == 0) return;
    pow_scalar_kernel<T><<<cuda::grid_blocks(n), cuda::kBlockThreads, 0, stream()>>>(px, po, static_cast<T>(p), n);
    UPCYCLE_CUDA_CHECK_LAUNCH();
  });
}

void CudaBackend::masked_fill(const Tensor& x, const Tensor& mask, double value, Tensor& out) {
  check_masked_fill_args(x, mask, out);
  dispatch_floating(x.dtype(), "masked_fill", [&](auto t) {
    using T = decltype(t);
    const T* px = cuda::device_ptr<T>(x, "masked_fill input");
    T* po = cuda::device_ptr<T>(out, "masked_fill output");
    const std::int64_t n = x.numel(), m = mask.numel();
    auto run = [&](auto mt) {
      using M = decltype(mt);
      const M* pm = cuda::device_ptr<M>(mask, "masked_fill mask");
      if (n == 0) return;
      masked_fill_kernel<T, M>
          <<<cuda::grid_blocks(n), cuda::kBlockThreads, 0, stream()>>>(px, pm, static_cast<T>(value), po, n, m);
      UPCYCLE_CUDA_CHECK_LAUNCH();
    };
    // The mask dtypes and the message of the CPU kernel.
    switch (mask.dtype()) {
      case DType::f32: run(float{}); break;
      case DType::f64: run(double{}); break;
      case DType::i32: run(std::int32_t{}); break;
      case DType::i64: run(std::int64_t{}); break;
      default: UPCYCLE_THROW("masked_fill: unsupported mask dtype ", dtype_name(mask.dtype()));
    }
  });
}

}  // namespace upcycle
