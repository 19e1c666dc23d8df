#pragma once
// Vectorisable float math for the CPU kernels' f32 paths. std::exp / std::tanh on float are calls
// into libm that GCC does not vectorise (without -ffast-math), which made exp-heavy kernels
// (softmax, GELU) cost 5-15 ns per element; these inline versions vectorise inside `omp simd`
// loops and are accurate to a few float ulp. The f64 paths keep libm.
#include <cmath>
#include <cstdint>
#include <type_traits>

namespace upcycle::cpu_math {

// exp(x) for float (Cephes expf: x = n ln2 + r, degree-6 polynomial for exp(r), times 2^n);
// relative error about 2e-7. exp(x) = 0 below -87.34 (so -inf -> 0), saturates at 2^127 above
// 88.38; NaN propagates.
inline float exp_f32(float x) {
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
inline float sigmoid_f32(float x) { return 1.0f / (1.0f + exp_f32(-x)); }

constexpr float kGeluC = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluA = 0.044715f;

// gelu_tanh(x) = 0.5 x (1 + tanh(u)) = x sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3).
inline float gelu_tanh_f32(float x) {
  const float u = kGeluC * (x + kGeluA * x * x * x);
  return x * sigmoid_f32(2.0f * u);
}

// d gelu_tanh / dx = s + 2 x s (1 - s) du/dx with s = sigmoid(2u) (= (1 + tanh u) / 2).
// 1 - s is taken as e s (e = exp(-2u)), not by subtraction, which would cancel where s is near 1.
inline float gelu_tanh_grad_f32(float x) {
  const float u = kGeluC * (x + kGeluA * x * x * x);
  const float e = exp_f32(-2.0f * u);
  const float s = 1.0f / (1.0f + e);
  const float du = kGeluC * (1.0f + 3.0f * kGeluA * x * x);
  return s + 2.0f * x * s * (e * s) * du;
}

// exp for the kernels templated on the element type: exp_f32 for float, libm for double.
template <class T>
inline T exp_any(T x) {
  if constexpr (std::is_same_v<T, float>) return exp_f32(x);
  else return std::exp(x);
}

}  // namespace upcycle::cpu_math
