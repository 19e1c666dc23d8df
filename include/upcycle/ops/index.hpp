#pragma once
#include "upcycle/autograd/var.hpp"

namespace upcycle {

// table [V, D], idx (i32/i64) of any shape -> [idx.shape..., D]
Var embedding(const Var& table, const Tensor& idx);
// x [N, D], idx [M] -> [M, D] (rows may repeat; the gradient adds them up)
Var gather_rows(const Var& x, const Tensor& idx);
// src [M, D] scattered into a zero [num_rows, D] with out[idx[i]] += src[i]
Var index_add_rows(std::int64_t num_rows, const Tensor& idx, const Var& src);

}  // namespace upcycle
