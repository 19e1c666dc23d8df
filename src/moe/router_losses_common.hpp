#pragma once
// Helpers shared by src/moe/router_losses.cpp, dpsl.cpp, aux_free_bias.cpp and routing_stats.cpp:
// explicit host copies for the parts that run on the host (DPSL's sort and Beta CDF, routing
// statistics at log steps, the aux-free bias update from summed loads).
#include <cstdint>
#include <vector>

#include "upcycle/core/tensor.hpp"

namespace upcycle::moe::detail {

// Host copy of any numeric tensor as doubles.
inline std::vector<double> host_doubles(const Tensor& t) {
  if (!t.defined() || t.numel() == 0) return {};
  return t.to(Device::cpu).to(DType::f64).to_vector<double>();
}

// Host copy of an i64 tensor.
inline std::vector<std::int64_t> host_i64(const Tensor& t) {
  check_dtype(t, DType::i64, "index tensor");
  if (t.numel() == 0) return {};
  return t.to(Device::cpu).to_vector<std::int64_t>();
}

// Checks probs [T, E] floating and indices [T, k] i64 with entries in [0, E); returns k.
inline std::int64_t check_routing(const Tensor& probs, const Tensor& indices, const char* what) {
  UPCYCLE_CHECK(probs.ndim() == 2, what, ": probabilities must be [T, E], got ", describe(probs));
  UPCYCLE_CHECK(probs.dtype() == DType::f32 || probs.dtype() == DType::f64, what,
                ": probabilities must be f32 or f64, got ", describe(probs));
  check_dtype(indices, DType::i64, what);
  UPCYCLE_CHECK(indices.ndim() == 2 && indices.dim(0) == probs.dim(0), what,
                ": indices must be [T, k] with T = ", probs.dim(0), ", got ", describe(indices));
  return indices.dim(1);
}

}  // namespace upcycle::moe::detail
