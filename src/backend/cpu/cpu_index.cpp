#include "cpu_backend.hpp"

namespace upcycle {

void CpuBackend::gather_rows(const Tensor& table, const Tensor& idx, Tensor& out) {
  UPCYCLE_THROW("cpu kernel gather_rows: not implemented");
}

void CpuBackend::index_add_rows(Tensor& out, const Tensor& idx, const Tensor& src) {
  UPCYCLE_THROW("cpu kernel index_add_rows: not implemented");
}

void CpuBackend::gather_last(const Tensor& x, const Tensor& idx, Tensor& out) {
  UPCYCLE_THROW("cpu kernel gather_last: not implemented");
}

void CpuBackend::scatter_add_last(Tensor& out, const Tensor& idx, const Tensor& src) {
  UPCYCLE_THROW("cpu kernel scatter_add_last: not implemented");
}

}  // namespace upcycle
