#include "cpu_backend.hpp"

namespace upcycle {

void CpuBackend::topk(const Tensor& x, std::int64_t k, Tensor& values, Tensor& idx) {
  UPCYCLE_THROW("cpu kernel topk: not implemented");
}

void CpuBackend::argsort(const Tensor& x, bool descending, Tensor& idx) {
  UPCYCLE_THROW("cpu kernel argsort: not implemented");
}

}  // namespace upcycle
