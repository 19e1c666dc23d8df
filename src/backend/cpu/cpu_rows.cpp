// Row kernels over the last dim of [rows, cols]: the softmax family, the causal mask and
// cross-entropy. Every row is max-subtracted before exponentiating so no exp overflows, and row
// sums are accumulated in double (for f32 too) so long rows (vocabularies) keep their precision.
// Rows are independent, so the kernels split the row loop over threads (cpu_parallel.hpp).
#include <algorithm>
#include <cmath>
#include <limits>

#include "backend/checks_rows.hpp"
#include "cpu_backend.hpp"
#include "cpu_math.hpp"
#include "cpu_parallel.hpp"

namespace upcycle {

namespace {

using row_checks::check_like;
using row_checks::cols_of;
using row_checks::rows_of;
using cpu_math::exp_any;

template <class T>
T row_max(const T* x, std::int64_t n) {
  T m = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : m)
  for (std::int64_t j = 0; j < n; ++j) m = x[j] > m ? x[j] : m;
  return m;
}

// sum_j exp(x[j] - m), accumulated in double. The exponentials go through a small buffer in
// blocks: a single loop with the mixed float / double body does not vectorise.
template <class T>
double sum_exp(const T* x, std::int64_t n, T m) {
  constexpr std::int64_t kBlock = 256;
  T e[kBlock];
  double s = 0.0;
  for (std::int64_t b = 0; b < n; b += kBlock) {
    const std::int64_t len = n - b < kBlock ? n - b : kBlock;
#pragma omp simd
    for (std::int64_t j = 0; j < len; ++j) e[j] = exp_any(x[b + j] - m);
#pragma omp simd reduction(+ : s)
    for (std::int64_t j = 0; j < len; ++j) s += static_cast<double>(e[j]);
  }
  return s;
}

template <class T>
void softmax_typed(const Tensor& x, Tensor& y, bool log) {
  const std::int64_t cols = cols_of(x, "softmax"), rows = rows_of(x, cols);
  const T* px = x.data<T>();
  T* py = y.data<T>();
  const std::int64_t grain = (16384 + cols - 1) / std::max<std::int64_t>(1, cols);
  cpu::parallel_for(rows, grain, [&](std::int64_t r_begin, std::int64_t r_end) {
    for (std::int64_t r = r_begin; r < r_end; ++r) {
      const T* xr = px + r * cols;
      T* yr = py + r * cols;
      const T m = row_max(xr, cols);
      if (log) {
        const T log_sum = static_cast<T>(std::log(sum_exp(xr, cols, m)));
#pragma omp simd
        for (std::int64_t j = 0; j < cols; ++j) yr[j] = (xr[j] - m) - log_sum;
      } else {
        // exp into y, then the double sum of y: two loops (one loop with the mixed float / double
        // body does not vectorise). Each y[j] is written after x[j] is read, so y may alias x.
#pragma omp simd
        for (std::int64_t j = 0; j < cols; ++j) yr[j] = exp_any(xr[j] - m);
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (std::int64_t j = 0; j < cols; ++j) s += static_cast<double>(yr[j]);
        const T inv = static_cast<T>(1.0 / s);
#pragma omp simd
        for (std::int64_t j = 0; j < cols; ++j) yr[j] *= inv;
      }
    }
  });
}

// softmax:     gx = y * (gy - sum(gy * y))
// log_softmax: gx = gy - exp(y) * sum(gy)
template <class T>
void softmax_backward_typed(const Tensor& y, const Tensor& gy, Tensor& gx, bool log) {
  const std::int64_t cols = cols_of(y, "softmax_backward"), rows = rows_of(y, cols);
  const T* py = y.data<T>();
  const T* pg = gy.data<T>();
  T* po = gx.data<T>();
  const std::int64_t grain = (16384 + cols - 1) / std::max<std::int64_t>(1, cols);
  cpu::parallel_for(rows, grain, [&](std::int64_t r_begin, std::int64_t r_end) {
    for (std::int64_t r = r_begin; r < r_end; ++r) {
      const T* yr = py + r * cols;
      const T* gr = pg + r * cols;
      T* outr = po + r * cols;
      double s = 0.0;
      if (log) {
#pragma omp simd reduction(+ : s)
        for (std::int64_t j = 0; j < cols; ++j) s += static_cast<double>(gr[j]);
        const T st = static_cast<T>(s);
#pragma omp simd
        for (std::int64_t j = 0; j < cols; ++j) outr[j] = gr[j] - exp_any(yr[j]) * st;
      } else {
#pragma omp simd reduction(+ : s)
        for (std::int64_t j = 0; j < cols; ++j) s += static_cast<double>(gr[j]) * static_cast<double>(yr[j]);
        const T st = static_cast<T>(s);
#pragma omp simd
        for (std::int64_t j = 0; j < cols; ++j) outr[j] = yr[j] * (gr[j] - st);
      }
    }
  });
}

// Throws for the first target that is neither in [0, classes) nor ignore_index. Checked serially
// before the parallel loops, which must not throw; it is O(rows) next to their O(rows * classes).
void check_targets(const std::int64_t* t, std::int64_t rows, std::int64_t classes,
                   std::int64_t ignore_index, const char* what) {
  for (std::int64_t r = 0; r < rows; ++r)
    if (t[r] != ignore_index && (t[r] < 0 || t[r] >= classes))
      UPCYCLE_THROW(what, ": target ", t[r], " at row ", r, " is outside [0, ", classes,
                    ") and is not ignore_index (", ignore_index, ")");
}

// The target distribution is q = (1 - eps) onehot(t) + eps / C, so
// loss = -sum_c q_c log p_c = lse - (1 - eps) x_t - (eps / C) sum_c x_c.
template <class T>
void cross_entropy_typed(const Tensor& logits, const std::int64_t* tg, std::int64_t ignore_index,
                         double smoothing, Tensor& losses, Tensor& lse) {
  const std::int64_t classes = cols_of(logits, "cross_entropy"), rows = rows_of(logits, classes);
  const T* px = logits.data<T>();
  T* pl = losses.data<T>();
  T* pe = lse.data<T>();
  const double w_target = 1.0 - smoothing, w_uniform = smoothing / static_cast<double>(classes);
  cpu::parallel_for(rows, (16384 + classes - 1) / classes, [&](std::int64_t r_begin, std::int64_t r_end) {
    for (std::int64_t r = r_begin; r < r_end; ++r) {
      const T* xr = px + r * classes;
      const T m = row_max(xr, classes);
      const double row_lse = static_cast<double>(m) + std::log(sum_exp(xr, classes, m));
      pe[r] = static_cast<T>(row_lse);
      if (tg[r] == ignore_index) {
        pl[r] = T(0);
        continue;
      }
      double loss = row_lse - w_target * static_cast<double>(xr[tg[r]]);
      if (w_uniform != 0.0) {
        double sx = 0.0;
#pragma omp simd reduction(+ : sx)
        for (std::int64_t j = 0; j < classes; ++j) sx += static_cast<double>(xr[j]);
        loss -= w_uniform * sx;
      }
      pl[r] = static_cast<T>(loss);
    }
  });
}

// glogits = scale * (softmax(x) - q), with softmax(x) = exp(x - lse).
template <class T>
void cross_entropy_backward_typed(const Tensor& logits, const std::int64_t* tg, const Tensor& lse,
                                  std::int64_t ignore_index, double smoothing, double scale,
                                  Tensor& glogits) {
  const std::int64_t classes = cols_of(logits, "cross_entropy_backward"), rows = rows_of(logits, classes);
  const T* px = logits.data<T>();
  const T* pe = lse.data<T>();
  T* pg = glogits.data<T>();
  const T s = static_cast<T>(scale);
  const T uniform = static_cast<T>(scale * smoothing / static_cast<double>(classes));
  const T target = static_cast<T>(scale * (1.0 - smoothing));
  cpu::parallel_for(rows, (16384 + classes - 1) / classes, [&](std::int64_t r_begin, std::int64_t r_end) {
    for (std::int64_t r = r_begin; r < r_end; ++r) {
      const T* xr = px + r * classes;
      T* gr = pg + r * classes;
      if (tg[r] == ignore_index) {
        for (std::int64_t j = 0; j < classes; ++j) gr[j] = T(0);
        continue;
      }
      const T e = pe[r];
#pragma omp simd
      for (std::int64_t j = 0; j < classes; ++j) gr[j] = s * exp_any(xr[j] - e) - uniform;
      gr[tg[r]] -= target;
    }
  });
}

}  // namespace

void CpuBackend::softmax(const Tensor& x, Tensor& y) {
  check_like(y, x, "softmax output");
  dispatch_floating(x.dtype(), "softmax", [&](auto t) { softmax_typed<decltype(t)>(x, y, false); });
}

void CpuBackend::softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx) {
  check_like(gy, y, "softmax_backward gy");
  check_like(gx, y, "softmax_backward gx");
  dispatch_floating(y.dtype(), "softmax_backward",
                    [&](auto t) { softmax_backward_typed<decltype(t)>(y, gy, gx, false); });
}

void CpuBackend::log_softmax(const Tensor& x, Tensor& y) {
  check_like(y, x, "log_softmax output");
  dispatch_floating(x.dtype(), "log_softmax", [&](auto t) { softmax_typed<decltype(t)>(x, y, true); });
}

void CpuBackend::log_softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx) {
  check_like(gy, y, "log_softmax_backward gy");
  check_like(gx, y, "log_softmax_backward gx");
  dispatch_floating(y.dtype(), "log_softmax_backward",
                    [&](auto t) { softmax_backward_typed<decltype(t)>(y, gy, gx, true); });
}

void CpuBackend::causal_mask(Tensor& scores, std::int64_t t, std::int64_t s) {
  row_checks::check_causal_mask_args(scores, t, s);
  const std::int64_t rows = scores.numel() / s;  // batch * t query rows
  dispatch_floating(scores.dtype(), "causal_mask", [&](auto tag) {
    using T = decltype(tag);
    T* p = scores.data<T>();
    const T neg_inf = -std::numeric_limits<T>::infinity();
    cpu::parallel_for(rows, (16384 + s - 1) / s, [&](std::int64_t row_begin, std::int64_t row_end) {
      for (std::int64_t row = row_begin; row < row_end; ++row) {
        // Query i sees keys j <= i + (s - t): its last query lines up with the last key.
        const std::int64_t first_masked = row % t + (s - t) + 1;
        T* sr = p + row * s;
        for (std::int64_t j = first_masked < 0 ? 0 : first_masked; j < s; ++j) sr[j] = neg_inf;
      }
    });
  });
}

void CpuBackend::cross_entropy(const Tensor& logits, const Tensor& targets, std::int64_t ignore_index,
                               double smoothing, Tensor& losses, Tensor& lse) {
  const std::int64_t classes = cols_of(logits, "cross_entropy"), rows = rows_of(logits, classes);
  row_checks::check_cross_entropy_forward(logits, targets, smoothing, losses, lse);
  const std::int64_t* tg = targets.data<std::int64_t>();
  check_targets(tg, rows, classes, ignore_index, "cross_entropy");
  dispatch_floating(logits.dtype(), "cross_entropy", [&](auto t) {
    cross_entropy_typed<decltype(t)>(logits, tg, ignore_index, smoothing, losses, lse);
  });
}

void CpuBackend::cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                                        std::int64_t ignore_index, double smoothing, double scale,
                                        Tensor& glogits) {
  const std::int64_t classes = cols_of(logits, "cross_entropy_backward"), rows = rows_of(logits, classes);
  row_checks::check_cross_entropy_backward(logits, targets, lse, smoothing, glogits);
  const std::int64_t* tg = targets.data<std::int64_t>();
  check_targets(tg, rows, classes, ignore_index, "cross_entropy_backward");
  dispatch_floating(logits.dtype(), "cross_entropy_backward", [&](auto t) {
    cross_entropy_backward_typed<decltype(t)>(logits, tg, lse, ignore_index, smoothing, scale, glogits);
  });
}

}  // namespace upcycle
