#pragma once
#include "upcycle/autograd/var.hpp"

namespace upcycle {

// Mean cross-entropy over rows whose target != ignore_index. logits [..., C], targets i64 of
// logits' leading shape. Label smoothing eps mixes the one-hot target with uniform eps / C.
// Returns shape [1]; 0 when every row is ignored.
Var cross_entropy(const Var& logits, const Tensor& targets, std::int64_t ignore_index = -100,
                  double label_smoothing = 0.0);
// Mean squared error over all elements, shape [1].
Var mse(const Var& a, const Var& b);

}  // namespace upcycle
