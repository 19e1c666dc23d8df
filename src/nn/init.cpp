#include "upcycle/nn/init.hpp"

#include "upcycle/backend/backend.hpp"

namespace upcycle::nn {

Var normal_parameter(const Shape& shape, double std, RngStream& rng, DType dtype) {
  UPCYCLE_CHECK(std >= 0.0, "normal_parameter: std must be >= 0, got ", std);
  // Initialised on the host (see Module::to): the values depend only on the stream, not the device.
  Tensor t = Tensor::empty(shape, dtype, Device::cpu);
  const std::uint64_t offset = rng.advance(2 * static_cast<std::uint64_t>(t.numel()));
  backend_of(t).normal(t, rng.seed(), offset, 0.0, std);
  return Var(t, true);
}

Var constant_parameter(const Shape& shape, double value, DType dtype) {
  return Var(Tensor::full(shape, value, dtype, Device::cpu), true);
}

}  // namespace upcycle::nn
