// Elementwise kernels. The op switch sits outside the loops: each case instantiates a loop over a
// lambda the compiler inlines and vectorises.
#include <cmath>
#include <type_traits>

#include "cpu_backend.hpp"
#include "cpu_math.hpp"
#include "cpu_parallel.hpp"

namespace upcycle {

namespace {

constexpr double kSqrt2OverPi = 0.7978845608028654;
constexpr double kInvSqrt2 = 0.7071067811865476;
constexpr double kInvSqrt2Pi = 0.3989422804014327;

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

// f32 paths of the exp-based ops through the vectorisable cpu_math functions (libm's float exp
// and tanh do not vectorise); f64 keeps libm. Returns false for the other ops.
bool unary_f32_fast(UnaryOp op, const Tensor& x, Tensor& y) {
  using namespace cpu_math;
  switch (op) {
    case UnaryOp::exp: map1<float>(x, y, [](float v) { return exp_f32(v); }); return true;
    case UnaryOp::sigmoid: map1<float>(x, y, [](float v) { return sigmoid_f32(v); }); return true;
    case UnaryOp::silu: map1<float>(x, y, [](float v) { return v * sigmoid_f32(v); }); return true;
    case UnaryOp::gelu_tanh: map1<float>(x, y, [](float v) { return gelu_tanh_f32(v); }); return true;
    default: return false;
  }
}

bool unary_backward_f32_fast(UnaryOp op, const Tensor& x, const Tensor& gy, Tensor& gx) {
  using namespace cpu_math;
  switch (op) {
    case UnaryOp::gelu_tanh:
      map_grad<float>(x, Tensor(), gy, gx, [](float v, float) { return gelu_tanh_grad_f32(v); });
      return true;
    case UnaryOp::silu:
      map_grad<float>(x, Tensor(), gy, gx, [](float v, float) {
        const float e = exp_f32(-v), s = 1.0f / (1.0f + e);
        return s * (1.0f + v * (e * s));  // 1 - s = e s
      });
      return true;
    default: return false;
  }
}

template <class T>
void unary_typed(UnaryOp op, const Tensor& x, Tensor& y) {
  if constexpr (std::is_same_v<T, float>) {
    if (unary_f32_fast(op, x, y)) return;
  }
  switch (op) {
    case UnaryOp::neg: return map1<T>(x, y, [](T v) { return -v; });
    case UnaryOp::exp: return map1<T>(x, y, [](T v) { return std::exp(v); });
    case UnaryOp::log: return map1<T>(x, y, [](T v) { return std::log(v); });
    case UnaryOp::sqrt: return map1<T>(x, y, [](T v) { return std::sqrt(v); });
    case UnaryOp::rsqrt: return map1<T>(x, y, [](T v) { return T(1) / std::sqrt(v); });
    case UnaryOp::square: return map1<T>(x, y, [](T v) { return v * v; });
    case UnaryOp::abs: return map1<T>(x, y, [](T v) { return std::abs(v); });
    case UnaryOp::tanh: return map1<T>(x, y, [](T v) { return std::tanh(v); });
    case UnaryOp::sigmoid: return map1<T>(x, y, [](T v) { return T(1) / (T(1) + std::exp(-v)); });
    case UnaryOp::reciprocal: return map1<T>(x, y, [](T v) { return T(1) / v; });
    case UnaryOp::relu: return map1<T>(x, y, [](T v) { return v > T(0) ? v : T(0); });
    case UnaryOp::gelu_tanh:
      return map1<T>(x, y, [](T v) {
        const T u = T(kSqrt2OverPi) * (v + T(0.044715) * v * v * v);
        return T(0.5) * v * (T(1) + std::tanh(u));
      });
    case UnaryOp::gelu_erf:
      return map1<T>(x, y, [](T v) { return T(0.5) * v * (T(1) + std::erf(v * T(kInvSqrt2))); });
    case UnaryOp::silu: return map1<T>(x, y, [](T v) { return v / (T(1) + std::exp(-v)); });
  }
  UPCYCLE_THROW("unknown unary op");
}

template <class T>
void unary_backward_typed(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& gy, Tensor& gx) {
  // Derivatives that read y require it; the others read x.
  const bool from_y = op == UnaryOp::exp || op == UnaryOp::sqrt || op == UnaryOp::tanh ||
                      op == UnaryOp::sigmoid || op == UnaryOp::reciprocal || op == UnaryOp::rsqrt;
  UPCYCLE_CHECK(from_y ? y.defined() : x.defined() || op == UnaryOp::neg,
                "unary_backward: missing the ", from_y ? "output" : "input");
  if constexpr (std::is_same_v<T, float>) {
    if (unary_backward_f32_fast(op, x, gy, gx)) return;
  }
  switch (op) {
    case UnaryOp::neg: return map_grad<T>(Tensor(), Tensor(), gy, gx, [](T, T) { return T(-1); });
    case UnaryOp::exp: return map_grad<T>(Tensor(), y, gy, gx, [](T, T o) { return o; });
    case UnaryOp::log: return map_grad<T>(x, Tensor(), gy, gx, [](T v, T) { return T(1) / v; });
    case UnaryOp::sqrt: return map_grad<T>(Tensor(), y, gy, gx, [](T, T o) { return T(0.5) / o; });
    case UnaryOp::rsqrt:
      return map_grad<T>(Tensor(), y, gy, gx, [](T, T o) { return T(-0.5) * o * o * o; });
    case UnaryOp::square: return map_grad<T>(x, Tensor(), gy, gx, [](T v, T) { return T(2) * v; });
    case UnaryOp::abs:
      return map_grad<T>(x, Tensor(), gy, gx, [](T v, T) { return v > T(0) ? T(1) : (v < T(0) ? T(-1) : T(0)); });
    case UnaryOp::tanh: return map_grad<T>(Tensor(), y, gy, gx, [](T, T o) { return T(1) - o * o; });
    case UnaryOp::sigmoid: return map_grad<T>(Tensor(), y, gy, gx, [](T, T o) { return o * (T(1) - o); });
    case UnaryOp::reciprocal: return map_grad<T>(Tensor(), y, gy, gx, [](T, T o) { return -o * o; });
    case UnaryOp::relu: return map_grad<T>(x, Tensor(), gy, gx, [](T v, T) { return v > T(0) ? T(1) : T(0); });
    case UnaryOp::gelu_tanh:
      return map_grad<T>(x, Tensor(), gy, gx, [](T v, T) {
        const T u = T(kSqrt2OverPi) * (v + T(0.044715) * v * v * v);
        const T t = std::tanh(u);
        const T du = T(kSqrt2OverPi) * (T(1) + T(3 * 0.044715) * v * v);
        return T(0.5) * (T(1) + t) + T(0.5) * v * (T(1) - t * t) * du;
      });
    case UnaryOp::gelu_erf:
      return map_grad<T>(x, Tensor(), gy, gx, [](T v, T) {
        return T(0.5) * (T(1) + std::erf(v * T(kInvSqrt2))) + v * T(kInvSqrt2Pi) * std::exp(T(-0.5) * v * v);
      });
    case UnaryOp::silu:
      return map_grad<T>(x, Tensor(), gy, gx, [](T v, T) {
        const T s = T(1) / (T(1) + std::exp(-v));
        return s * (T(1) + v * (T(1) - s));
      });
  }
  UPCYCLE_THROW("unknown unary op");
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
  switch (op) {
    case BinaryOp::add: return map2<T>(a, b, out, [](T x, T y) { return x + y; });
    case BinaryOp::sub: return map2<T>(a, b, out, [](T x, T y) { return x - y; });
    case BinaryOp::mul: return map2<T>(a, b, out, [](T x, T y) { return x * y; });
    case BinaryOp::div: return map2<T>(a, b, out, [](T x, T y) { return x / y; });
    case BinaryOp::max: return map2<T>(a, b, out, [](T x, T y) { return x > y ? x : y; });
    case BinaryOp::min: return map2<T>(a, b, out, [](T x, T y) { return x < y ? x : y; });
  }
  UPCYCLE_THROW("unknown binary op");
}

void check_unary_shapes(const Tensor& x, const Tensor& y, const char* what) {
  UPCYCLE_CHECK(x.dtype() == y.dtype() && x.numel() == y.numel(), what, ": ", describe(x), " -> ",
                describe(y));
}

}  // namespace

void CpuBackend::unary(UnaryOp op, const Tensor& x, Tensor& y) {
  check_unary_shapes(x, y, "unary");
  dispatch_floating(x.dtype(), "unary", [&](auto t) { unary_typed<decltype(t)>(op, x, y); });
}

void CpuBackend::unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& gy, Tensor& gx) {
  check_unary_shapes(gy, gx, "unary_backward");
  dispatch_floating(gy.dtype(), "unary_backward",
                    [&](auto t) { unary_backward_typed<decltype(t)>(op, x, y, gy, gx); });
}

void CpuBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  UPCYCLE_CHECK(a.dtype() == b.dtype() && b.dtype() == out.dtype(), "binary: dtypes differ: ",
                describe(a), ", ", describe(b));
  const Shape& big = a.numel() >= b.numel() ? a.shape() : b.shape();
  const Shape& small = a.numel() >= b.numel() ? b.shape() : a.shape();
  UPCYCLE_CHECK(big == small || is_suffix_of(small, big) || small.numel() == big.numel(),
                "binary: cannot broadcast ", describe(a), " with ", describe(b),
                " (the smaller shape must be a suffix of the larger)");
  UPCYCLE_CHECK(out.numel() == big.numel(), "binary: output ", describe(out), " for ", big.str());
  dispatch_floating(a.dtype(), "binary", [&](auto t) { binary_typed<decltype(t)>(op, a, b, out); });
}

void CpuBackend::affine(const Tensor& x, Tensor& out, double alpha, double beta) {
  check_unary_shapes(x, out, "affine");
  dispatch_floating(x.dtype(), "affine", [&](auto t) {
    using T = decltype(t);
    const T a = static_cast<T>(alpha), b = static_cast<T>(beta);
    map1<T>(x, out, [a, b](T v) { return a * v + b; });
  });
}

void CpuBackend::axpy(double alpha, const Tensor& x, Tensor& y) {
  check_unary_shapes(x, y, "axpy");
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
  check_unary_shapes(x, out, "pow_scalar");
  dispatch_floating(x.dtype(), "pow_scalar", [&](auto t) {
    using T = decltype(t);
    const T e = static_cast<T>(p);
    map1<T>(x, out, [e](T v) { return std::pow(v, e); });
  });
}

void CpuBackend::masked_fill(const Tensor& x, const Tensor& mask, double value, Tensor& out) {
  check_unary_shapes(x, out, "masked_fill");
  UPCYCLE_CHECK(mask.numel() > 0 && x.numel() % mask.numel() == 0, "masked_fill: mask ",
                describe(mask), " does not tile ", describe(x));
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
