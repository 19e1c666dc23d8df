// The clustering kernels of spherical k-means (init/spherical_kmeans.hpp) on the GPU:
// normalize_rows and cluster_sums. CPU twins: src/backend/cpu/cpu_cluster.cpp.
//
// cluster_sums promises the same bits as the CPU: its first pass gives each (chunk, column) one
// thread that adds the chunk's rows in row order into a double partial in the workspace, its
// second pass adds each element's partials in chunk order (cluster_math.hpp, which the CPU tests
// run task by task against the CPU kernel). Only additions of doubles: there is no FMA to contract
// and no float atomic anywhere.
#include <cstdint>

#include "backend/checks_cluster.hpp"
#include "cluster_math.hpp"
#include "cuda_common.cuh"
#include "row_common.cuh"

namespace upcycle {

namespace {

using cuda::rows::BlockPerRow;
using cuda::rows::WarpPerRow;

// CPU twin: normalize_rows_typed. The row group sums the squares in double in its own order, so a
// norm may differ from the CPU's in the last bits (and a unit element by one rounding of T). Each
// thread reads and writes only its own elements: out may be x.
template <class T, class Group>
__global__ void __launch_bounds__(Group::kMaxThreads)
    normalize_rows_kernel(const T* x, T* out, double* norms, std::int64_t rows, std::int64_t dim) {
  const int rank = Group::rank(), size = Group::size();
  for (std::int64_t r = Group::first_row(); r < rows; r += Group::row_stride()) {
    const T* xr = x + r * dim;
    T* orow = out + r * dim;
    double sq = 0.0;
    for (std::int64_t j = rank; j < dim; j += size) {
      const double v = static_cast<double>(xr[j]);
      sq += v * v;
    }
    const double norm = sqrt(Group::sum(sq));
    if (rank == 0) norms[r] = norm;
    const bool scalable = isfinite(norm) && norm != 0.0;
    const double inv = scalable ? 1.0 / norm : 0.0;
    for (std::int64_t j = rank; j < dim; j += size) orow[j] = scalable ? static_cast<T>(xr[j] * inv) : T(0);
  }
}

// CPU twin: the chunk loop of cluster_sums_typed. One thread per task (cluster_math.hpp).
template <class T>
__global__ void cluster_partials_kernel(const T* x, const T* score, const std::int64_t* assignment,
                                        const std::int64_t* previous, std::int64_t rows, std::int64_t dim,
                                        std::int64_t clusters, std::int64_t chunk_rows, std::int64_t chunks,
                                        double* partial, int* error_flag) {
  const std::int64_t tasks = cuda::cluster_tasks(chunks, dim);
  for (std::int64_t task = cuda::grid_first(); task < tasks; task += cuda::grid_stride())
    if (!cuda::cluster_partial_task(task, x, score, assignment, previous, rows, dim, clusters, chunk_rows, partial))
      cuda::report_device_error(error_flag, cuda::DeviceError::cluster_sums_assignment);
}

// CPU twin: the final loop of cluster_sums_typed.
__global__ void cluster_reduce_kernel(const double* partial, std::int64_t chunks, std::int64_t stride, double* out) {
  for (std::int64_t i = cuda::grid_first(); i < stride; i += cuda::grid_stride())
    out[i] = cuda::cluster_reduce_element(i, partial, chunks, stride);
}

}  // namespace

// CPU twin: CpuBackend::normalize_rows in src/backend/cpu/cpu_cluster.cpp.
void CudaBackend::normalize_rows(const Tensor& x, Tensor& out, Tensor& norms) {
  const NormalizeRowsDims d = check_normalize_rows_args(x, out, norms);
  dispatch_floating(x.dtype(), "normalize_rows", [&](auto t) {
    using T = decltype(t);
    const T* px = cuda::device_ptr<T>(x, "normalize_rows x");
    T* po = cuda::device_ptr<T>(out, "normalize_rows out");
    double* pn = cuda::device_ptr<double>(norms, "normalize_rows norms");
    if (d.rows == 0) return;
    if (d.cols == 0) {  // rows of no elements have norm 0 (and nothing to write)
      fill(norms, 0.0);
      return;
    }
    cuda::rows::launch_rows(d.rows, d.cols, stream_, normalize_rows_kernel<T, WarpPerRow>,
                            normalize_rows_kernel<T, BlockPerRow>, px, po, pn, d.rows, d.cols);
  });
}

// CPU twin: CpuBackend::cluster_sums in src/backend/cpu/cpu_cluster.cpp.
void CudaBackend::cluster_sums(const Tensor& points, const Tensor& score, const Tensor& assignment,
                               const Tensor& previous, std::int64_t clusters, std::int64_t chunk_rows, Tensor& out) {
  const ClusterSumsLayout l = check_cluster_sums_args(points, score, assignment, previous, clusters, chunk_rows, out);
  dispatch_floating(points.dtype(), "cluster_sums", [&](auto t) {
    using T = decltype(t);
    const T* px = cuda::device_ptr<T>(points, "cluster_sums points");
    const T* ps = cuda::device_ptr<T>(score, "cluster_sums score");
    const std::int64_t* pa = cuda::device_ptr<std::int64_t>(assignment, "cluster_sums assignment");
    const std::int64_t* pp = cuda::device_ptr<std::int64_t>(previous, "cluster_sums previous");
    double* po = cuda::device_ptr<double>(out, "cluster_sums out");
    const std::int64_t chunks = l.chunks(), stride = l.stride();
    if (chunks == 0) {  // no points: every sum is 0
      fill(out, 0.0);
      return;
    }
    double* partial = static_cast<double*>(workspace(static_cast<std::size_t>(chunks * stride) * sizeof(double)));
    cluster_partials_kernel<T><<<cuda::grid_blocks(cuda::cluster_tasks(chunks, l.dim)), cuda::kBlockThreads, 0,
                                 stream_>>>(px, ps, pa, pp, l.rows, l.dim, clusters, chunk_rows, chunks, partial,
                                            error_flag_);
    UPCYCLE_CUDA_CHECK_LAUNCH();
    cluster_reduce_kernel<<<cuda::grid_blocks(stride), cuda::kBlockThreads, 0, stream_>>>(partial, chunks, stride, po);
    UPCYCLE_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace upcycle
