#pragma once
// What the row kernels (softmax.cu, cross_entropy.cu, norm.cu) share: the two row groups (a warp
// or a block per row) with their all-reduce, exp / log of the element type, and the launch that
// picks the group from the row length (rows_math.hpp: row_geometry).
//
// A kernel is written once against a Group: rows first_row(), first_row() + row_stride(), ...;
// within a row, thread rank() handles elements rank(), rank() + size(), ... Every pass of a row
// uses this same assignment, so a thread only ever reads and writes its own elements: an output
// may alias an input without a barrier between the passes. All threads of a group take the same
// rows (the loop bounds are group-uniform), so the barriers inside the block all-reduce are
// reached by every thread of the block.
#include <cuda_runtime.h>

#include <cstdint>
#include <limits>

#include "cuda_common.cuh"
#include "rows_math.hpp"

namespace upcycle::cuda::rows {

__device__ inline float exp_of(float v) { return expf(v); }
__device__ inline double exp_of(double v) { return exp(v); }

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// The CPU twins take row maxima as `x > m ? x : m` from -inf, which skips NaN; fmax does too, and
// unlike the ternary it is symmetric, so every lane of a butterfly ends with the same value.
struct MaxOp {
  __device__ static double identity() { return kNegInf; }
  __device__ double operator()(double a, double b) const { return fmax(a, b); }
};
struct SumOp {
  __device__ static double identity() { return 0.0; }
  __device__ double operator()(double a, double b) const { return a + b; }
};

// Butterfly over the full warp: every lane gets the result (the groups only launch whole warps,
// so the full mask is always right). a + b == b + a exactly, so the lanes agree bit for bit.
template <class Op>
__device__ inline double warp_allreduce(double v, Op op) {
#pragma unroll
  for (int offset = kRowWarp / 2; offset > 0; offset >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Block-wide all-reduce of N values. Warp results go to partial[][warp], warp 0 combines them
// into result[], everyone reads result[]. Three barriers; back-to-back calls need no fourth: a
// call's partial[] writes come after the previous call's last barrier (which follows warp 0's
// reads of partial[]), and its result[] write comes after its second barrier, which every thread
// reaches only after reading the previous result[].
template <int N, class Op>
__device__ inline void block_allreduce(double (&v)[N], Op op) {
  __shared__ double partial[N][kRowWarp];
  __shared__ double result[N];
  const int lane = threadIdx.x % kRowWarp, warp = threadIdx.x / kRowWarp;
  const int warps = blockDim.x / kRowWarp;
#pragma unroll
  for (int i = 0; i < N; ++i) v[i] = warp_allreduce(v[i], op);
  if (lane == 0) {
#pragma unroll
    for (int i = 0; i < N; ++i) partial[i][warp] = v[i];
  }
  __syncthreads();
  if (warp == 0) {
#pragma unroll
    for (int i = 0; i < N; ++i) {
      double w = lane < warps ? partial[i][lane] : Op::identity();
      w = warp_allreduce(w, op);
      if (lane == 0) result[i] = w;
    }
  }
  __syncthreads();
#pragma unroll
  for (int i = 0; i < N; ++i) v[i] = result[i];
}

// One warp per row (rows of at most kWarpRowMaxCols elements): shuffles only, no barriers.
struct WarpPerRow {
  static constexpr int kMaxThreads = kRowWarp * kWarpRowsPerBlock;  // the launch bound
  __device__ static std::int64_t first_row() {
    return group_first_row(blockIdx.x, static_cast<int>(threadIdx.x / kRowWarp), blockDim.x / kRowWarp);
  }
  __device__ static std::int64_t row_stride() { return group_row_stride(gridDim.x, blockDim.x / kRowWarp); }
  __device__ static int rank() { return static_cast<int>(threadIdx.x % kRowWarp); }
  __device__ static int size() { return kRowWarp; }
  __device__ static double max(double v) { return warp_allreduce(v, MaxOp{}); }
  __device__ static double sum(double v) { return warp_allreduce(v, SumOp{}); }
  __device__ static void sum2(double& a, double& b) {
    a = warp_allreduce(a, SumOp{});
    b = warp_allreduce(b, SumOp{});
  }
};

// One block per row (longer rows).
struct BlockPerRow {
  static constexpr int kMaxThreads = 1024;  // row_geometry's largest block: at most 64 registers
  __device__ static std::int64_t first_row() { return group_first_row(blockIdx.x, 0, 0); }
  __device__ static std::int64_t row_stride() { return group_row_stride(gridDim.x, 0); }
  __device__ static int rank() { return static_cast<int>(threadIdx.x); }
  __device__ static int size() { return static_cast<int>(blockDim.x); }
  __device__ static double max(double v) {
    double a[1] = {v};
    block_allreduce(a, MaxOp{});
    return a[0];
  }
  __device__ static double sum(double v) {
    double a[1] = {v};
    block_allreduce(a, SumOp{});
    return a[0];
  }
  __device__ static void sum2(double& a, double& b) {
    double ab[2] = {a, b};
    block_allreduce(ab, SumOp{});
    a = ab[0];
    b = ab[1];
  }
};

// Launches kernel<WarpPerRow> or kernel<BlockPerRow> (passed as the two instantiations) for rows
// of `cols` elements on `stream`. Nothing is launched for an empty tensor.
template <class... P, class... A>
void launch_rows(std::int64_t rows, std::int64_t cols, cudaStream_t stream, void (*warp_kernel)(P...),
                 void (*block_kernel)(P...), A... args) {
  if (rows <= 0 || cols <= 0) return;
  const RowGeometry g = row_geometry(rows, cols);
  if (g.warp_per_row) warp_kernel<<<g.blocks, g.threads, 0, stream>>>(args...);
  else block_kernel<<<g.blocks, g.threads, 0, stream>>>(args...);
  UPCYCLE_CUDA_CHECK_LAUNCH();
}

}  // namespace upcycle::cuda::rows
