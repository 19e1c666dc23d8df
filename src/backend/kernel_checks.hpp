#pragma once
// Argument checks shared by the backends, so that a bad call fails the same way on every device
// and before a CUDA kernel is enqueued. Each throws naming the kernel and what was expected.
#include "upcycle/backend/backend.hpp"

namespace upcycle {

inline void check_gemm_args(const GemmDesc& d, const Tensor& a, const Tensor& b, const Tensor& c) {
  UPCYCLE_CHECK(a.dtype() == b.dtype() && b.dtype() == c.dtype(), "gemm: dtypes differ: ", describe(a), ", ",
                describe(b), ", ", describe(c));
  UPCYCLE_CHECK(a.device() == c.device() && b.device() == c.device(), "gemm: devices differ: ", describe(a), ", ",
                describe(b), ", ", describe(c));
  UPCYCLE_CHECK(d.m >= 0 && d.n >= 0 && d.k >= 0 && d.batch >= 0, "gemm: negative size");
  UPCYCLE_CHECK(a.numel() >= (d.batch - 1) * d.stride_a + d.m * d.k &&
                    b.numel() >= (d.batch - 1) * d.stride_b + d.k * d.n &&
                    c.numel() >= (d.batch - 1) * d.stride_c + d.m * d.n,
                "gemm: operands too small for batch ", d.batch, " of ", d.m, "x", d.k, " * ", d.k, "x", d.n);
}

inline void check_gemm_group(const GemmGroup& g, std::size_t i) {
  UPCYCLE_CHECK(g.m >= 0 && g.n >= 0 && g.k >= 0, "grouped_gemm: group ", i, " has a negative size");
  if (g.m == 0 || g.n == 0) return;
  UPCYCLE_CHECK(g.c.defined() && g.c.numel() >= g.m * g.n, "grouped_gemm: group ", i, ": C ", describe(g.c),
                " is smaller than ", g.m, "x", g.n);
  if (g.k == 0) return;
  UPCYCLE_CHECK(g.a.defined() && g.b.defined() && g.a.numel() >= g.m * g.k && g.b.numel() >= g.k * g.n,
                "grouped_gemm: group ", i, ": operands ", describe(g.a), ", ", describe(g.b), " too small for ", g.m,
                "x", g.k, " * ", g.k, "x", g.n);
  UPCYCLE_CHECK(g.a.dtype() == g.c.dtype() && g.b.dtype() == g.c.dtype() && g.a.device() == g.c.device() &&
                    g.b.device() == g.c.device(),
                "grouped_gemm: group ", i, ": operands differ in dtype or device: ", describe(g.a), ", ",
                describe(g.b), ", ", describe(g.c));
}

inline void check_adamw_tensor(const AdamWTensor& a) {
  UPCYCLE_CHECK(a.param.defined() && a.grad.defined() && a.m.defined() && a.v.defined(),
                "adamw: undefined parameter, gradient or moment");
  UPCYCLE_CHECK(a.grad.numel() == a.param.numel() && a.m.numel() == a.param.numel() &&
                    a.v.numel() == a.param.numel(),
                "adamw: state sizes differ from ", describe(a.param));
  UPCYCLE_CHECK(a.grad.dtype() == a.param.dtype() && a.m.dtype() == a.param.dtype() &&
                    a.v.dtype() == a.param.dtype(),
                "adamw: dtypes differ from ", describe(a.param));
  UPCYCLE_CHECK(a.grad.device() == a.param.device() && a.m.device() == a.param.device() &&
                    a.v.device() == a.param.device(),
                "adamw: devices differ from ", describe(a.param));
}

inline void check_ema_tensor(const EmaTensor& a, double momentum) {
  UPCYCLE_CHECK(momentum >= 0.0 && momentum <= 1.0, "ema: momentum must lie in [0, 1], got ", momentum);
  UPCYCLE_CHECK(a.average.defined() && a.value.defined(), "ema: undefined average or value");
  UPCYCLE_CHECK(a.value.numel() == a.average.numel() && a.value.dtype() == a.average.dtype() &&
                    a.value.device() == a.average.device(),
                "ema: the value ", describe(a.value), " does not match the average ", describe(a.average));
}

// The shapes moe_dispatch writes (see Backend::moe_dispatch).
inline void check_moe_dispatch_args(const Tensor& indices, std::int64_t num_experts, std::int64_t capacity,
                                    const Tensor& counts, const Tensor& kept_slots, const Tensor& kept_tokens,
                                    const Tensor& slot_dropped) {
  check_dtype(indices, DType::i64, "moe_dispatch indices");
  UPCYCLE_CHECK(indices.ndim() == 2, "moe_dispatch: indices must be [T, k], got ", describe(indices));
  UPCYCLE_CHECK(num_experts > 0 && capacity >= 0, "moe_dispatch: ", num_experts, " experts, capacity ", capacity);
  const std::int64_t slots = indices.numel();
  check_dtype(counts, DType::i64, "moe_dispatch counts");
  check_shape(counts, {2, num_experts}, "moe_dispatch counts");
  for (const Tensor* t : {&kept_slots, &kept_tokens, &slot_dropped}) {
    check_dtype(*t, DType::i64, "moe_dispatch output");
    check_shape(*t, {slots}, "moe_dispatch output");
    UPCYCLE_CHECK(t->device() == indices.device(), "moe_dispatch: output ", describe(*t), " is not on the device of ",
                  describe(indices));
  }
  UPCYCLE_CHECK(counts.device() == indices.device(), "moe_dispatch: counts ", describe(counts),
                " are not on the device of ", describe(indices));
}

}  // namespace upcycle
