#include "cpu_backend.hpp"

namespace upcycle {

void CpuBackend::permute(const Tensor& x, Tensor& out, const int* perm) {
  UPCYCLE_THROW("cpu kernel permute: not implemented");
}

void CpuBackend::copy_axis(const Tensor& src, std::int64_t src_axis, std::int64_t src_off, Tensor& dst, std::int64_t dst_axis, std::int64_t dst_off, std::int64_t outer, std::int64_t len, std::int64_t inner, bool accumulate) {
  UPCYCLE_THROW("cpu kernel copy_axis: not implemented");
}

}  // namespace upcycle
