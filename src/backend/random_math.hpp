#pragma once
// The per-element formulas of the random kernels, shared by the CPU backend (cpu_random.cpp) and
// the CUDA kernels (kernels/random.cu) so that both give the same numbers for the same
// (seed, offset). Each takes the Philox words of its element: the backends only differ in how
// they fetch them (the CPU one word at a time, the GPU four per Philox block), never in what they
// compute from them.
//
// Bit-identity between the backends: uniform and dropout_mask are plain arithmetic on the word
// (one explicit FMA, see scalar_math::mul_add) and give the same bits on both, in f32 and f64
// (for uniform: on a CPU build with FMA, the default -march=native one; without FMA the CPU rounds
// the product separately and the last bit may differ).
// normal computes log, sqrt and cos in double; sqrt is correctly rounded on both, but CUDA's double
// log and cos may differ from glibc's in the last ulp or two, so an f64 normal may differ by a few
// ulp, while the f32 one (the double rounded to float) is identical unless the double lands
// within those few ulp of a float rounding boundary (about one element in 10^8).
#include <cmath>
#include <cstdint>

#include "backend/scalar_math.hpp"
#include "upcycle/core/host_device.hpp"

namespace upcycle::random_math {

// Uniform in [0, 1) with 24 bits from one Philox word (Philox4x32::uniform of that word).
UPCYCLE_HD inline float unit_float(std::uint32_t word) {
  return static_cast<float>(word >> 8) * (1.0f / 16777216.0f);
}

// uniform: lo + (hi - lo) u in double.
UPCYCLE_HD inline double uniform_value(std::uint32_t word, double lo, double hi) {
  return scalar_math::mul_add(hi - lo, static_cast<double>(unit_float(word)), lo);
}

constexpr double kTwoPi = 2.0 * 3.14159265358979323846;

// normal: Box-Muller from the element's two words, in double. u1 = 1 - u in (0, 1], so the log is
// finite.
UPCYCLE_HD inline double normal_value(std::uint32_t word0, std::uint32_t word1, double mean, double std) {
  const double u1 = 1.0 - static_cast<double>(unit_float(word0));
  const double u2 = unit_float(word1);
  const double z = std::sqrt(-2.0 * std::log(u1)) * std::cos(kTwoPi * u2);
  return scalar_math::mul_add(std, z, mean);
}

// dropout_mask: the element is kept where its uniform is at least p (compared in float).
UPCYCLE_HD inline bool dropout_keeps(std::uint32_t word, float p) { return unit_float(word) >= p; }

}  // namespace upcycle::random_math
