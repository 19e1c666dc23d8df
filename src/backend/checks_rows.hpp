#pragma once
// Argument checks of the row kernels (softmax family, causal mask, cross-entropy, LayerNorm,
// RMSNorm), shared by the CPU backend (cpu_rows.cpp, cpu_norm.cpp) and the CUDA backend
// (kernels/softmax.cu, cross_entropy.cu, norm.cu) so that a bad call fails with the same message
// on every device, and on the host before a CUDA kernel is enqueued. Checks of values only the
// device holds (cross-entropy targets) are not here: the CPU checks them on the host, the CUDA
// kernels report them through the device error flag.
#include <cstdint>

#include "upcycle/backend/backend.hpp"

namespace upcycle::row_checks {

// x is viewed as [rows, cols] with cols its last dim.
inline std::int64_t cols_of(const Tensor& x, const char* what) {
  UPCYCLE_CHECK(x.defined() && x.ndim() >= 1, what, ": expected a tensor with at least one dim, got ",
                describe(x));
  return x.dim(-1);
}
inline std::int64_t rows_of(const Tensor& x, std::int64_t cols) { return cols == 0 ? 0 : x.numel() / cols; }

// t has like's dtype and shape.
inline void check_like(const Tensor& t, const Tensor& like, const char* what) {
  UPCYCLE_CHECK(t.defined() && t.dtype() == like.dtype() && t.shape() == like.shape(), what,
                ": expected ", describe(like), ", got ", describe(t));
}

// scores is a whole number of [t, s] matrices.
inline void check_causal_mask_args(const Tensor& scores, std::int64_t t, std::int64_t s) {
  UPCYCLE_CHECK(t > 0 && s > 0 && scores.numel() % (t * s) == 0, "causal_mask: ", describe(scores),
                " is not a batch of [", t, ", ", s, "] score matrices");
}

inline void check_cross_entropy_args(const Tensor& logits, const Tensor& targets, double smoothing,
                                     std::int64_t rows, std::int64_t classes, const char* what) {
  UPCYCLE_CHECK(classes > 0, what, ": logits need at least one class, got ", describe(logits));
  check_dtype(targets, DType::i64, what);
  UPCYCLE_CHECK(targets.numel() == rows, what, ": expected ", rows, " targets for logits ",
                describe(logits), ", got ", describe(targets));
  UPCYCLE_CHECK(smoothing >= 0.0 && smoothing <= 1.0, what, ": label smoothing must lie in [0, 1], got ",
                smoothing);
}

// A per-row vector (losses, lse) of the logits' dtype with `rows` elements.
inline void check_cross_entropy_row_vector(const Tensor& t, const Tensor& logits, std::int64_t rows,
                                           const char* what, const char* name) {
  UPCYCLE_CHECK(t.defined() && t.dtype() == logits.dtype() && t.numel() == rows, what, ": ", name, " must be ",
                dtype_name(logits.dtype()), " with ", rows, " elements, got ", describe(t));
}

// The checks of Backend::cross_entropy except the target values.
inline void check_cross_entropy_forward(const Tensor& logits, const Tensor& targets, double smoothing,
                                        const Tensor& losses, const Tensor& lse) {
  const std::int64_t classes = cols_of(logits, "cross_entropy"), rows = rows_of(logits, classes);
  check_cross_entropy_args(logits, targets, smoothing, rows, classes, "cross_entropy");
  check_cross_entropy_row_vector(losses, logits, rows, "cross_entropy", "losses");
  check_cross_entropy_row_vector(lse, logits, rows, "cross_entropy", "lse");
}

// The checks of Backend::cross_entropy_backward except the target values.
inline void check_cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                                         double smoothing, const Tensor& glogits) {
  const std::int64_t classes = cols_of(logits, "cross_entropy_backward"), rows = rows_of(logits, classes);
  check_cross_entropy_args(logits, targets, smoothing, rows, classes, "cross_entropy_backward");
  check_cross_entropy_row_vector(lse, logits, rows, "cross_entropy_backward", "lse");
  check_like(glogits, logits, "cross_entropy_backward glogits");
}

// --- norms over the last dim of [rows, D] ---

struct NormShape {
  std::int64_t rows = 0, dim = 0;
};

// Row statistics ([rows]), gamma / beta and their gradients ([D]) have x's dtype and n elements.
inline void check_norm_vector(const Tensor& t, const Tensor& x, std::int64_t n, const char* what) {
  UPCYCLE_CHECK(t.defined() && t.dtype() == x.dtype() && t.numel() == n, what, ": expected ",
                dtype_name(x.dtype()), " with ", n, " elements, got ", describe(t));
}

// x as [rows, D]; gamma, when defined, must be [D].
inline NormShape norm_shape(const Tensor& x, const Tensor& gamma, const char* what, const char* gamma_what) {
  UPCYCLE_CHECK(x.defined() && x.ndim() >= 1 && x.dim(-1) > 0, what,
                ": expected a tensor with a non-empty last dim, got ", describe(x));
  NormShape s;
  s.dim = x.dim(-1);
  s.rows = x.numel() / s.dim;
  if (gamma.defined()) check_norm_vector(gamma, x, s.dim, gamma_what);
  return s;
}

inline NormShape check_layernorm(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& y,
                                 const Tensor& mean, const Tensor& rstd) {
  const NormShape s = norm_shape(x, gamma, "layernorm", "layernorm gamma");
  if (beta.defined()) check_norm_vector(beta, x, s.dim, "layernorm beta");
  check_like(y, x, "layernorm output");
  check_norm_vector(mean, x, s.rows, "layernorm mean");
  check_norm_vector(rstd, x, s.rows, "layernorm rstd");
  return s;
}

inline NormShape check_layernorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& mean,
                                          const Tensor& rstd, const Tensor& gy, const Tensor& gx,
                                          const Tensor& ggamma, const Tensor& gbeta) {
  const NormShape s = norm_shape(x, gamma, "layernorm_backward", "layernorm_backward gamma");
  check_norm_vector(mean, x, s.rows, "layernorm_backward mean");
  check_norm_vector(rstd, x, s.rows, "layernorm_backward rstd");
  check_like(gy, x, "layernorm_backward gy");
  check_like(gx, x, "layernorm_backward gx");
  if (ggamma.defined()) check_norm_vector(ggamma, x, s.dim, "layernorm_backward ggamma");
  if (gbeta.defined()) check_norm_vector(gbeta, x, s.dim, "layernorm_backward gbeta");
  return s;
}

inline NormShape check_rmsnorm(const Tensor& x, const Tensor& gamma, const Tensor& y, const Tensor& rstd) {
  const NormShape s = norm_shape(x, gamma, "rmsnorm", "rmsnorm gamma");
  check_like(y, x, "rmsnorm output");
  check_norm_vector(rstd, x, s.rows, "rmsnorm rstd");
  return s;
}

inline NormShape check_rmsnorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& rstd,
                                        const Tensor& gy, const Tensor& gx, const Tensor& ggamma) {
  const NormShape s = norm_shape(x, gamma, "rmsnorm_backward", "rmsnorm_backward gamma");
  check_norm_vector(rstd, x, s.rows, "rmsnorm_backward rstd");
  check_like(gy, x, "rmsnorm_backward gy");
  check_like(gx, x, "rmsnorm_backward gx");
  if (ggamma.defined()) check_norm_vector(ggamma, x, s.dim, "rmsnorm_backward ggamma");
  return s;
}

}  // namespace upcycle::row_checks
