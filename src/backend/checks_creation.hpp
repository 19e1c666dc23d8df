#pragma once
// Argument checks of the creation, conversion and random kernels, shared by the CPU backend
// (cpu_memory.cpp, cpu_random.cpp) and the CUDA backend (kernels/fill_cast.cu, kernels/random.cu).
#include "upcycle/core/tensor.hpp"

namespace upcycle {

inline void check_cast_args(const Tensor& src, const Tensor& dst) {
  UPCYCLE_CHECK(src.numel() == dst.numel(), "cast: ", describe(src), " -> ", describe(dst));
}

inline void check_dropout_probability(double p) {
  UPCYCLE_CHECK(p >= 0.0 && p < 1.0, "dropout probability must be in [0, 1), got ", p);
}

}  // namespace upcycle
