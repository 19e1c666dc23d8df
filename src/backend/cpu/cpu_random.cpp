// Random kernels on the Philox stream; the CUDA backend computes the same element formulas.
#include <cmath>

#include "cpu_backend.hpp"
#include "cpu_parallel.hpp"
#include "upcycle/core/rng.hpp"

namespace upcycle {

void CpuBackend::uniform(Tensor& out, std::uint64_t seed, std::uint64_t offset, double lo, double hi) {
  dispatch_floating(out.dtype(), "uniform", [&](auto t) {
    using T = decltype(t);
    T* p = out.data<T>();
    const std::int64_t n = out.numel();
    cpu::parallel_for(n, 32768, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t i = b; i < e; ++i)
        p[i] = static_cast<T>(lo + (hi - lo) * Philox4x32::uniform(seed, offset + static_cast<std::uint64_t>(i)));
    });
  });
}

void CpuBackend::normal(Tensor& out, std::uint64_t seed, std::uint64_t offset, double mean, double std) {
  dispatch_floating(out.dtype(), "normal", [&](auto t) {
    using T = decltype(t);
    T* p = out.data<T>();
    const std::int64_t n = out.numel();
    cpu::parallel_for(n, 32768, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t i = b; i < e; ++i) {
        const std::uint64_t base = offset + 2 * static_cast<std::uint64_t>(i);
        // u1 in (0, 1] so the log is finite.
        const double u1 = 1.0 - static_cast<double>(Philox4x32::uniform(seed, base));
        const double u2 = Philox4x32::uniform(seed, base + 1);
        const double z = std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
        p[i] = static_cast<T>(mean + std * z);
      }
    });
  });
}

void CpuBackend::dropout_mask(Tensor& mask, double p, std::uint64_t seed, std::uint64_t offset) {
  UPCYCLE_CHECK(p >= 0.0 && p < 1.0, "dropout probability must be in [0, 1), got ", p);
  dispatch_floating(mask.dtype(), "dropout_mask", [&](auto t) {
    using T = decltype(t);
    T* m = mask.data<T>();
    const T keep = static_cast<T>(1.0 / (1.0 - p));
    const float pf = static_cast<float>(p);
    const std::int64_t n = mask.numel();
    cpu::parallel_for(n, 32768, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t i = b; i < e; ++i)
        m[i] = Philox4x32::uniform(seed, offset + static_cast<std::uint64_t>(i)) >= pf ? keep : T(0);
    });
  });
}

}  // namespace upcycle
