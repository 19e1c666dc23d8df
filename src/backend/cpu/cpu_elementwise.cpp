// Elementwise kernels. The op switch sits outside the loops: each case instantiates a loop over a
// lambda the compiler inlines and vectorises. The per-element formulas and the argument checks
// are shared with the CUDA kernels (backend/scalar_math.hpp, backend/checks_elementwise.hpp).
#include <cmath>

#include "backend/checks_elementwise.hpp"
#include "backend/scalar_math.hpp"
#include "cpu_backend.hpp"
#include "cpu_parallel.hpp"

namespace upcycle {

namespace {

// Elements per parallel chunk at least (below two chunks a loop runs on the calling thread).
constexpr std::int64_t kGrain = 16384;
using cpu::parallel_for;

template <class T, class F>
void map1(const Tensor& x, Tensor& y, F f) {
  const T* in = x.data<T>();
  T* out = y.data<T>();
  const std::int64_t n = x.numel();
  parallel_for(n, kGrain, [&](std::int64_t b, std::int64_t e) {
#pragma omp simd
    for (std::int64_t i = b; i < e; ++i) out[i] = f(in[i]);
  });
}

// gx = gy * d(x, y). Each derivative reads only one of x and y; the other may be undefined and
// then reads gy in its place (a valid load, ignored by d), so the loop has no conditional load and
// vectorises.
template <class T, class F>
void map_grad(const Tensor& x, const Tensor& y, const Tensor& gy, Tensor& gx, F d) {
  const T* pg = gy.data<T>();
  const T* px = x.defined() ? x.data<T>() : pg;
  const T* py = y.defined() ? y.data<T>() : pg;
  T* out = gx.data<T>();
  const std::int64_t n = gy.numel();
  parallel_for(n, kGrain, [&](std::int64_t b, std::int64_t e) {
#pragma omp simd
    for (std::int64_t i = b; i < e; ++i) out[i] = pg[i] * d(px[i], py[i]);
  });
}

// One loop per op: the formulas (backend/scalar_math.hpp, shared with the CUDA kernels) inline
// into the lambda; f32 exp, sigmoid, silu and gelu_tanh take the vectorisable exp_f32 there.
template <class T>
void unary_typed(UnaryOp op, const Tensor& x, Tensor& y) {
  scalar_math::dispatch_unary_op(op, [&](auto c) {
    constexpr UnaryOp kOp = decltype(c)::value;
    map1<T>(x, y, [](T v) { return scalar_math::unary_value<kOp>(v); });
  });
}

template <class T>
void unary_backward_typed(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& gy, Tensor& gx) {
  scalar_math::dispatch_unary_op(op, [&](auto c) {
    constexpr UnaryOp kOp = decltype(c)::value;
    // Only the operand the derivative reads is passed (see map_grad).
    map_grad<T>(scalar_math::derivative_reads_input(kOp) ? x : Tensor(),
                scalar_math::derivative_reads_output(kOp) ? y : Tensor(), gy, gx,
                [](T v, T o) { return scalar_math::unary_derivative<kOp>(v, o); });
  });
}

// out[o * inner + i] = f(a[...], b[...]) where the smaller operand repeats every `inner` elements.
template <class T, class F>
void map2(const Tensor& a, const Tensor& b, Tensor& out, F f) {
  const T* pa = a.data<T>();
  const T* pb = b.data<T>();
  T* po = out.data<T>();
  const std::int64_t na = a.numel(), nb = b.numel(), n = out.numel();
  if (na == nb) {
    parallel_for(n, kGrain, [&](std::int64_t b, std::int64_t e) {
#pragma omp simd
      for (std::int64_t i = b; i < e; ++i) po[i] = f(pa[i], pb[i]);
    });
    return;
  }
  const bool a_small = na < nb;
  const std::int64_t inner = a_small ? na : nb;
  const std::int64_t outer = inner == 0 ? 0 : n / inner;
  parallel_for(outer, (kGrain + inner - 1) / inner, [&](std::int64_t ob, std::int64_t oe) {
    for (std::int64_t o = ob; o < oe; ++o) {
      const std::int64_t base = o * inner;
      if (a_small) {
#pragma omp simd
        for (std::int64_t i = 0; i < inner; ++i) po[base + i] = f(pa[i], pb[base + i]);
      } else {
#pragma omp simd
        for (std::int64_t i = 0; i < inner; ++i) po[base + i] = f(pa[base + i], pb[i]);
      }
    }
  });
}

template <class T>
void binary_typed(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  scalar_math::dispatch_binary_op(op, [&](auto c) {
    constexpr BinaryOp kOp = decltype(c)::value;
    map2<T>(a, b, out, [](T u, T v) { return scalar_math::binary_value<kOp>(u, v); });
  });
}

}  // namespace

void CpuBackend::unary(UnaryOp op, const Tensor& x, Tensor& y) {
  check_elementwise_pair(x, y, "unary");
  dispatch_floating(x.dtype(), "unary", [&](auto t) { unary_typed<decltype(t)>(op, x, y); });
}

void CpuBackend::unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& gy, Tensor& gx) {
  check_elementwise_pair(gy, gx, "unary_backward");
  dispatch_floating(gy.dtype(), "unary_backward", [&](auto t) {
    check_unary_backward_operand(op, x, y, gy);
    unary_backward_typed<decltype(t)>(op, x, y, gy, gx);
  });
}

void CpuBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  check_binary_args(a, b, out);
  dispatch_floating(a.dtype(), "binary", [&](auto t) { binary_typed<decltype(t)>(op, a, b, out); });
}

void CpuBackend::affine(const Tensor& x, Tensor& out, double alpha, double beta) {
  check_elementwise_pair(x, out, "affine");
  dispatch_floating(x.dtype(), "affine", [&](auto t) {
    using T = decltype(t);
    const T a = static_cast<T>(alpha), b = static_cast<T>(beta);
    map1<T>(x, out, [a, b](T v) { return a * v + b; });
  });
}

void CpuBackend::axpy(double alpha, const Tensor& x, Tensor& y) {
  check_elementwise_pair(x, y, "axpy");
  dispatch_floating(x.dtype(), "axpy", [&](auto t) {
    using T = decltype(t);
    const T a = static_cast<T>(alpha);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    const std::int64_t n = x.numel();
    parallel_for(n, kGrain, [&](std::int64_t b, std::int64_t e) {
#pragma omp simd
      for (std::int64_t i = b; i < e; ++i) py[i] += a * px[i];
    });
  });
}

void CpuBackend::pow_scalar(const Tensor& x, Tensor& out, double p) {
  check_elementwise_pair(x, out, "pow_scalar");
  dispatch_floating(x.dtype(), "pow_scalar", [&](auto t) {
    using T = decltype(t);
    const T e = static_cast<T>(p);
    map1<T>(x, out, [e](T v) { return std::pow(v, e); });
  });
}

void CpuBackend::masked_fill(const Tensor& x, const Tensor& mask, double value, Tensor& out) {
  check_masked_fill_args(x, mask, out);
  dispatch_floating(x.dtype(), "masked_fill", [&](auto t) {
    using T = decltype(t);
    const T v = static_cast<T>(value);
    const T* px = x.data<T>();
    T* po = out.data<T>();
    const std::int64_t n = x.numel(), m = mask.numel();
    auto run = [&](auto mt) {
      using M = decltype(mt);
      const M* pm = mask.data<M>();
      for (std::int64_t i = 0; i < n; ++i) po[i] = pm[i % m] != M(0) ? px[i] : v;
    };
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
