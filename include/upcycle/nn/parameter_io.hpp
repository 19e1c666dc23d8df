#pragma once
// Setting parameters from tensors by name: used by the golden tests now and by checkpoint loading
// later (which reads /model/<name> for every named_parameters() entry).
#include <string>

#include "upcycle/nn/module.hpp"

namespace upcycle::nn {

// Copies `value` into the parameter `name` of `module`, in place, so every handle to the
// parameter (optimiser state, other modules sharing it) sees the new values. Floating values are
// converted to the parameter's dtype. Throws naming the parameter and both shapes when the shapes
// differ, and listing the known names when there is no such parameter.
void assign_parameter(Module& module, const std::string& name, const Tensor& value);

}  // namespace upcycle::nn
