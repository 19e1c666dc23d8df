#pragma once
// The error measure of the PyTorch parity tests: max|got - ref| / max(max|ref|, 1e-6) over a
// tensor, i.e. the largest difference relative to the tensor's scale (element-wise relative errors
// blow up on entries that are near zero by chance).
#include <algorithm>
#include <cmath>

#include "upcycle/core/tensor.hpp"

namespace upcycle::testing {

struct RelError {
  double rel = 0, max_diff = 0, max_ref = 0;
};

inline RelError relative_error(const Tensor& got, const Tensor& ref) {
  const Tensor a = got.to(DType::f64), b = ref.to(DType::f64);
  RelError e;
  for (std::int64_t i = 0; i < b.numel(); ++i) {
    const double x = a.data<double>()[i], r = b.data<double>()[i];
    // NaN never compares greater, so route it explicitly into the error.
    e.max_diff = std::isnan(x) ? INFINITY : std::max(e.max_diff, std::abs(x - r));
    e.max_ref = std::max(e.max_ref, std::abs(r));
  }
  e.rel = e.max_diff / std::max(e.max_ref, 1e-6);
  return e;
}

}  // namespace upcycle::testing
