#include "cpu_backend.hpp"

namespace upcycle {

void CpuBackend::softmax(const Tensor& x, Tensor& y) {
  UPCYCLE_THROW("cpu kernel softmax: not implemented");
}

void CpuBackend::softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx) {
  UPCYCLE_THROW("cpu kernel softmax_backward: not implemented");
}

void CpuBackend::log_softmax(const Tensor& x, Tensor& y) {
  UPCYCLE_THROW("cpu kernel log_softmax: not implemented");
}

void CpuBackend::log_softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx) {
  UPCYCLE_THROW("cpu kernel log_softmax_backward: not implemented");
}

void CpuBackend::causal_mask(Tensor& scores, std::int64_t t, std::int64_t s) {
  UPCYCLE_THROW("cpu kernel causal_mask: not implemented");
}

void CpuBackend::cross_entropy(const Tensor& logits, const Tensor& targets, std::int64_t ignore_index, double smoothing, Tensor& losses, Tensor& lse) {
  UPCYCLE_THROW("cpu kernel cross_entropy: not implemented");
}

void CpuBackend::cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse, std::int64_t ignore_index, double smoothing, double scale, Tensor& glogits) {
  UPCYCLE_THROW("cpu kernel cross_entropy_backward: not implemented");
}

}  // namespace upcycle
