// The softmax family and the causal mask over the last dim of [rows, cols]. As on the CPU, every
// row is max-subtracted before exponentiating (no exp overflows) and row sums are accumulated in
// double, f32 included, so long rows (vocabularies) keep their precision. A row whose entries are
// all -inf gives NaN (exp(-inf - -inf)), as on the CPU. y may alias x: see row_common.cuh.
#include <cstdint>
#include <limits>

#include "backend/checks_rows.hpp"
#include "cuda_common.cuh"
#include "row_common.cuh"

namespace upcycle {

namespace {

using cuda::rows::BlockPerRow;
using cuda::rows::exp_of;
using cuda::rows::kNegInf;
using cuda::rows::WarpPerRow;

// CPU twin: softmax_typed in src/backend/cpu/cpu_rows.cpp. The exponentials are rounded to T
// before they are summed and scaled, as there.
template <class T, class Group>
__global__ void __launch_bounds__(Group::kMaxThreads)
    softmax_rows(const T* x, T* y, std::int64_t rows, std::int64_t cols, bool log_out) {
  const int rank = Group::rank(), size = Group::size();
  for (std::int64_t r = Group::first_row(); r < rows; r += Group::row_stride()) {
    const T* xr = x + r * cols;
    T* yr = y + r * cols;
    double mx = kNegInf;
    for (std::int64_t j = rank; j < cols; j += size) mx = fmax(mx, static_cast<double>(xr[j]));
    const T m = static_cast<T>(Group::max(mx));
    double s = 0.0;
    if (log_out) {
      for (std::int64_t j = rank; j < cols; j += size) s += static_cast<double>(exp_of(xr[j] - m));
      const T log_sum = static_cast<T>(log(Group::sum(s)));
      for (std::int64_t j = rank; j < cols; j += size) yr[j] = (xr[j] - m) - log_sum;
    } else {
      for (std::int64_t j = rank; j < cols; j += size) {
        const T e = exp_of(xr[j] - m);
        yr[j] = e;
        s += static_cast<double>(e);
      }
      const T inv = static_cast<T>(1.0 / Group::sum(s));
      for (std::int64_t j = rank; j < cols; j += size) yr[j] *= inv;
    }
  }
}

// CPU twin: softmax_backward_typed in src/backend/cpu/cpu_rows.cpp.
//   softmax:     gx = y * (gy - sum(gy * y))
//   log_softmax: gx = gy - exp(y) * sum(gy)
template <class T, class Group>
__global__ void __launch_bounds__(Group::kMaxThreads)
    softmax_backward_rows(const T* y, const T* gy, T* gx, std::int64_t rows, std::int64_t cols, bool log_in) {
  const int rank = Group::rank(), size = Group::size();
  for (std::int64_t r = Group::first_row(); r < rows; r += Group::row_stride()) {
    const T* yr = y + r * cols;
    const T* gr = gy + r * cols;
    T* outr = gx + r * cols;
    double s = 0.0;
    if (log_in) {
      for (std::int64_t j = rank; j < cols; j += size) s += static_cast<double>(gr[j]);
      const T st = static_cast<T>(Group::sum(s));
      for (std::int64_t j = rank; j < cols; j += size) outr[j] = gr[j] - exp_of(yr[j]) * st;
    } else {
      for (std::int64_t j = rank; j < cols; j += size)
        s += static_cast<double>(gr[j]) * static_cast<double>(yr[j]);
      const T st = static_cast<T>(Group::sum(s));
      for (std::int64_t j = rank; j < cols; j += size) outr[j] = yr[j] * (gr[j] - st);
    }
  }
}

// CPU twin: CpuBackend::causal_mask in src/backend/cpu/cpu_rows.cpp. One warp per query row: only
// the masked tail is written, with coalesced stores, and the row's mask start costs one division.
template <class T>
__global__ void causal_mask_rows(T* scores, std::int64_t rows, std::int64_t t, std::int64_t s) {
  const T neg_inf = -std::numeric_limits<T>::infinity();
  const int lane = WarpPerRow::rank();
  for (std::int64_t row = WarpPerRow::first_row(); row < rows; row += WarpPerRow::row_stride()) {
    // Query i sees keys j <= i + (s - t): its last query lines up with the last key.
    const std::int64_t first_masked = row % t + (s - t) + 1;
    T* sr = scores + row * s;
    for (std::int64_t j = (first_masked < 0 ? 0 : first_masked) + lane; j < s; j += cuda::kRowWarp) sr[j] = neg_inf;
  }
}

template <class T>
void launch_softmax(cudaStream_t stream, const Tensor& x, Tensor& y, bool log_out, const char* what) {
  const std::int64_t cols = row_checks::cols_of(x, what), rows = row_checks::rows_of(x, cols);
  const T* px = cuda::device_ptr<T>(x, what);
  T* py = cuda::device_ptr<T>(y, what);
  cuda::rows::launch_rows(rows, cols, stream, softmax_rows<T, WarpPerRow>, softmax_rows<T, BlockPerRow>, px, py, rows,
                          cols, log_out);
}

template <class T>
void launch_softmax_backward(cudaStream_t stream, const Tensor& y, const Tensor& gy, Tensor& gx, bool log_in,
                             const char* what) {
  const std::int64_t cols = row_checks::cols_of(y, what), rows = row_checks::rows_of(y, cols);
  const T* py = cuda::device_ptr<T>(y, what);
  const T* pg = cuda::device_ptr<T>(gy, what);
  T* po = cuda::device_ptr<T>(gx, what);
  cuda::rows::launch_rows(rows, cols, stream, softmax_backward_rows<T, WarpPerRow>,
                          softmax_backward_rows<T, BlockPerRow>, py, pg, po, rows, cols, log_in);
}

}  // namespace

void CudaBackend::softmax(const Tensor& x, Tensor& y) {
  row_checks::check_like(y, x, "softmax output");
  dispatch_floating(x.dtype(), "softmax",
                    [&](auto t) { launch_softmax<decltype(t)>(stream(), x, y, false, "softmax"); });
}

void CudaBackend::softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx) {
  row_checks::check_like(gy, y, "softmax_backward gy");
  row_checks::check_like(gx, y, "softmax_backward gx");
  dispatch_floating(y.dtype(), "softmax_backward", [&](auto t) {
    launch_softmax_backward<decltype(t)>(stream(), y, gy, gx, false, "softmax_backward");
  });
}

void CudaBackend::log_softmax(const Tensor& x, Tensor& y) {
  row_checks::check_like(y, x, "log_softmax output");
  dispatch_floating(x.dtype(), "log_softmax",
                    [&](auto t) { launch_softmax<decltype(t)>(stream(), x, y, true, "log_softmax"); });
}

void CudaBackend::log_softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx) {
  row_checks::check_like(gy, y, "log_softmax_backward gy");
  row_checks::check_like(gx, y, "log_softmax_backward gx");
  dispatch_floating(y.dtype(), "log_softmax_backward", [&](auto t) {
    launch_softmax_backward<decltype(t)>(stream(), y, gy, gx, true, "log_softmax_backward");
  });
}

// CPU twin: CpuBackend::causal_mask in src/backend/cpu/cpu_rows.cpp.
void CudaBackend::causal_mask(Tensor& scores, std::int64_t t, std::int64_t s) {
  row_checks::check_causal_mask_args(scores, t, s);
  const std::int64_t rows = scores.numel() / s;  // batch * t query rows
  dispatch_floating(scores.dtype(), "causal_mask", [&](auto tag) {
    using T = decltype(tag);
    T* p = cuda::device_ptr<T>(scores, "causal_mask");
    if (rows == 0) return;
    const cuda::RowGeometry g = cuda::row_geometry(rows, 1);  // always one warp per row
    causal_mask_rows<T><<<g.blocks, g.threads, 0, stream()>>>(p, rows, t, s);
    UPCYCLE_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace upcycle
