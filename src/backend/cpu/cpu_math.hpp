#pragma once
// Vectorisable float math for the CPU kernels' f32 paths (exp_f32 and the functions built on it).
// They live in backend/scalar_math.hpp, shared with the CUDA kernels so that both backends
// compute the same bits; this header keeps the CPU kernels' names for them.
#include "backend/scalar_math.hpp"

namespace upcycle::cpu_math {

using scalar_math::exp_any;
using scalar_math::exp_f32;
using scalar_math::gelu_tanh_f32;
using scalar_math::gelu_tanh_grad_f32;
using scalar_math::kGeluA;
using scalar_math::kGeluC;
using scalar_math::sigmoid_f32;

}  // namespace upcycle::cpu_math
