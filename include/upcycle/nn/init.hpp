#pragma once
// Parameter initialisation from the counter-based stream. Each normal-initialised parameter
// reserves the next 2 * numel words of the stream (Box-Muller reads two words per element), so
// the parameters of a model take consecutive, non-overlapping ranges in construction order, which
// is also their named_parameters() order: the same seed and architecture give the same weights on
// every backend and every rank. Constant initialisers draw nothing, so adding a bias does not
// shift the weights that follow.
#include "upcycle/autograd/var.hpp"
#include "upcycle/core/rng.hpp"

namespace upcycle::nn {

// A parameter (leaf requiring grad) of N(0, std) values.
Var normal_parameter(const Shape& shape, double std, RngStream& rng, DType dtype = DType::f32);
// A parameter filled with `value`.
Var constant_parameter(const Shape& shape, double value, DType dtype = DType::f32);

}  // namespace upcycle::nn
