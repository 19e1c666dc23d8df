// Row and last-dim gather / scatter-add on the GPU. CPU twins: src/backend/cpu/cpu_index.cpp.
//
// The CPU validates every index before writing anything and throws. Here only the device sees
// the indices: a bad one sets the device error flag (the host throws at its next wait, naming the
// kernel) and its element is skipped; the other elements are still written.
//
// Each kernel runs on row tiles (index_math.hpp): blockDim = (tx along a row, ty rows), striding
// over the rows of the grid. All index arithmetic is in int64 (tensors may exceed 2^31 elements).
#include "backend/checks_index.hpp"
#include "cuda_common.cuh"
#include "index_math.hpp"

namespace upcycle {

namespace {

__device__ inline std::int64_t tile_first_row() {
  return static_cast<std::int64_t>(blockIdx.x) * blockDim.y + threadIdx.y;
}
__device__ inline std::int64_t tile_row_stride() { return static_cast<std::int64_t>(gridDim.x) * blockDim.y; }

// CPU twin: CpuBackend::gather_rows. out[i, :] = table[idx[i], :]. A row of a bad index is left
// as it was (and reported once, by the row's first thread).
template <class T, class I>
__global__ void gather_rows_kernel(const T* table, const I* __restrict__ idx, T* out,
                                   std::int64_t V, std::int64_t D, std::int64_t N, int* error_flag) {
  for (std::int64_t i = tile_first_row(); i < N; i += tile_row_stride()) {
    const I row = idx[i];
    if (!cuda::index_in_range(row, V)) {
      if (threadIdx.x == 0) cuda::report_device_error(error_flag, cuda::DeviceError::gather_rows_index);
      continue;
    }
    const T* src = table + static_cast<std::int64_t>(row) * D;
    T* dst = out + i * D;
    for (std::int64_t j = threadIdx.x; j < D; j += blockDim.x) dst[j] = src[j];
  }
}

// CPU twin: CpuBackend::index_add_rows. out[idx[i], :] += src[i, :]. Repeated indices add into
// the same row from different threads, so the adds are atomic, and the order in which a row's
// contributions are summed is not fixed: with repeats the float result may differ from the CPU's
// (which sums in index order) in the last bits and from run to run. Without repeats every element
// gets a single add and the result is exact.
template <class T, class I>
__global__ void index_add_rows_kernel(T* out, const I* __restrict__ idx, const T* src, std::int64_t V,
                                      std::int64_t D, std::int64_t N, int* error_flag) {
  for (std::int64_t i = tile_first_row(); i < N; i += tile_row_stride()) {
    const I row = idx[i];
    if (!cuda::index_in_range(row, V)) {
      if (threadIdx.x == 0) cuda::report_device_error(error_flag, cuda::DeviceError::index_add_rows_index);
      continue;
    }
    T* dst = out + static_cast<std::int64_t>(row) * D;
    const T* s = src + i * D;
    for (std::int64_t j = threadIdx.x; j < D; j += blockDim.x) atomicAdd(dst + j, s[j]);
  }
}

// CPU twin: CpuBackend::gather_last. out[r, j] = x[r, idx[r, j]] for rows of k indices into rows
// of `cols` values.
template <class T, class I>
__global__ void gather_last_kernel(const T* x, const I* __restrict__ idx, T* out,
                                   std::int64_t rows, std::int64_t k, std::int64_t cols, int* error_flag) {
  for (std::int64_t r = tile_first_row(); r < rows; r += tile_row_stride()) {
    const I* ir = idx + r * k;
    const T* xr = x + r * cols;
    T* orow = out + r * k;
    for (std::int64_t j = threadIdx.x; j < k; j += blockDim.x) {
      const I c = ir[j];
      if (!cuda::index_in_range(c, cols)) {
        cuda::report_device_error(error_flag, cuda::DeviceError::gather_last_index);
        continue;
      }
      orow[j] = xr[static_cast<std::int64_t>(c)];
    }
  }
}

// CPU twin: CpuBackend::scatter_add_last. out[r, idx[r, j]] += src[r, j]. A row's indices only
// address that row. Launched with one thread per row (blockDim.x == 1, kAtomic false) for short
// rows: the thread adds in index order, exactly as the CPU does, repeats included. Long rows
// (kAtomic true) spread over threads, and repeated indices within a row then add atomically, in
// an order that is not fixed (see index_add_rows_kernel).
template <class T, class I, bool kAtomic>
__global__ void scatter_add_last_kernel(T* out, const I* __restrict__ idx, const T* src,
                                        std::int64_t rows, std::int64_t k, std::int64_t cols, int* error_flag) {
  for (std::int64_t r = tile_first_row(); r < rows; r += tile_row_stride()) {
    const I* ir = idx + r * k;
    const T* sr = src + r * k;
    T* orow = out + r * cols;
    for (std::int64_t j = threadIdx.x; j < k; j += blockDim.x) {
      const I c = ir[j];
      if (!cuda::index_in_range(c, cols)) {
        cuda::report_device_error(error_flag, cuda::DeviceError::scatter_add_last_index);
        continue;
      }
      if constexpr (kAtomic) atomicAdd(orow + static_cast<std::int64_t>(c), sr[j]);
      else orow[static_cast<std::int64_t>(c)] += sr[j];
    }
  }
}

dim3 tile_block(const cuda::RowTile& t) { return dim3(static_cast<unsigned>(t.tx), static_cast<unsigned>(t.ty)); }

}  // namespace

// CPU twin: CpuBackend::gather_rows in src/backend/cpu/cpu_index.cpp.
void CudaBackend::gather_rows(const Tensor& table, const Tensor& idx, Tensor& out) {
  const IndexRowsDims d = check_gather_rows_args(table, idx, out);
  dispatch_floating(table.dtype(), "gather_rows", [&](auto t) {
    using T = decltype(t);
    dispatch_index(idx.dtype(), "gather_rows", [&](auto it) {
      using I = decltype(it);
      const T* pt = cuda::device_ptr<T>(table, "gather_rows table");
      const I* pi = cuda::device_ptr<I>(idx, "gather_rows indices");
      T* po = cuda::device_ptr<T>(out, "gather_rows output");
      // Launched even when D == 0: the indices are still checked, as on the CPU.
      if (d.N == 0) return;
      const cuda::RowTile tile = cuda::row_tile(d.D);
      gather_rows_kernel<T, I><<<cuda::row_tile_blocks(d.N, tile), tile_block(tile), 0, stream_>>>(
          pt, pi, po, d.V, d.D, d.N, error_flag_);
      UPCYCLE_CUDA_CHECK_LAUNCH();
    });
  });
}

// CPU twin: CpuBackend::index_add_rows in src/backend/cpu/cpu_index.cpp.
void CudaBackend::index_add_rows(Tensor& out, const Tensor& idx, const Tensor& src) {
  const IndexRowsDims d = check_index_add_rows_args(out, idx, src);
  dispatch_floating(out.dtype(), "index_add_rows", [&](auto t) {
    using T = decltype(t);
    dispatch_index(idx.dtype(), "index_add_rows", [&](auto it) {
      using I = decltype(it);
      T* po = cuda::device_ptr<T>(out, "index_add_rows output");
      const I* pi = cuda::device_ptr<I>(idx, "index_add_rows indices");
      const T* ps = cuda::device_ptr<T>(src, "index_add_rows source");
      if (d.N == 0) return;  // D == 0 still checks the indices
      const cuda::RowTile tile = cuda::row_tile(d.D);
      index_add_rows_kernel<T, I><<<cuda::row_tile_blocks(d.N, tile), tile_block(tile), 0, stream_>>>(
          po, pi, ps, d.V, d.D, d.N, error_flag_);
      UPCYCLE_CUDA_CHECK_LAUNCH();
    });
  });
}

// CPU twin: CpuBackend::gather_last in src/backend/cpu/cpu_index.cpp.
void CudaBackend::gather_last(const Tensor& x, const Tensor& idx, Tensor& out) {
  const IndexLastDims d = check_gather_last_args(x, idx, out);
  dispatch_floating(x.dtype(), "gather_last", [&](auto t) {
    using T = decltype(t);
    dispatch_index(idx.dtype(), "gather_last", [&](auto it) {
      using I = decltype(it);
      const T* px = cuda::device_ptr<T>(x, "gather_last input");
      const I* pi = cuda::device_ptr<I>(idx, "gather_last indices");
      T* po = cuda::device_ptr<T>(out, "gather_last output");
      if (d.rows == 0 || d.k == 0) return;
      const cuda::RowTile tile = cuda::row_tile(d.k);
      gather_last_kernel<T, I><<<cuda::row_tile_blocks(d.rows, tile), tile_block(tile), 0, stream_>>>(
          px, pi, po, d.rows, d.k, d.cols, error_flag_);
      UPCYCLE_CUDA_CHECK_LAUNCH();
    });
  });
}

// CPU twin: CpuBackend::scatter_add_last in src/backend/cpu/cpu_index.cpp.
void CudaBackend::scatter_add_last(Tensor& out, const Tensor& idx, const Tensor& src) {
  const IndexLastDims d = check_scatter_add_last_args(out, idx, src);
  dispatch_floating(out.dtype(), "scatter_add_last", [&](auto t) {
    using T = decltype(t);
    dispatch_index(idx.dtype(), "scatter_add_last", [&](auto it) {
      using I = decltype(it);
      T* po = cuda::device_ptr<T>(out, "scatter_add_last output");
      const I* pi = cuda::device_ptr<I>(idx, "scatter_add_last indices");
      const T* ps = cuda::device_ptr<T>(src, "scatter_add_last source");
      if (d.rows == 0 || d.k == 0) return;
      if (d.k <= cuda::kScatterRowSerialMaxK) {
        const cuda::RowTile tile = cuda::row_tile(1);  // one thread per row
        scatter_add_last_kernel<T, I, false><<<cuda::row_tile_blocks(d.rows, tile), tile_block(tile), 0, stream_>>>(
            po, pi, ps, d.rows, d.k, d.cols, error_flag_);
      } else {
        const cuda::RowTile tile = cuda::row_tile(d.k);
        scatter_add_last_kernel<T, I, true><<<cuda::row_tile_blocks(d.rows, tile), tile_block(tile), 0, stream_>>>(
            po, pi, ps, d.rows, d.k, d.cols, error_flag_);
      }
      UPCYCLE_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace upcycle
