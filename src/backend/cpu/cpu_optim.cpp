// Multi-tensor AdamW on the CPU: the tensors one after the other, each split over the threads.
#include <cmath>

#include "cpu_backend.hpp"
#include "cpu_parallel.hpp"
#include "backend/kernel_checks.hpp"

namespace upcycle {

namespace {

template <class T>
void adamw_tensor(const AdamWTensor& a, const AdamWStep& s) {
  T* p = a.param.data<T>();
  const T* g = a.grad.data<T>();
  T* pm = a.m.data<T>();
  T* pv = a.v.data<T>();
  const T b1 = static_cast<T>(s.beta1), b2 = static_cast<T>(s.beta2);
  // Bias corrections folded into the step size and the epsilon, as in the PyTorch reference.
  const double c1 = 1.0 - std::pow(s.beta1, static_cast<double>(s.step));
  const double c2 = 1.0 - std::pow(s.beta2, static_cast<double>(s.step));
  const T step_size = static_cast<T>(s.lr / c1);
  const T inv_sqrt_c2 = static_cast<T>(1.0 / std::sqrt(c2));
  const T decay = static_cast<T>(1.0 - s.lr * a.weight_decay);
  const T e = static_cast<T>(s.eps);
  const std::int64_t n = a.param.numel();
  cpu::parallel_for(n, 16384, [&](std::int64_t lo, std::int64_t hi) {
#pragma omp simd
    for (std::int64_t i = lo; i < hi; ++i) {
      pm[i] = b1 * pm[i] + (T(1) - b1) * g[i];
      pv[i] = b2 * pv[i] + (T(1) - b2) * g[i] * g[i];
      p[i] = p[i] * decay - step_size * pm[i] / (std::sqrt(pv[i]) * inv_sqrt_c2 + e);
    }
  });
}

template <class T>
void ema_tensor(const EmaTensor& a, double momentum) {
  T* avg = a.average.data<T>();
  const T* val = a.value.data<T>();
  const T m = static_cast<T>(momentum), rest = static_cast<T>(1.0 - momentum);
  cpu::parallel_for(a.average.numel(), 16384, [&](std::int64_t lo, std::int64_t hi) {
#pragma omp simd
    for (std::int64_t i = lo; i < hi; ++i) avg[i] = m * avg[i] + rest * val[i];
  });
}

}  // namespace

void CpuBackend::ema(const std::vector<EmaTensor>& tensors, double momentum) {
  for (const EmaTensor& a : tensors) check_ema_tensor(a, momentum);
  for (const EmaTensor& a : tensors)
    dispatch_floating(a.average.dtype(), "ema", [&](auto t) { ema_tensor<decltype(t)>(a, momentum); });
}

void CpuBackend::adamw(const std::vector<AdamWTensor>& tensors, const AdamWStep& step) {
  UPCYCLE_CHECK(step.step >= 1, "adamw: step counts from 1, got ", step.step);
  for (const AdamWTensor& a : tensors) {
    check_adamw_tensor(a);
    dispatch_floating(a.param.dtype(), "adamw", [&](auto t) { adamw_tensor<decltype(t)>(a, step); });
  }
}

}  // namespace upcycle
