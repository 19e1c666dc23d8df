#include "cpu_backend.hpp"

namespace upcycle {

void CpuBackend::layernorm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps, Tensor& y, Tensor& mean, Tensor& rstd) {
  UPCYCLE_THROW("cpu kernel layernorm: not implemented");
}

void CpuBackend::layernorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& mean, const Tensor& rstd, const Tensor& gy, Tensor& gx, Tensor& ggamma, Tensor& gbeta) {
  UPCYCLE_THROW("cpu kernel layernorm_backward: not implemented");
}

void CpuBackend::rmsnorm(const Tensor& x, const Tensor& gamma, double eps, Tensor& y, Tensor& rstd) {
  UPCYCLE_THROW("cpu kernel rmsnorm: not implemented");
}

void CpuBackend::rmsnorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& rstd, const Tensor& gy, Tensor& gx, Tensor& ggamma) {
  UPCYCLE_THROW("cpu kernel rmsnorm_backward: not implemented");
}

}  // namespace upcycle
