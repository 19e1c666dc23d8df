#pragma once
// The error measure of the PyTorch parity tests: max|got - ref| / max(max|ref|, 1e-6) over a
// tensor, i.e. the largest difference relative to the tensor's scale (element-wise relative errors
// blow up on entries that are near zero by chance). A NaN or infinity on either side, or a shape
// mismatch, gives an infinite error, so no comparison that a NaN passes.
#include <algorithm>
#include <cmath>
#include <limits>

#include "upcycle/core/tensor.hpp"

namespace upcycle::testing {

struct RelError {
  double rel = 0, max_diff = 0, max_ref = 0;
};

inline RelError relative_error(const Tensor& got, const Tensor& ref) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  RelError e;
  if (got.shape() != ref.shape()) {
    e.rel = e.max_diff = kInf;
    return e;
  }
  const Tensor a = got.to(Device::cpu).to(DType::f64), b = ref.to(Device::cpu).to(DType::f64);
  for (std::int64_t i = 0; i < b.numel(); ++i) {
    const double x = a.data<double>()[i], r = b.data<double>()[i];
    if (!std::isfinite(x) || !std::isfinite(r)) {
      e.max_diff = kInf;
      continue;
    }
    e.max_diff = std::max(e.max_diff, std::abs(x - r));
    e.max_ref = std::max(e.max_ref, std::abs(r));
  }
  e.rel = e.max_diff / std::max(e.max_ref, 1e-6);
  return e;
}

}  // namespace upcycle::testing
