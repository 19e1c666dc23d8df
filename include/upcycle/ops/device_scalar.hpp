#pragma once
// Scalars that stay on the device. A loss's value and the gradient that reaches it are [1] tensors
// on the model's device; scaling by them there (instead of reading them on the host) keeps a
// training step on the GPU free of host waits.
#include "upcycle/core/tensor.hpp"

namespace upcycle {

// x times the single element of s (a [1] tensor of any floating dtype on x's device), as a new
// tensor of x's dtype.
Tensor times_scalar(const Tensor& x, const Tensor& s);

}  // namespace upcycle
