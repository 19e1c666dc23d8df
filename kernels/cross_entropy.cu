// Cross-entropy per row of [rows, classes] logits with i64 targets, ignore_index and label
// smoothing, and its gradient. Same formulas as the CPU twins: with q = (1 - eps) onehot(t) + eps / C,
//   loss = lse - (1 - eps) x_t - (eps / C) sum_c x_c,   glogits = scale (exp(x - lse) - q),
// lse and the sums accumulated in double. The CPU throws for a target neither in [0, C) nor
// ignore_index before computing anything; here only the device sees the targets, so the kernel
// reports DeviceError::cross_entropy_target (raised at the host's next wait) and skips that row.
#include <cstdint>

#include "backend/checks_rows.hpp"
#include "cuda_common.cuh"
#include "row_common.cuh"

namespace upcycle {

namespace {

using cuda::rows::BlockPerRow;
using cuda::rows::exp_of;
using cuda::rows::kNegInf;
using cuda::rows::WarpPerRow;

// CPU twin: cross_entropy_typed in src/backend/cpu/cpu_rows.cpp. lse is written for ignored rows
// too (their loss is 0), as there.
template <class T, class Group>
__global__ void __launch_bounds__(Group::kMaxThreads)
    cross_entropy_rows(const T* logits, const std::int64_t* targets, std::int64_t rows, std::int64_t classes,
                       std::int64_t ignore_index, double w_target, double w_uniform, T* losses, T* lse,
                       int* error_flag) {
  const int rank = Group::rank(), size = Group::size();
  for (std::int64_t r = Group::first_row(); r < rows; r += Group::row_stride()) {
    const std::int64_t tg = targets[r];
    // tg is the same for the whole group, so the skip keeps the group's barriers uniform.
    if (!cuda::valid_target(tg, classes, ignore_index)) {
      if (rank == 0) cuda::report_device_error(error_flag, cuda::DeviceError::cross_entropy_target);
      continue;
    }
    const T* xr = logits + r * classes;
    double mx = kNegInf;
    for (std::int64_t j = rank; j < classes; j += size) mx = fmax(mx, static_cast<double>(xr[j]));
    const T m = static_cast<T>(Group::max(mx));
    double s = 0.0, sx = 0.0;
    for (std::int64_t j = rank; j < classes; j += size) {
      const T x = xr[j];
      s += static_cast<double>(exp_of(x - m));
      sx += static_cast<double>(x);
    }
    // The sum of the logits only matters with smoothing (the CPU skips it otherwise).
    if (w_uniform != 0.0) Group::sum2(s, sx);
    else s = Group::sum(s);
    if (rank == 0) {
      const double row_lse = static_cast<double>(m) + log(s);
      lse[r] = static_cast<T>(row_lse);
      double loss = 0.0;
      if (tg != ignore_index) {
        loss = row_lse - w_target * static_cast<double>(xr[tg]);
        if (w_uniform != 0.0) loss -= w_uniform * sx;
      }
      losses[r] = static_cast<T>(loss);
    }
  }
}

// CPU twin: cross_entropy_backward_typed in src/backend/cpu/cpu_rows.cpp. No reduction: the row
// groups only give coalesced row-wise access without a division per element.
template <class T, class Group>
__global__ void __launch_bounds__(Group::kMaxThreads)
    cross_entropy_backward_rows(const T* logits, const std::int64_t* targets, const T* lse, std::int64_t rows,
                                std::int64_t classes, std::int64_t ignore_index, T scale, T target_w, T uniform_w,
                                T* glogits, int* error_flag) {
  const int rank = Group::rank(), size = Group::size();
  for (std::int64_t r = Group::first_row(); r < rows; r += Group::row_stride()) {
    const std::int64_t tg = targets[r];
    T* gr = glogits + r * classes;
    if (tg == ignore_index) {
      for (std::int64_t j = rank; j < classes; j += size) gr[j] = T(0);
      continue;
    }
    if (!cuda::valid_target(tg, classes, ignore_index)) {
      if (rank == 0) cuda::report_device_error(error_flag, cuda::DeviceError::cross_entropy_target);
      continue;
    }
    const T* xr = logits + r * classes;
    const T e = lse[r];
    for (std::int64_t j = rank; j < classes; j += size) {
      T g = scale * exp_of(xr[j] - e) - uniform_w;
      if (j == tg) g -= target_w;
      gr[j] = g;
    }
  }
}

}  // namespace

void CudaBackend::cross_entropy(const Tensor& logits, const Tensor& targets, std::int64_t ignore_index,
                                double smoothing, Tensor& losses, Tensor& lse) {
  row_checks::check_cross_entropy_forward(logits, targets, smoothing, losses, lse);
  const std::int64_t classes = row_checks::cols_of(logits, "cross_entropy");
  const std::int64_t rows = row_checks::rows_of(logits, classes);
  const std::int64_t* tg = cuda::device_ptr<std::int64_t>(targets, "cross_entropy targets");
  const cuda::SmoothingWeights w = cuda::smoothing_weights(smoothing, classes);
  dispatch_floating(logits.dtype(), "cross_entropy", [&](auto tag) {
    using T = decltype(tag);
    const T* px = cuda::device_ptr<T>(logits, "cross_entropy logits");
    T* pl = cuda::device_ptr<T>(losses, "cross_entropy losses");
    T* pe = cuda::device_ptr<T>(lse, "cross_entropy lse");
    cuda::rows::launch_rows(rows, classes, stream(), cross_entropy_rows<T, WarpPerRow>,
                            cross_entropy_rows<T, BlockPerRow>, px, tg, rows, classes, ignore_index, w.target,
                            w.uniform, pl, pe, device_error_flag());
  });
}

void CudaBackend::cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                                         std::int64_t ignore_index, double smoothing, double scale,
                                         Tensor& glogits) {
  row_checks::check_cross_entropy_backward(logits, targets, lse, smoothing, glogits);
  const std::int64_t classes = row_checks::cols_of(logits, "cross_entropy_backward");
  const std::int64_t rows = row_checks::rows_of(logits, classes);
  const std::int64_t* tg = cuda::device_ptr<std::int64_t>(targets, "cross_entropy_backward targets");
  const cuda::SmoothingGradWeights w = cuda::smoothing_grad_weights(smoothing, scale, classes);
  dispatch_floating(logits.dtype(), "cross_entropy_backward", [&](auto tag) {
    using T = decltype(tag);
    const T* px = cuda::device_ptr<T>(logits, "cross_entropy_backward logits");
    const T* pe = cuda::device_ptr<T>(lse, "cross_entropy_backward lse");
    T* pg = cuda::device_ptr<T>(glogits, "cross_entropy_backward glogits");
    cuda::rows::launch_rows(rows, classes, stream(), cross_entropy_backward_rows<T, WarpPerRow>,
                            cross_entropy_backward_rows<T, BlockPerRow>, px, tg, pe, rows, classes, ignore_index,
                            static_cast<T>(w.scale), static_cast<T>(w.target), static_cast<T>(w.uniform), pg,
                            device_error_flag());
  });
}

}  // namespace upcycle
