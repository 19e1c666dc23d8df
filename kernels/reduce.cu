// CudaBackend reductions: reduce (sum / mean / max over the middle axis of [outer, axis, inner]),
// expand_axis and the multi-tensor sum_squares. CPU twins: src/backend/cpu/cpu_reduce.cpp.
//
// Sums accumulate in double for f32 as on the CPU. Every reduction runs in a fixed tree (fixed
// thread-to-element assignment, warp shuffles and shared memory in a fixed order, partials of a
// split axis summed by a second kernel): results do not depend on timing, and no float atomics
// are used. The plans (which kernel, how the axis is split) live in layout_math.hpp.
#include <climits>
#include <limits>
#include <type_traits>
#include <vector>

#include "backend/checks_reduce.hpp"
#include "cuda_common.cuh"
#include "layout_math.hpp"

namespace upcycle {

namespace {

using cuda::ceil_div;

constexpr unsigned kFullMask = 0xffffffffu;

// Blocks for a kernel that walks `tasks` block tasks in a block-stride loop.
unsigned task_blocks(std::int64_t tasks) {
  constexpr std::int64_t kMax = INT_MAX;
  return static_cast<unsigned>(tasks < 1 ? 1 : (tasks > kMax ? kMax : tasks));
}

// --- reduction operators ----------------------------------------------------------------------
// Acc: the running value; Partial: what a chunk of a split axis leaves for the second pass, whose
// operator is Next (it reads Partial); finalize turns the accumulator into the output.

template <class InT>
struct SumOp {
  using In = InT;
  using Acc = double;
  using Partial = double;
  using Next = SumOp<double>;
  static constexpr bool kFirstNanWins = false;
  __device__ static Acc identity() { return 0.0; }
  __device__ static Acc load(In v, long long) { return static_cast<double>(v); }
  __device__ static Acc combine(Acc a, Acc b) { return a + b; }
  __device__ static Acc shfl_down(Acc a, int d) { return __shfl_down_sync(kFullMask, a, d); }
  __device__ static Partial to_partial(Acc a) { return a; }
  template <class Out>
  __device__ static Out finalize(Acc a, double scale) {
    return static_cast<Out>(a * scale);
  }
};

// Max as the CPU folds it, m = x > m ? x : m: a NaN never replaces m, and among equal values
// (+0 and -0) the first one stays. In a tree that means: NaN is skipped at load, and of two
// candidates the larger wins, ties going to the lower axis index, so the index travels along.
// (With inner == 1 the CPU starts from x[0] rather than -inf, so a NaN first element wins: the
// kernels apply that rule when they write the row's result, see RowsArgs::nan_first.)
template <class T>
struct MaxAcc {
  T v;
  long long idx;
};

template <class InT>
struct MaxOp {
  using In = InT;
  using Acc = MaxAcc<InT>;
  using Partial = InT;
  using Next = MaxOp<InT>;  // partials of contiguous chunks: the chunk number orders them
  static constexpr bool kFirstNanWins = true;
  __device__ static Acc identity() { return Acc{-std::numeric_limits<In>::infinity(), LLONG_MAX}; }
  __device__ static Acc load(In v, long long idx) {
    // v != v: NaN (no fast-math here).
    return v != v ? identity() : Acc{v, idx};
  }
  __device__ static Acc combine(Acc a, Acc b) { return (b.v > a.v || (b.v == a.v && b.idx < a.idx)) ? b : a; }
  __device__ static Acc shfl_down(Acc a, int d) {
    return Acc{__shfl_down_sync(kFullMask, a.v, d), __shfl_down_sync(kFullMask, a.idx, d)};
  }
  __device__ static Partial to_partial(Acc a) { return a.v; }
  template <class Out>
  __device__ static Out finalize(Acc a, double) {
    return a.v;
  }
};

// Sum of the whole warp's values, in lane 0 (all 32 lanes must take part).
template <class Op>
__device__ typename Op::Acc warp_reduce(typename Op::Acc a) {
#pragma unroll
  for (int d = 16; d > 0; d >>= 1) a = Op::combine(a, Op::shfl_down(a, d));
  return a;
}

// Reduction over the block (blockDim.x a multiple of 32, at most 1024), in thread 0. Every thread
// of the block must call it; it ends with a barrier so that `scratch` can be reused at once.
template <class Op>
__device__ typename Op::Acc block_reduce(typename Op::Acc a, typename Op::Acc* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  a = warp_reduce<Op>(a);
  if (lane == 0) scratch[warp] = a;
  __syncthreads();
  if (warp == 0) {
    a = lane < warps ? scratch[lane] : Op::identity();
    a = warp_reduce<Op>(a);
  }
  __syncthreads();
  return a;
}

// --- rows: inner == 1, and the second pass over partials ---------------------------------------

// `rows` rows of `len` contiguous elements of x. chunks == 1: row r's result goes to out[r].
// chunks > 1: chunk c of row r goes to partial[r * chunks + c].
template <class Op, class Out>
struct RowsArgs {
  const typename Op::In* x;
  std::int64_t rows, len, chunks;
  Out* out;
  typename Op::Partial* partial;
  double scale;
  // Max with inner == 1: the CPU starts its fold at the row's first element, so a NaN there is
  // the result. nan_first[r * nan_stride] is that element (null when the rule does not apply).
  const Out* nan_first;
  std::int64_t nan_stride;
};

template <class Op, class Out>
__device__ void store_row(const RowsArgs<Op, Out>& p, std::int64_t r, std::int64_t c, typename Op::Acc acc) {
  if (p.chunks > 1) {
    p.partial[cuda::reduce_partial_index(r, c, p.chunks)] = Op::to_partial(acc);
    return;
  }
  Out v = Op::template finalize<Out>(acc, p.scale);
  if (p.nan_first != nullptr) {
    const Out first = p.nan_first[r * p.nan_stride];
    if (first != first) v = first;
  }
  p.out[r] = v;
}

// One warp per short row (8 rows per block). CPU twin: reduce_typed (inner == 1) in
// src/backend/cpu/cpu_reduce.cpp. The row loop is uniform over each warp, so full-mask shuffles
// always see all 32 lanes.
template <class Op, class Out>
__global__ void __launch_bounds__(cuda::kReduceThreads) reduce_rows_warp_kernel(RowsArgs<Op, Out> p) {
  const int lane = threadIdx.x & 31;
  const std::int64_t warps = cuda::kReduceWarpsPerBlock;
  for (std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * warps + (threadIdx.x >> 5); r < p.rows;
       r += static_cast<std::int64_t>(gridDim.x) * warps) {
    const typename Op::In* row = p.x + r * p.len;
    typename Op::Acc acc = Op::identity();
    for (std::int64_t a = lane; a < p.len; a += 32) acc = Op::combine(acc, Op::load(row[a], a));
    acc = warp_reduce<Op>(acc);
    if (lane == 0) store_row(p, r, 0, acc);
  }
}

// One block per (row, chunk) of long rows. CPU twin: reduce_typed (inner == 1) in
// src/backend/cpu/cpu_reduce.cpp. Tasks are per block, so the barriers in block_reduce are
// reached by every thread.
template <class Op, class Out>
__global__ void __launch_bounds__(cuda::kReduceThreads) reduce_rows_block_kernel(RowsArgs<Op, Out> p) {
  __shared__ typename Op::Acc scratch[32];
  const std::int64_t tasks = p.rows * p.chunks;
  for (std::int64_t task = blockIdx.x; task < tasks; task += gridDim.x) {
    const std::int64_t r = task / p.chunks, c = task - r * p.chunks;
    const std::int64_t a1 = cuda::chunk_begin(c + 1, p.len, p.chunks);
    const typename Op::In* row = p.x + r * p.len;
    typename Op::Acc acc = Op::identity();
#pragma unroll 4
    for (std::int64_t a = cuda::chunk_begin(c, p.len, p.chunks) + threadIdx.x; a < a1; a += blockDim.x)
      acc = Op::combine(acc, Op::load(row[a], a));
    acc = block_reduce<Op>(acc, scratch);
    if (threadIdx.x == 0) store_row(p, r, c, acc);
  }
}

template <class Op, class Out>
void launch_rows(const RowsArgs<Op, Out>& p, bool warp_per_row, cudaStream_t stream) {
  if (warp_per_row) {
    reduce_rows_warp_kernel<Op, Out>
        <<<task_blocks(ceil_div(p.rows, cuda::kReduceWarpsPerBlock)), cuda::kReduceThreads, 0, stream>>>(p);
  } else {
    reduce_rows_block_kernel<Op, Out><<<task_blocks(p.rows * p.chunks), cuda::kReduceThreads, 0, stream>>>(p);
  }
  UPCYCLE_CUDA_CHECK_LAUNCH();
}

// --- columns: inner > 1 ------------------------------------------------------------------------

template <class Op, class Out>
struct ColsArgs {
  const typename Op::In* x;
  std::int64_t outer, axis, inner, chunks, col_tiles;
  Out* out;                       // chunks == 1: [outer, inner]
  typename Op::Partial* partial;  // chunks > 1: [outer * inner, chunks]
  double scale;
};

// A (tx, ty) block per (outer index, axis chunk, tile of tx columns): lanes along x read adjacent
// columns (coalesced), thread rows take every ty-th axis row of the chunk, and the thread rows
// are combined through shared memory in a fixed tree. CPU twin: reduce_typed (inner > 1) in
// src/backend/cpu/cpu_reduce.cpp.
template <class Op, class Out>
__global__ void __launch_bounds__(cuda::kReduceThreads) reduce_cols_kernel(ColsArgs<Op, Out> p) {
  __shared__ typename Op::Acc tile[cuda::kReduceThreads];
  const int tx = threadIdx.x, ty = threadIdx.y, nx = blockDim.x, ny = blockDim.y;
  const int slot = ty * nx + tx;
  const std::int64_t tasks = p.outer * p.chunks * p.col_tiles;
  for (std::int64_t task = blockIdx.x; task < tasks; task += gridDim.x) {
    const cuda::ReduceColsTask t = cuda::reduce_cols_task(task, p.col_tiles, p.chunks);
    const std::int64_t i = t.tile * nx + tx;
    const bool valid = i < p.inner;
    typename Op::Acc acc = Op::identity();
    if (valid) {
      const std::int64_t a1 = cuda::chunk_begin(t.c + 1, p.axis, p.chunks);
      const typename Op::In* col = p.x + cuda::reduce_x_index(t.o, 0, i, p.axis, p.inner);
#pragma unroll 4
      for (std::int64_t a = cuda::chunk_begin(t.c, p.axis, p.chunks) + ty; a < a1; a += ny)
        acc = Op::combine(acc, Op::load(col[a * p.inner], a));
    }
    tile[slot] = acc;
    __syncthreads();
    for (int s = ny / 2; s > 0; s >>= 1) {
      if (ty < s) tile[slot] = Op::combine(tile[slot], tile[slot + s * nx]);
      __syncthreads();
    }
    if (ty == 0 && valid) {
      const std::int64_t r = t.o * p.inner + i;
      if (p.chunks > 1) p.partial[cuda::reduce_partial_index(r, t.c, p.chunks)] = Op::to_partial(tile[tx]);
      else p.out[r] = Op::template finalize<Out>(tile[tx], p.scale);
    }
    __syncthreads();  // the next task overwrites the tile
  }
}

// --- host side of reduce ----------------------------------------------------------------------

template <class Op, class T>
void run_reduce(CudaBackend& be, const T* x, T* out, std::int64_t outer, std::int64_t axis, std::int64_t inner,
                double scale) {
  using Next = typename Op::Next;
  using Partial = typename Op::Partial;
  static_assert(std::is_same_v<typename Next::In, Partial>, "the second pass reads the partials");
  const cudaStream_t stream = be.stream();
  std::int64_t chunks = 1;
  const T* nan_first = nullptr;
  if (inner == 1) {
    const cuda::ReduceRowsPlan plan = cuda::plan_reduce_rows(outer, axis, true);
    if (Op::kFirstNanWins && axis > 0) nan_first = x;
    chunks = plan.chunks;
    RowsArgs<Op, T> p{x, outer, axis, chunks, out, nullptr, scale, nan_first, axis};
    if (chunks == 1) {
      launch_rows(p, plan.warp_per_row, stream);
      return;
    }
    p.partial = static_cast<Partial*>(be.workspace(static_cast<std::size_t>(outer * chunks) * sizeof(Partial)));
    launch_rows(p, false, stream);
    RowsArgs<Next, T> second{p.partial, outer, chunks, 1, out, nullptr, scale, nan_first, axis};
    launch_rows(second, cuda::plan_reduce_rows(outer, chunks, false).warp_per_row, stream);
    return;
  }
  const cuda::ReduceColsPlan plan = cuda::plan_reduce_cols(outer, axis, inner);
  ColsArgs<Op, T> p{x, outer, axis, inner, plan.chunks, plan.col_tiles, out, nullptr, scale};
  if (plan.chunks > 1)
    p.partial = static_cast<Partial*>(
        be.workspace(static_cast<std::size_t>(outer * inner * plan.chunks) * sizeof(Partial)));
  const dim3 block(static_cast<unsigned>(plan.tx), static_cast<unsigned>(plan.ty));
  reduce_cols_kernel<Op, T><<<task_blocks(outer * plan.chunks * plan.col_tiles), block, 0, stream>>>(p);
  UPCYCLE_CUDA_CHECK_LAUNCH();
  if (plan.chunks == 1) return;
  RowsArgs<Next, T> second{p.partial, outer * inner, plan.chunks, 1, out, nullptr, scale, nullptr, 0};
  launch_rows(second, cuda::plan_reduce_rows(outer * inner, plan.chunks, false).warp_per_row, stream);
}

// --- expand_axis -------------------------------------------------------------------------------

// out[o, j, i] = alpha * x[o, i] over a grid-stride loop on the output (coalesced writes; the
// reads repeat each x row `axis` times and stay in cache). CPU twin: CpuBackend::expand_axis in
// src/backend/cpu/cpu_reduce.cpp.
template <class T, class I>
__global__ void expand_axis_kernel(const T* x, T* out, std::int64_t n, I axis_inner, I inner, T alpha) {
  for (std::int64_t k = cuda::grid_first(); k < n; k += cuda::grid_stride()) {
    const I idx = static_cast<I>(k);
    out[idx] = alpha * x[cuda::expand_source_index<I>(idx, axis_inner, inner)];
  }
}

// --- sum_squares -------------------------------------------------------------------------------

// One block per fixed block of kSumSquaresBlock elements of one tensor of the batch, writing one
// partial. CPU twin: CpuBackend::sum_squares in src/backend/cpu/cpu_reduce.cpp.
__global__ void __launch_bounds__(cuda::kSumSquaresThreads)
    sum_squares_partial_kernel(cuda::SumSquaresBatch b, double* partial) {
  __shared__ double scratch[32];
  const std::int64_t blocks = b.first_block[b.count];
  for (std::int64_t blk = blockIdx.x; blk < blocks; blk += gridDim.x) {
    const int t = cuda::sum_squares_tensor_of(b, blk);
    const std::int64_t begin = (blk - b.first_block[t]) * cuda::kSumSquaresBlock;
    const std::int64_t end = min(b.numel[t], begin + cuda::kSumSquaresBlock);
    double s = 0.0;
    if (b.is_f64[t]) {
      const double* p = static_cast<const double*>(b.ptr[t]);
      for (std::int64_t k = begin + threadIdx.x; k < end; k += blockDim.x) s += p[k] * p[k];
    } else {
      const float* p = static_cast<const float*>(b.ptr[t]);
      for (std::int64_t k = begin + threadIdx.x; k < end; k += blockDim.x) {
        const double v = static_cast<double>(p[k]);
        s += v * v;
      }
    }
    s = block_reduce<SumOp<double>>(s, scratch);
    if (threadIdx.x == 0) partial[b.partial_base + blk] = s;
  }
}

// One block sums every partial in a fixed tree and writes the total (0 when there are none).
// CPU twin: CpuBackend::sum_squares in src/backend/cpu/cpu_reduce.cpp.
__global__ void __launch_bounds__(cuda::kSumSquaresFinalThreads)
    sum_squares_final_kernel(const double* partial, std::int64_t n, double* out) {
  __shared__ double scratch[32];
  double s = 0.0;
  for (std::int64_t k = threadIdx.x; k < n; k += blockDim.x) s += partial[k];
  s = block_reduce<SumOp<double>>(s, scratch);
  if (threadIdx.x == 0) out[0] = s;
}

}  // namespace

// CPU twin: CpuBackend::reduce in src/backend/cpu/cpu_reduce.cpp.
void CudaBackend::reduce(ReduceOp op, const Tensor& x, Tensor& out, std::int64_t outer, std::int64_t axis,
                         std::int64_t inner) {
  check_reduce_args(x, out, outer, axis, inner);
  dispatch_floating(x.dtype(), "reduce", [&](auto tag) {
    using T = decltype(tag);
    const T* px = cuda::device_ptr<T>(x, "reduce input");
    T* po = cuda::device_ptr<T>(out, "reduce output");
    // No output element (numel checks leave outer, inner <= 0 only with nothing to write).
    if (outer <= 0 || inner <= 0) return;
    const double scale = op == ReduceOp::mean && axis > 0 ? 1.0 / static_cast<double>(axis) : 1.0;
    if (op == ReduceOp::max) run_reduce<MaxOp<T>>(*this, px, po, outer, axis, inner, scale);
    else run_reduce<SumOp<T>>(*this, px, po, outer, axis, inner, scale);
  });
}

// CPU twin: CpuBackend::expand_axis in src/backend/cpu/cpu_reduce.cpp.
void CudaBackend::expand_axis(const Tensor& x, Tensor& out, std::int64_t outer, std::int64_t axis,
                              std::int64_t inner, double alpha) {
  check_expand_axis_args(x, out, outer, axis, inner);
  dispatch_floating(x.dtype(), "expand_axis", [&](auto tag) {
    using T = decltype(tag);
    const T* px = cuda::device_ptr<T>(x, "expand_axis input");
    T* po = cuda::device_ptr<T>(out, "expand_axis output");
    if (outer <= 0 || axis <= 0 || inner <= 0) return;
    const std::int64_t n = outer * axis * inner;
    const T a = static_cast<T>(alpha);
    // 32-bit index math (cheaper divisions) whenever every index fits.
    if (n <= INT_MAX) {
      expand_axis_kernel<T, std::uint32_t><<<cuda::grid_blocks(n), cuda::kBlockThreads, 0, stream()>>>(
          px, po, n, static_cast<std::uint32_t>(axis * inner), static_cast<std::uint32_t>(inner), a);
    } else {
      expand_axis_kernel<T, std::int64_t>
          <<<cuda::grid_blocks(n), cuda::kBlockThreads, 0, stream()>>>(px, po, n, axis * inner, inner, a);
    }
    UPCYCLE_CUDA_CHECK_LAUNCH();
  });
}

// CPU twin: CpuBackend::sum_squares in src/backend/cpu/cpu_reduce.cpp. Every tensor is checked
// before anything is enqueued; partials are numbered over the whole list, so the result does not
// depend on how the list is cut into launches.
void CudaBackend::sum_squares(const std::vector<Tensor>& xs, Tensor& out) {
  check_sum_squares_output(out);
  double* po = cuda::device_ptr<double>(out, "sum_squares output");
  std::vector<cuda::SumSquaresBatch> batches;
  std::int64_t partials = 0;
  for (const Tensor& x : xs) {
    const void* ptr = nullptr;
    bool f64 = false;
    dispatch_floating(x.dtype(), "sum_squares", [&](auto tag) {
      using T = decltype(tag);
      ptr = cuda::device_ptr<T>(x, "sum_squares input");
      f64 = std::is_same_v<T, double>;
    });
    if (x.numel() == 0) continue;
    if (batches.empty() || batches.back().count == cuda::kSumSquaresMaxTensors) {
      batches.emplace_back();
      cuda::sum_squares_batch_init(batches.back(), partials);
    }
    partials += cuda::sum_squares_batch_add(batches.back(), ptr, x.numel(), f64);
  }
  double* partial =
      partials > 0 ? static_cast<double*>(workspace(static_cast<std::size_t>(partials) * sizeof(double))) : nullptr;
  for (const cuda::SumSquaresBatch& b : batches) {
    sum_squares_partial_kernel<<<task_blocks(b.first_block[b.count]), cuda::kSumSquaresThreads, 0, stream()>>>(
        b, partial);
    UPCYCLE_CUDA_CHECK_LAUNCH();
  }
  sum_squares_final_kernel<<<1, cuda::kSumSquaresFinalThreads, 0, stream()>>>(partial, partials, po);
  UPCYCLE_CUDA_CHECK_LAUNCH();
}

}  // namespace upcycle
