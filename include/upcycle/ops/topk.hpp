#pragma once
#include <utility>

#include "upcycle/autograd/var.hpp"

namespace upcycle {

struct TopK {
  Var values;     // [..., k], differentiable
  Tensor indices; // [..., k] i64, not differentiable
};

// Top-k along the last dim, sorted descending (ties: lower index first).
TopK topk(const Var& x, std::int64_t k);
// x [..., C], idx [..., k] -> x at idx along the last dim (differentiable in x)
Var gather_last(const Var& x, const Tensor& idx);

}  // namespace upcycle
