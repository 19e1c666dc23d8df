#pragma once
#include <vector>

#include "upcycle/autograd/var.hpp"

namespace upcycle {

Var reshape(const Var& x, const Shape& shape);  // a view; one dim may be -1
Var transpose(const Var& x, int axis0, int axis1);
Var permute(const Var& x, const std::vector<int>& perm);
Var concat(const std::vector<Var>& xs, int axis);
std::vector<Var> split(const Var& x, const std::vector<std::int64_t>& sizes, int axis);
Var slice(const Var& x, int axis, std::int64_t begin, std::int64_t end);

}  // namespace upcycle
