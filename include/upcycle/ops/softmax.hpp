#pragma once
#include "upcycle/autograd/var.hpp"

namespace upcycle {

Var softmax(const Var& x);      // over the last dim
Var log_softmax(const Var& x);  // over the last dim

}  // namespace upcycle
