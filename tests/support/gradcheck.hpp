#pragma once
// Finite-difference gradient checks in double. For an op f and a fixed random projection R,
// the analytic gradient of <f(x), R> from backward is compared with central differences
// (<f(x + eps e_j), R> - <f(x - eps e_j), R>) / (2 eps) for every element j of every input.
// With eps = 1e-6 in double the truncation error is O(eps^2 f''') ~ 1e-12 and the rounding
// error O(1e-16 / eps) ~ 1e-10, so the default bound |analytic - numeric| <= atol + rtol |numeric|
// with atol = 1e-7, rtol = 1e-6 leaves margin while still catching any real derivative error.
#include <gtest/gtest.h>

#include <functional>
#include <vector>

#include "upcycle/autograd/var.hpp"

namespace upcycle::testing {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-7;
  double rtol = 1e-6;
  std::uint64_t seed = 1234;  // for the projection R
};

using OpFn = std::function<Var(const std::vector<Var>&)>;

// Checks the gradient of f with respect to every input (all f64). Inputs listed in `no_grad`
// (by position) are passed as constants and not checked.
::testing::AssertionResult gradcheck(const OpFn& f, const std::vector<Tensor>& inputs,
                                     const GradcheckOptions& options = {},
                                     const std::vector<std::size_t>& no_grad = {});

// Uniform [lo, hi) f64 (or f32) tensor from a seed.
Tensor random_tensor(const Shape& shape, std::uint64_t seed, double lo = -1.0, double hi = 1.0,
                     DType dtype = DType::f64);
// Normal(0, std) tensor from a seed.
Tensor randn_tensor(const Shape& shape, std::uint64_t seed, double std = 1.0, DType dtype = DType::f64);

// Largest |a - b| over two tensors of equal shape (any floating dtypes).
double max_abs_diff(const Tensor& a, const Tensor& b);

}  // namespace upcycle::testing
