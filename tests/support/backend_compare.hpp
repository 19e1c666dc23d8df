#pragma once
// Comparing what one backend computes with what another (the CPU reference) computes for the same
// inputs: seeded host inputs, fresh copies on a device, and an element-wise comparison that names
// the worst element. Used by the backend op suite (tests/gpu/backend_op_suite.cpp) and the CUDA
// autograd and training tests.
//
// THE RULE. Element i of `got` passes against `ref` when
//   * exact tolerance: it is the same value (floating: equal and with the same sign, so -0 != +0;
//     integer: equal as int64). For integer tensors, copies, index outputs and the Philox uniform
//     and dropout kernels, which produce the same bits by design;
//   * otherwise  |got - ref| <= atol + rtol |ref| + mtol mag[i],
//     where mag (optional, f64, one entry per element) is the size of the terms that were combined
//     into ref[i] (sum_l |a_il b_lj| for a GEMM, sum |x| for a sum, ...). Rounding errors of a sum
//     scale with it, not with |ref|, which cancellation can make arbitrarily small; a bound on
//     |ref| alone is either too tight for cancelling sums or too loose for the others.
// Non-finite values: an infinity must be matched by the same infinity (never by a bound); a NaN on
// either side fails unless both are NaN and the tolerance says nan_ok, which only the cases whose
// CPU result is NaN by design set (log(-1), inf - inf, ...). A bound that is not finite (a magnitude
// built from infinite inputs) is treated as 0, i.e. the element must match exactly: no comparison
// passes because its bound overflowed.
//
// THE TOLERANCE TIERS (eps = machine epsilon: 2^-23 = 1.19e-7 for f32, 2^-52 = 2.2e-16 for f64):
//   exact_match()         same bits (see above).
//   rounded_tol(T)        one or two correctly rounded IEEE operations per element (+ - * /, sqrt,
//                         a*x+b): both sides round the same exact result, so they agree bit for
//                         bit unless the device contracts a*b+c into an FMA, which moves the result
//                         by at most one rounding of the terms: rtol = mtol = 2 eps, with mag the
//                         sum of |terms| where the caller knows it.
//   transcendental_tol(T) exp, log, tanh, erf, pow, rsqrt and the derivatives built from them:
//                         glibc and CUDA's math library are each within 1-2 ulp (CUDA's powf 4
//                         ulp), the CPU's f32 exp is its own polynomial (~2 ulp), and the two sides
//                         may use different but equal formulas (x sigmoid(2u) vs 0.5 x (1 + tanh u))
//                         that cancel differently where the result is small: f32 rtol = atol = 4e-6
//                         (~34 ulp of an O(1) value), f64 rtol = atol = 1e-14 (~45 ulp).
//   reduction_tol(T)      sums over a row, an axis or a norm's statistics, used as rtol and mtol:
//                         the device sums in another order and perhaps in float where the CPU sums
//                         f32 data in double. A block-parallel float sum of n <= 5e4 terms is off by
//                         about (n / threads + log2 threads) u sum|terms| <~ 2e-6 of the magnitude,
//                         so f32 1e-5 (5x margin; a row element dropped from a 4097-long sum moves
//                         every output by ~2.4e-4, far outside); f64 1e-12 (both sides sum in
//                         double, ~sqrt(n) u ~ 3e-14).
//   gemm_tol(T, k)        rtol = 2 eps, mtol = (2 sqrt(k) + 4) eps with mag = |alpha| |A||B| +
//                         |beta| |C|: the error of a length-k dot product in any blocked order is
//                         ~sqrt(k) u of its magnitude in practice (k u is the rigorous but never
//                         reached worst case), twice for the two sides, plus the final roundings.
//                         f32 k = 4097: 1.6e-5 of the magnitude (TF32, ~1e-3, fails it).
#include <cstdint>
#include <string>
#include <vector>

#include "upcycle/core/tensor.hpp"

namespace upcycle::testing {

// --- inputs --------------------------------------------------------------------------------------

// Machine epsilon of a floating dtype (the spacing of 1.0): 2^-23 for f32, 2^-52 for f64.
double eps_of(DType dtype);

// Seeded host tensors. Floating ones are drawn by the CPU backend's Philox kernels, integer ones
// from Philox words directly, so the same seed gives the same tensor in every test and process.
// Uniform in [lo, hi) (integer dtypes: floor of the draw, so values in [lo, hi - 1]).
Tensor host_uniform(const Shape& shape, DType dtype, std::uint64_t seed, double lo, double hi);
// Normal(mean, std), floating dtypes.
Tensor host_normal(const Shape& shape, DType dtype, std::uint64_t seed, double mean, double std);
// Uniform integers in [lo, hi) of any dtype (hi - lo <= 2^63), from 64-bit Philox draws.
Tensor host_ints(const Shape& shape, DType dtype, std::uint64_t seed, std::int64_t lo, std::int64_t hi);
// Given values (double, converted with static_cast) as a host tensor of any dtype.
Tensor host_values(const std::vector<double>& values, const Shape& shape, DType dtype);
// What an output holds before a kernel runs, so that an element the kernel fails to write cannot
// pass: NaN for floating dtypes (fails against any finite or infinite reference), -777 for
// integer ones.
Tensor host_sentinel(const Shape& shape, DType dtype);
// A fresh copy of `t` on `device` (never a shared handle, even on the same device: kernels that
// write in place must not touch the caller's tensor). An undefined tensor stays undefined.
Tensor copy_to(const Tensor& t, Device device);
// The values of a host or device tensor as doubles on the host (integers converted exactly up
// to 2^53).
std::vector<double> values_of(const Tensor& t);

// --- comparison ----------------------------------------------------------------------------------

struct Tolerance {
  double atol = 0.0, rtol = 0.0, mtol = 0.0;
  bool exact = false;
  bool nan_ok = false;  // both NaN passes (only where the CPU result is NaN by design)
  Tolerance allow_nan() const {
    Tolerance t = *this;
    t.nan_ok = true;
    return t;
  }
};

Tolerance exact_match();
Tolerance rounded_tol(DType dtype);
Tolerance transcendental_tol(DType dtype);
Tolerance reduction_tol(DType dtype);
Tolerance gemm_tol(DType dtype, std::int64_t k);
// The f32 / f64 value of the reduction tier (for callers that build a Tolerance by hand).
double reduction_rel(DType dtype);
double transcendental_rel(DType dtype);

struct Comparison {
  bool ok = true;
  std::int64_t compared = 0;  // elements compared
  std::int64_t bad = 0;       // elements outside their bound
  std::int64_t worst = -1;    // flat index of the worst element (-1: none)
  double got = 0.0, ref = 0.0, bound = 0.0;
  std::string message;        // why it failed, naming the worst element; empty when ok
};

// Compares got with ref element by element (any devices; both are copied to the host). Shapes and
// dtypes must agree. `magnitude` (undefined = none) has one value per element. `count` >= 0
// compares only the first count elements (outputs whose tail is unspecified).
Comparison compare_tensors(const Tensor& got, const Tensor& ref, const Tolerance& tol,
                           const Tensor& magnitude = Tensor(), std::int64_t count = -1);

// "[1, 4093]": the coordinates of flat index i in `shape`.
std::string index_string(const Shape& shape, std::int64_t i);

}  // namespace upcycle::testing
