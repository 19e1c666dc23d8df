// Random kernels on the Philox stream. The element formulas (backend/random_math.hpp) are shared
// with the CUDA kernels (kernels/random.cu), which give the same numbers for the same (seed, offset).
#include "backend/checks_creation.hpp"
#include "backend/random_math.hpp"
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
      for (std::int64_t i = b; i < e; ++i) {
        const std::uint32_t w = Philox4x32::word(seed, offset + static_cast<std::uint64_t>(i));
        p[i] = static_cast<T>(random_math::uniform_value(w, lo, hi));
      }
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
        const std::uint32_t w0 = Philox4x32::word(seed, base), w1 = Philox4x32::word(seed, base + 1);
        p[i] = static_cast<T>(random_math::normal_value(w0, w1, mean, std));
      }
    });
  });
}

void CpuBackend::dropout_mask(Tensor& mask, double p, std::uint64_t seed, std::uint64_t offset) {
  check_dropout_probability(p);
  dispatch_floating(mask.dtype(), "dropout_mask", [&](auto t) {
    using T = decltype(t);
    T* m = mask.data<T>();
    const T keep = static_cast<T>(1.0 / (1.0 - p));
    const float pf = static_cast<float>(p);
    const std::int64_t n = mask.numel();
    cpu::parallel_for(n, 32768, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t i = b; i < e; ++i) {
        const std::uint32_t w = Philox4x32::word(seed, offset + static_cast<std::uint64_t>(i));
        m[i] = random_math::dropout_keeps(w, pf) ? keep : T(0);
      }
    });
  });
}

}  // namespace upcycle
