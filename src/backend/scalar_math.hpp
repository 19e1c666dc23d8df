#pragma once
// The per-element formulas of the elementwise kernels -- each unary op, its derivative, each
// binary op -- and the vectorisable float exp they use, shared by the CPU backend
// (cpu_elementwise.cpp, through cpu_math.hpp also the row kernels) and the CUDA kernels
// (kernels/elementwise.cu), so that both backends compile literally the same expressions.
//
// Plain C++ with UPCYCLE_HD: under g++ these are ordinary inline functions, which the CPU loops
// inline and vectorise exactly as before; under nvcc the std:: maths calls resolve to CUDA's device
// functions. What can still differ between the backends: the libm functions (expf, logf, tanh, erf,
// pow, ... differ by an ulp or a few between glibc and CUDA) and where the compilers fuse a multiply
// and an add into an FMA (GCC does it under -march=native, nvcc always; simple a*b+c patterns fuse
// the same way, longer expressions may pick a different pair). The exp_f32 family is plain
// arithmetic and gives the same bits on both wherever both fuse.
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "upcycle/backend/backend.hpp"
#include "upcycle/core/host_device.hpp"

namespace upcycle::scalar_math {

// --- float exp without libm ---
// std::exp / std::tanh on float are calls into libm that GCC does not vectorise (without
// -ffast-math), which made exp-heavy CPU kernels (softmax, GELU) cost 5-15 ns per element; these
// inline versions vectorise inside `omp simd` loops and are accurate to a few float ulp. The f64
// paths keep libm.

// exp(x) for float (Cephes expf: x = n ln2 + r, degree-6 polynomial for exp(r), times 2^n);
// relative error about 2e-7. exp(x) = 0 below -87.34 (so -inf -> 0), saturates at 2^127 above
// 88.38; NaN propagates.
UPCYCLE_HD inline float exp_f32(float x) {
  constexpr float kHi = 88.3762626647949f, kLo = -87.3365478515625f;
  const float xc = x > kHi ? kHi : (x < kLo ? kLo : x);  // NaN fails both tests and stays NaN
  // n = round(x / ln 2) by the 1.5 * 2^23 trick (floorf, and float(int(t)) which GCC folds to
  // truncf, do not vectorise without -ffast-math). |x / ln 2| < 128, far inside the trick's range.
  constexpr float kRound = 12582912.0f;
  const float fx = (xc * 1.44269504088896341f + kRound) - kRound;
  float r = xc - fx * 0.693359375f;
  r = r - fx * -2.12194440e-4f;
  const float z = r * r;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * z + r + 1.0f;
  // 2^fx built in the exponent field (a bit cast, not memcpy: memcpy through memory stops the
  // vectoriser).
  const float scale = __builtin_bit_cast(float, (static_cast<std::int32_t>(fx) + 127) << 23);
  const float out = y * scale;
  return x < kLo ? 0.0f : out;
}

// 1 / (1 + exp(-x)).
UPCYCLE_HD inline float sigmoid_f32(float x) { return 1.0f / (1.0f + exp_f32(-x)); }

constexpr float kGeluC = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluA = 0.044715f;

// gelu_tanh(x) = 0.5 x (1 + tanh(u)) = x sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3).
UPCYCLE_HD inline float gelu_tanh_f32(float x) {
  const float u = kGeluC * (x + kGeluA * x * x * x);
  return x * sigmoid_f32(2.0f * u);
}

// d gelu_tanh / dx = s + 2 x s (1 - s) du/dx with s = sigmoid(2u) (= (1 + tanh u) / 2).
// 1 - s is taken as e s (e = exp(-2u)), not by subtraction, which would cancel where s is near 1.
UPCYCLE_HD inline float gelu_tanh_grad_f32(float x) {
  const float u = kGeluC * (x + kGeluA * x * x * x);
  const float e = exp_f32(-2.0f * u);
  const float s = 1.0f / (1.0f + e);
  const float du = kGeluC * (1.0f + 3.0f * kGeluA * x * x);
  return s + 2.0f * x * s * (e * s) * du;
}

// exp for code templated on the element type: exp_f32 for float, libm for double.
template <class T>
UPCYCLE_HD inline T exp_any(T x) {
  if constexpr (std::is_same_v<T, float>) return exp_f32(x);
  else return std::exp(x);
}

// --- unary ops and their derivatives ---
constexpr double kSqrt2OverPi = 0.7978845608028654;
constexpr double kInvSqrt2 = 0.7071067811865476;
constexpr double kInvSqrt2Pi = 0.3989422804014327;

// Whether op's derivative is computed from its output y (cheaper there); the others read the
// input x, except neg, which reads neither.
UPCYCLE_HD constexpr bool derivative_reads_output(UnaryOp op) {
  return op == UnaryOp::exp || op == UnaryOp::sqrt || op == UnaryOp::tanh || op == UnaryOp::sigmoid ||
         op == UnaryOp::reciprocal || op == UnaryOp::rsqrt;
}
UPCYCLE_HD constexpr bool derivative_reads_input(UnaryOp op) {
  return !derivative_reads_output(op) && op != UnaryOp::neg;
}

// y = op(v). The f32 exp-based ops go through exp_f32 (see above), f64 through libm.
template <UnaryOp Op, class T>
UPCYCLE_HD inline T unary_value(T v) {
  constexpr bool f32 = std::is_same_v<T, float>;
  if constexpr (Op == UnaryOp::neg) {
    return -v;
  } else if constexpr (Op == UnaryOp::exp) {
    return exp_any(v);
  } else if constexpr (Op == UnaryOp::log) {
    return std::log(v);
  } else if constexpr (Op == UnaryOp::sqrt) {
    return std::sqrt(v);
  } else if constexpr (Op == UnaryOp::rsqrt) {
    return T(1) / std::sqrt(v);
  } else if constexpr (Op == UnaryOp::square) {
    return v * v;
  } else if constexpr (Op == UnaryOp::abs) {
    return std::abs(v);
  } else if constexpr (Op == UnaryOp::tanh) {
    return std::tanh(v);
  } else if constexpr (Op == UnaryOp::sigmoid) {
    if constexpr (f32) return sigmoid_f32(v);
    else return T(1) / (T(1) + std::exp(-v));
  } else if constexpr (Op == UnaryOp::reciprocal) {
    return T(1) / v;
  } else if constexpr (Op == UnaryOp::relu) {
    return v > T(0) ? v : T(0);  // NaN -> 0
  } else if constexpr (Op == UnaryOp::gelu_tanh) {
    if constexpr (f32) {
      return gelu_tanh_f32(v);
    } else {
      const T u = T(kSqrt2OverPi) * (v + T(0.044715) * v * v * v);
      return T(0.5) * v * (T(1) + std::tanh(u));
    }
  } else if constexpr (Op == UnaryOp::gelu_erf) {
    return T(0.5) * v * (T(1) + std::erf(v * T(kInvSqrt2)));
  } else {
    static_assert(Op == UnaryOp::silu, "a unary op without a formula");
    if constexpr (f32) return v * sigmoid_f32(v);
    else return v / (T(1) + std::exp(-v));
  }
}

// f'(x) for gx = gy * f'(x); x is the input, y = f(x) the output (only the operand
// derivative_reads_* names is meaningful, the other may be anything).
template <UnaryOp Op, class T>
UPCYCLE_HD inline T unary_derivative(T x, T y) {
  constexpr bool f32 = std::is_same_v<T, float>;
  if constexpr (Op == UnaryOp::neg) {
    return T(-1);
  } else if constexpr (Op == UnaryOp::exp) {
    return y;
  } else if constexpr (Op == UnaryOp::log) {
    return T(1) / x;
  } else if constexpr (Op == UnaryOp::sqrt) {
    return T(0.5) / y;
  } else if constexpr (Op == UnaryOp::rsqrt) {
    return T(-0.5) * y * y * y;
  } else if constexpr (Op == UnaryOp::square) {
    return T(2) * x;
  } else if constexpr (Op == UnaryOp::abs) {
    return x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0));
  } else if constexpr (Op == UnaryOp::tanh) {
    return T(1) - y * y;
  } else if constexpr (Op == UnaryOp::sigmoid) {
    return y * (T(1) - y);
  } else if constexpr (Op == UnaryOp::reciprocal) {
    return -y * y;
  } else if constexpr (Op == UnaryOp::relu) {
    return x > T(0) ? T(1) : T(0);
  } else if constexpr (Op == UnaryOp::gelu_tanh) {
    if constexpr (f32) {
      return gelu_tanh_grad_f32(x);
    } else {
      const T u = T(kSqrt2OverPi) * (x + T(0.044715) * x * x * x);
      const T t = std::tanh(u);
      const T du = T(kSqrt2OverPi) * (T(1) + T(3 * 0.044715) * x * x);
      return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * du;
    }
  } else if constexpr (Op == UnaryOp::gelu_erf) {
    return T(0.5) * (T(1) + std::erf(x * T(kInvSqrt2))) + x * T(kInvSqrt2Pi) * std::exp(T(-0.5) * x * x);
  } else {
    static_assert(Op == UnaryOp::silu, "a unary op without a derivative");
    if constexpr (f32) {
      const float e = exp_f32(-x), s = 1.0f / (1.0f + e);
      return s * (1.0f + x * (e * s));  // 1 - s = e s
    } else {
      const T s = T(1) / (T(1) + std::exp(-x));
      return s * (T(1) + x * (T(1) - s));
    }
  }
}

// --- binary ops ---
// max / min by one comparison, not fmax / fmin (which the CPU loops would not vectorise): when
// either is NaN the comparison fails and b is returned, so a NaN in b propagates and one in a
// does not. The CUDA kernels must keep this, not use fmax.
template <BinaryOp Op, class T>
UPCYCLE_HD inline T binary_value(T a, T b) {
  if constexpr (Op == BinaryOp::add) return a + b;
  else if constexpr (Op == BinaryOp::sub) return a - b;
  else if constexpr (Op == BinaryOp::mul) return a * b;
  else if constexpr (Op == BinaryOp::div) return a / b;
  else if constexpr (Op == BinaryOp::max) return a > b ? a : b;
  else {
    static_assert(Op == BinaryOp::min, "a binary op without a formula");
    return a < b ? a : b;
  }
}

// --- host-side dispatch of the op to a compile-time constant ---
// Calls f(std::integral_constant<UnaryOp, op>{}) so that each op instantiates its own loop or
// kernel (the op switch sits outside the element loop).
template <class F>
void dispatch_unary_op(UnaryOp op, F&& f) {
  using E = UnaryOp;
  switch (op) {
    case E::neg: f(std::integral_constant<E, E::neg>{}); return;
    case E::exp: f(std::integral_constant<E, E::exp>{}); return;
    case E::log: f(std::integral_constant<E, E::log>{}); return;
    case E::sqrt: f(std::integral_constant<E, E::sqrt>{}); return;
    case E::rsqrt: f(std::integral_constant<E, E::rsqrt>{}); return;
    case E::square: f(std::integral_constant<E, E::square>{}); return;
    case E::abs: f(std::integral_constant<E, E::abs>{}); return;
    case E::tanh: f(std::integral_constant<E, E::tanh>{}); return;
    case E::sigmoid: f(std::integral_constant<E, E::sigmoid>{}); return;
    case E::reciprocal: f(std::integral_constant<E, E::reciprocal>{}); return;
    case E::relu: f(std::integral_constant<E, E::relu>{}); return;
    case E::gelu_tanh: f(std::integral_constant<E, E::gelu_tanh>{}); return;
    case E::gelu_erf: f(std::integral_constant<E, E::gelu_erf>{}); return;
    case E::silu: f(std::integral_constant<E, E::silu>{}); return;
  }
  UPCYCLE_THROW("unknown unary op");
}

template <class F>
void dispatch_binary_op(BinaryOp op, F&& f) {
  using E = BinaryOp;
  switch (op) {
    case E::add: f(std::integral_constant<E, E::add>{}); return;
    case E::sub: f(std::integral_constant<E, E::sub>{}); return;
    case E::mul: f(std::integral_constant<E, E::mul>{}); return;
    case E::div: f(std::integral_constant<E, E::div>{}); return;
    case E::max: f(std::integral_constant<E, E::max>{}); return;
    case E::min: f(std::integral_constant<E, E::min>{}); return;
  }
  UPCYCLE_THROW("unknown binary op");
}

// --- a * b + c as the CPU build rounds `c + a * b` ---
// GCC contracts `c + a * b` into one fused multiply-add wherever the target has one (the default
// -march=native build on any x86-64 with FMA, and every aarch64); CUDA always has one. Written out,
// the fusion no longer depends on the compiler: the CPU result stays what that build computed and
// the CUDA kernels round the same way. (A CPU build without FMA keeps the separate rounding.)
// Only the CPU's translation units call it on the host (nvcc's host pass, which lacks
// -march=native, never does), so every host copy of it is the same.
UPCYCLE_HD inline double mul_add(double a, double b, double c) {
#if defined(__CUDA_ARCH__) || defined(__FP_FAST_FMA)
  return std::fma(a, b, c);
#else
  return c + a * b;
#endif
}

// arange: element i of start, start + step, ... in double (then converted to the element type).
UPCYCLE_HD inline double arange_value(double start, double step, std::int64_t i) {
  return mul_add(step, static_cast<double>(i), start);
}

}  // namespace upcycle::scalar_math
