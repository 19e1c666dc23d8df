#pragma once
// Argument checks of the layout kernels (permute, copy_axis) and their dispatch over element
// widths, shared by the CPU backend (src/backend/cpu/cpu_layout.cpp) and the CUDA one
// (kernels/layout.cu) so that a bad call fails with the same message on every device, before
// anything is enqueued.
#include <cstdint>

#include "upcycle/core/tensor.hpp"

namespace upcycle {

// Calls f(W{}) with W an unsigned integer as wide as one element of `dtype`: layout kernels move
// elements as words, so they work on any dtype.
template <class F>
void dispatch_bytes(DType dtype, F&& f) {
  switch (dtype_size(dtype)) {
    case 2: f(std::uint16_t{}); return;
    case 4: f(std::uint32_t{}); return;
    case 8: f(std::uint64_t{}); return;
    default: UPCYCLE_THROW("layout kernel: unsupported element size ", dtype_size(dtype), " of ", dtype_name(dtype));
  }
}

inline void check_permute_args(const Tensor& x, const Tensor& out, const int* perm) {
  const Shape& s = x.shape();
  const int n = s.ndim();
  UPCYCLE_CHECK(x.dtype() == out.dtype(), "permute: dtypes differ: ", describe(x), " -> ", describe(out));
  UPCYCLE_CHECK(out.ndim() == n, "permute: ", describe(x), " -> ", describe(out), ": ranks differ");
  unsigned seen = 0;
  for (int i = 0; i < n; ++i) {
    UPCYCLE_CHECK(perm[i] >= 0 && perm[i] < n && !(seen & (1u << perm[i])), "permute: perm[", i, "] = ", perm[i],
                  " is not a permutation of 0..", n - 1);
    seen |= 1u << perm[i];
    UPCYCLE_CHECK(out.dim(i) == s[perm[i]], "permute: output ", describe(out), " dim ", i, " should be ",
                  s[perm[i]], " (input ", s.str(), " dim ", perm[i], ")");
  }
}

inline void check_copy_axis_args(const Tensor& src, std::int64_t src_axis, std::int64_t src_off, const Tensor& dst,
                                 std::int64_t dst_axis, std::int64_t dst_off, std::int64_t outer, std::int64_t len,
                                 std::int64_t inner) {
  UPCYCLE_CHECK(src.dtype() == dst.dtype(), "copy_axis: dtypes differ: ", describe(src), " -> ", describe(dst));
  UPCYCLE_CHECK(outer >= 0 && len >= 0 && inner >= 0 && src.numel() == outer * src_axis * inner &&
                    dst.numel() == outer * dst_axis * inner,
                "copy_axis: ", describe(src), " as [", outer, ", ", src_axis, ", ", inner, "] -> ", describe(dst),
                " as [", outer, ", ", dst_axis, ", ", inner, "]");
  UPCYCLE_CHECK(src_off >= 0 && src_off + len <= src_axis && dst_off >= 0 && dst_off + len <= dst_axis,
                "copy_axis: slab of ", len, " at ", src_off, " of ", src_axis, " -> at ", dst_off, " of ", dst_axis,
                " is out of range");
}

}  // namespace upcycle
