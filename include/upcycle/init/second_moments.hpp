#pragma once
// The per-cluster second moments of cluster-aware upcycling (docs/methods.md section 2, step 3) on
// the device of the calibration tokens, by Backend kernels: the tokens are sorted by cluster
// (Backend::moe_dispatch, a stable counting sort; only the K counts come to the host), and each
// cluster's rows are gathered, widened to f64 and multiplied in one float64 GEMM.
#include <cstdint>

#include "upcycle/core/tensor.hpp"

namespace upcycle::init {

// points [n, D] f32 or f64 and assignment [n] i64 (clusters in [0, K)) on one device. Returns
// [K, D, D] f64 on that device: G_e = X_e^T X_e over this rank's points X_e of cluster e (0 for an
// empty cluster), not yet reduced over ranks.
Tensor cluster_second_moments(const Tensor& points, const Tensor& assignment, std::int64_t clusters);

}  // namespace upcycle::init
