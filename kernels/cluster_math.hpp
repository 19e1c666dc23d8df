#pragma once
// The work of cluster_sums' two kernels (kernels/cluster.cu) as plain functions, compiled for the
// host too so that tests/unit/test_cuda_cluster_math.cpp runs them on the CPU, task by task as a
// launch would, and compares the result with CpuBackend::cluster_sums bit for bit. No CUDA
// includes.
//
// The first pass gives one task to each (chunk, column) of the chunk partials: columns 0 .. D-1
// sum that coordinate of the chunk's points, column D the sizes, the score sum and the changed
// count. A task walks its chunk's rows in order, as the CPU does, so every partial has the CPU's
// bits. Tasks are numbered chunk-major, so the threads of a warp take consecutive columns of one
// chunk and read consecutive elements of each point's row. The second pass adds each element's
// partials in chunk order.
#include <cstdint>

#include "upcycle/core/host_device.hpp"

namespace upcycle::cuda {

struct ClusterTask {
  std::int64_t chunk, column;
};

// Tasks of the first pass: (D + 1) per chunk.
UPCYCLE_HD inline std::int64_t cluster_tasks(std::int64_t chunks, std::int64_t dim) { return chunks * (dim + 1); }

UPCYCLE_HD inline ClusterTask cluster_task(std::int64_t task, std::int64_t dim) {
  const std::int64_t chunk = task / (dim + 1);
  return {chunk, task - chunk * (dim + 1)};
}

// The rows [cluster_chunk_begin, cluster_chunk_end) of a chunk (the last one may be short), for
// chunks < ceil(rows / chunk_rows); no intermediate exceeds `rows`, whatever chunk_rows is.
UPCYCLE_HD inline std::int64_t cluster_chunk_begin(std::int64_t chunk, std::int64_t chunk_rows) {
  return chunk * chunk_rows;
}
UPCYCLE_HD inline std::int64_t cluster_chunk_end(std::int64_t chunk, std::int64_t chunk_rows, std::int64_t rows) {
  const std::int64_t begin = chunk * chunk_rows;
  return rows - begin <= chunk_rows ? rows : begin + chunk_rows;
}

// One task of the first pass: writes its column of its chunk's partial (partial holds `stride` =
// K D + K + 2 doubles per chunk). Rows whose cluster lies outside [0, K) are skipped by every
// column; the scalar column returns false when it met one (the kernel reports it), true otherwise.
template <class T>
UPCYCLE_HD inline bool cluster_partial_task(std::int64_t task, const T* x, const T* score,
                                            const std::int64_t* assignment, const std::int64_t* previous,
                                            std::int64_t rows, std::int64_t dim, std::int64_t clusters,
                                            std::int64_t chunk_rows, double* partial) {
  const ClusterTask tk = cluster_task(task, dim);
  const std::int64_t t0 = cluster_chunk_begin(tk.chunk, chunk_rows), t1 = cluster_chunk_end(tk.chunk, chunk_rows, rows);
  double* part = partial + tk.chunk * (clusters * dim + clusters + 2);
  if (tk.column < dim) {
    const std::int64_t j = tk.column;
    for (std::int64_t e = 0; e < clusters; ++e) part[e * dim + j] = 0.0;
    for (std::int64_t t = t0; t < t1; ++t) {
      const std::int64_t e = assignment[t];
      if (e < 0 || e >= clusters) continue;
      part[e * dim + j] += static_cast<double>(x[t * dim + j]);
    }
    return true;
  }
  double* sizes = part + clusters * dim;
  for (std::int64_t e = 0; e < clusters; ++e) sizes[e] = 0.0;
  double objective = 0.0, changed = 0.0;
  bool in_range = true;
  for (std::int64_t t = t0; t < t1; ++t) {
    const std::int64_t e = assignment[t];
    objective += static_cast<double>(score[t]);
    changed += e != previous[t] ? 1.0 : 0.0;
    if (e < 0 || e >= clusters) {
      in_range = false;
      continue;
    }
    sizes[e] += 1.0;
  }
  sizes[clusters] = objective;
  sizes[clusters + 1] = changed;
  return in_range;
}

// Element i of the second pass: its chunk partials in chunk order, from 0.0.
UPCYCLE_HD inline double cluster_reduce_element(std::int64_t i, const double* partial, std::int64_t chunks,
                                                std::int64_t stride) {
  double v = 0.0;
  for (std::int64_t c = 0; c < chunks; ++c) v += partial[c * stride + i];
  return v;
}

}  // namespace upcycle::cuda
