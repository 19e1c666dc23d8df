#include <cmath>

#include "cpu_backend.hpp"
#include "cpu_parallel.hpp"

namespace upcycle {

void CpuBackend::adamw(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, double lr, double beta1,
                       double beta2, double eps, double weight_decay, std::int64_t step) {
  UPCYCLE_CHECK(step >= 1, "adamw: step counts from 1, got ", step);
  UPCYCLE_CHECK(grad.numel() == param.numel() && m.numel() == param.numel() && v.numel() == param.numel(),
                "adamw: state shapes differ from ", describe(param));
  dispatch_floating(param.dtype(), "adamw", [&](auto t) {
    using T = decltype(t);
    T* p = param.data<T>();
    const T* g = grad.data<T>();
    T* pm = m.data<T>();
    T* pv = v.data<T>();
    const T b1 = static_cast<T>(beta1), b2 = static_cast<T>(beta2);
    // Bias corrections folded into the step size and the epsilon, as in the PyTorch reference.
    const double c1 = 1.0 - std::pow(beta1, static_cast<double>(step));
    const double c2 = 1.0 - std::pow(beta2, static_cast<double>(step));
    const T step_size = static_cast<T>(lr / c1);
    const T inv_sqrt_c2 = static_cast<T>(1.0 / std::sqrt(c2));
    const T decay = static_cast<T>(1.0 - lr * weight_decay);
    const T e = static_cast<T>(eps);
    const std::int64_t n = param.numel();
    cpu::parallel_for(n, 16384, [&](std::int64_t lo, std::int64_t hi) {
#pragma omp simd
    for (std::int64_t i = lo; i < hi; ++i) {
      pm[i] = b1 * pm[i] + (T(1) - b1) * g[i];
      pv[i] = b2 * pv[i] + (T(1) - b2) * g[i] * g[i];
      p[i] = p[i] * decay - step_size * pm[i] / (std::sqrt(pv[i]) * inv_sqrt_c2 + e);
    }
    });
  });
}

}  // namespace upcycle
