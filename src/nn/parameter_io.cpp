#include "upcycle/nn/parameter_io.hpp"

namespace upcycle::nn {

void assign_parameter(Module& module, const std::string& name, const Tensor& value) {
  Var& p = module.parameter(name);
  UPCYCLE_CHECK(value.defined(), "parameter '", name, "': no value given");
  if (value.shape() != p.shape())
    UPCYCLE_THROW("parameter '", name, "': expected shape ", p.shape().str(), ", got ",
                  value.shape().str());
  if (!is_floating(value.dtype()))
    UPCYCLE_THROW("parameter '", name, "': expected floating values, got ", dtype_name(value.dtype()));
  p.value().copy_from(value.to(p.dtype()));
}

}  // namespace upcycle::nn
