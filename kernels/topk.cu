// Per-row top-k and argsort over the last dim of [rows, cols]. CPU twins: topk_typed and
// argsort_typed in src/backend/cpu/cpu_sort.cpp.
//
// Both order values as the CPU does (NaN above every number, -0 == +0, ties by the lower index)
// through the unsigned order keys of topk_math.hpp: (key, index) is a total order, so the result
// is the CPU's exactly, whatever order the threads meet the elements in.
//
// topk (k <= 16): each thread keeps its best k candidates of the elements it strides over in a
// sorted register list; then k rounds pick the best list head of the row (warp shuffles, plus one
// shared-memory step across the warps of a block) and its owner pops it. One warp per row for rows
// of up to kWarpRowMaxCols, one block per row above. Larger k sorts the rows (argsort) and takes
// the first k.
//
// argsort: a stable segmented radix sort (CUB) of the keys with the column indices as values. This
// is one of the two translation units allowed to use CUB. DeviceSegmentedRadixSort is used rather
// than DeviceSegmentedSort because the latter copies group sizes to the host and waits for the
// stream when there are many segments.
#include <algorithm>
#include <climits>

#include <cub/device/device_segmented_radix_sort.cuh>

#include "backend/checks_sort.hpp"
#include "cuda_common.cuh"
#include "topk_math.hpp"

namespace upcycle {

namespace {

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr std::int64_t kWarpRowMaxCols = 1024;  // longer rows get a block each
constexpr int kTopkThreads = 256;               // threads per block of both top-k kernels

// The best candidate of the warp, in every lane (the order is total: all lanes agree).
template <class K>
__device__ inline cuda::KeyIdx<K> warp_best(cuda::KeyIdx<K> c) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset >>= 1) {
    cuda::KeyIdx<K> o;
    o.key = __shfl_xor_sync(kFullMask, c.key, offset);
    o.idx = __shfl_xor_sync(kFullMask, c.idx, offset);
    c = cuda::better_of(c, o);
  }
  return c;
}

// CPU twin: topk_typed in src/backend/cpu/cpu_sort.cpp. One warp per row (rows of at most
// kWarpRowMaxCols): shuffles only, no shared memory or barriers. Rows are warp-uniform, so every
// lane takes part in every shuffle (full mask). A row has at least k elements and every list holds
// N >= k, so each round has a valid winner; its owner is the one lane whose head has its index.
template <class T, int N>
__global__ void topk_warp_kernel(const T* x, std::int64_t rows, std::int64_t cols, std::int64_t k, T* values,
                                 std::int64_t* idx) {
  using K = cuda::order_key_t<T>;
  const int lane = static_cast<int>(threadIdx.x) % kWarp;
  const std::int64_t warps_per_block = blockDim.x / kWarp;
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * warps_per_block + threadIdx.x / kWarp;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * warps_per_block;
  for (std::int64_t r = first; r < rows; r += stride) {
    const T* xr = x + r * cols;
    cuda::TopList<K, N> list;
    list.clear();
    for (std::int64_t c = lane; c < cols; c += kWarp) list.insert({cuda::order_key(xr[c]), c});
    for (std::int64_t j = 0; j < k; ++j) {
      const cuda::KeyIdx<K> best = warp_best(list.head());
      if (best.idx == list.idx[0]) list.pop();
      if (lane == 0) {
        values[r * k + j] = xr[best.idx];
        idx[r * k + j] = best.idx;
      }
    }
  }
}

// CPU twin: topk_typed in src/backend/cpu/cpu_sort.cpp. One block per row (long rows). Each round:
// warp winners to shared memory, warp 0 picks the block winner, everyone reads it. Two barriers per
// round suffice: a round's warp_idx/warp_key writes come after the previous round's second barrier
// (which follows warp 0's reads), and its winner write comes after its first barrier, which every
// thread reaches only after reading the previous winner.
template <class T, int N>
__global__ void topk_block_kernel(const T* x, std::int64_t rows, std::int64_t cols, std::int64_t k, T* values,
                                  std::int64_t* idx) {
  using K = cuda::order_key_t<T>;
  __shared__ K warp_key[kTopkThreads / kWarp];
  __shared__ std::int64_t warp_idx[kTopkThreads / kWarp];
  __shared__ std::int64_t winner;
  const int lane = static_cast<int>(threadIdx.x) % kWarp, warp = static_cast<int>(threadIdx.x) / kWarp;
  const int warps = static_cast<int>(blockDim.x) / kWarp;
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * cols;
    cuda::TopList<K, N> list;
    list.clear();
    for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) list.insert({cuda::order_key(xr[c]), c});
    for (std::int64_t j = 0; j < k; ++j) {
      const cuda::KeyIdx<K> best = warp_best(list.head());
      if (lane == 0) {
        warp_key[warp] = best.key;
        warp_idx[warp] = best.idx;
      }
      __syncthreads();
      if (warp == 0) {
        cuda::KeyIdx<K> c{K{0}, -1};
        if (lane < warps) c = {warp_key[lane], warp_idx[lane]};
        c = warp_best(c);
        if (lane == 0) {
          winner = c.idx;
          values[r * k + j] = xr[c.idx];
          idx[r * k + j] = c.idx;
        }
      }
      __syncthreads();
      if (winner == list.idx[0]) list.pop();
    }
  }
}

// CPU twin: argsort_typed in src/backend/cpu/cpu_sort.cpp (the inputs of the sort). keys[e] is the
// sort key of x[e] (inverted for a descending sort), cols_of[e] its column; offsets[r] = r * cols
// for r <= rows (segment r is [offsets[r], offsets[r + 1])).
template <class T>
__global__ void argsort_keys_kernel(const T* x, std::int64_t rows, std::int64_t cols, bool descending,
                                    cuda::order_key_t<T>* keys, std::int64_t* cols_of, int* offsets) {
  const std::int64_t n = rows * cols;
  for (std::int64_t e = cuda::grid_first(); e < n; e += cuda::grid_stride()) {
    keys[e] = cuda::argsort_key(x[e], descending);
    cols_of[e] = e % cols;
  }
  for (std::int64_t r = cuda::grid_first(); r <= rows; r += cuda::grid_stride())
    offsets[r] = static_cast<int>(r * cols);
}

// CPU twin: topk_typed in src/backend/cpu/cpu_sort.cpp, for k too large for register lists: the
// first k of each row sorted descending.
template <class T>
__global__ void take_sorted_kernel(const T* x, const std::int64_t* order, std::int64_t rows, std::int64_t cols,
                                   std::int64_t k, T* values, std::int64_t* idx) {
  const std::int64_t n = rows * k;
  for (std::int64_t e = cuda::grid_first(); e < n; e += cuda::grid_stride()) {
    const std::int64_t r = e / k, j = e - r * k;
    const std::int64_t c = order[r * cols + j];
    values[e] = x[r * cols + c];
    idx[e] = c;
  }
}

std::size_t align_up(std::size_t bytes) { return (bytes + 255) / 256 * 256; }

// Stable argsort of each row into out (i64 [rows, cols]), in chunks of rows small enough for CUB's
// int item counts. Uses workspace().
template <class T>
void argsort_rows(CudaBackend& be, const T* x, std::int64_t rows, std::int64_t cols, bool descending,
                  std::int64_t* out) {
  using K = cuda::order_key_t<T>;
  if (rows == 0 || cols == 0) return;
  UPCYCLE_CHECK(cols <= INT_MAX, "argsort: rows of ", cols, " elements are too long for the CUDA sort");
  const std::int64_t chunk_rows = std::min<std::int64_t>(rows, INT_MAX / cols);
  const std::int64_t last_rows = rows % chunk_rows == 0 ? chunk_rows : rows % chunk_rows;
  auto temp_bytes_for = [&](std::int64_t r) {
    std::size_t bytes = 0;
    UPCYCLE_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairs(
        nullptr, bytes, static_cast<const K*>(nullptr), static_cast<K*>(nullptr),
        static_cast<const std::int64_t*>(nullptr), static_cast<std::int64_t*>(nullptr), static_cast<int>(r * cols),
        static_cast<int>(r), static_cast<const int*>(nullptr), static_cast<const int*>(nullptr), 0,
        static_cast<int>(sizeof(K) * 8), be.stream()));
    return bytes;
  };
  const std::size_t temp_bytes = std::max(temp_bytes_for(chunk_rows), temp_bytes_for(last_rows));
  const auto items = static_cast<std::size_t>(chunk_rows * cols);
  const std::size_t keys_bytes = align_up(items * sizeof(K)), cols_bytes = align_up(items * sizeof(std::int64_t));
  const std::size_t offsets_bytes = align_up(static_cast<std::size_t>(chunk_rows + 1) * sizeof(int));
  char* ws = static_cast<char*>(be.workspace(2 * keys_bytes + cols_bytes + offsets_bytes + temp_bytes));
  K* keys_in = reinterpret_cast<K*>(ws);
  K* keys_out = reinterpret_cast<K*>(ws + keys_bytes);
  auto* cols_in = reinterpret_cast<std::int64_t*>(ws + 2 * keys_bytes);
  int* offsets = reinterpret_cast<int*>(ws + 2 * keys_bytes + cols_bytes);
  void* temp = ws + 2 * keys_bytes + cols_bytes + offsets_bytes;
  for (std::int64_t r0 = 0; r0 < rows; r0 += chunk_rows) {
    const std::int64_t r = std::min(chunk_rows, rows - r0);
    argsort_keys_kernel<T><<<cuda::grid_blocks(r * cols), cuda::kBlockThreads, 0, be.stream()>>>(
        x + r0 * cols, r, cols, descending, keys_in, cols_in, offsets);
    UPCYCLE_CUDA_CHECK_LAUNCH();
    std::size_t bytes = temp_bytes;
    UPCYCLE_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairs(
        temp, bytes, keys_in, keys_out, cols_in, out + r0 * cols, static_cast<int>(r * cols), static_cast<int>(r),
        static_cast<const int*>(offsets), static_cast<const int*>(offsets + 1), 0, static_cast<int>(sizeof(K) * 8),
        be.stream()));
  }
}

template <class T, int N>
void launch_topk_lists(cudaStream_t stream, const T* x, std::int64_t rows, std::int64_t cols, std::int64_t k,
                       T* values, std::int64_t* idx) {
  if (cols <= kWarpRowMaxCols) {
    const std::int64_t blocks = cuda::ceil_div(rows, kTopkThreads / kWarp);
    topk_warp_kernel<T, N><<<static_cast<unsigned>(std::min(blocks, cuda::kMaxGridBlocks)), kTopkThreads, 0, stream>>>(
        x, rows, cols, k, values, idx);
  } else {
    topk_block_kernel<T, N><<<static_cast<unsigned>(std::min(rows, cuda::kMaxGridBlocks)), kTopkThreads, 0, stream>>>(
        x, rows, cols, k, values, idx);
  }
  UPCYCLE_CUDA_CHECK_LAUNCH();
}

}  // namespace

// CPU twin: CpuBackend::topk in src/backend/cpu/cpu_sort.cpp.
void CudaBackend::topk(const Tensor& x, std::int64_t k, Tensor& values, Tensor& idx) {
  const SortRows d = check_topk_args(x, k, values, idx);
  if (k == 0) return;
  dispatch_floating(x.dtype(), "topk", [&](auto t) {
    using T = decltype(t);
    const T* px = cuda::device_ptr<T>(x, "topk input");
    T* pv = cuda::device_ptr<T>(values, "topk values");
    std::int64_t* pi = cuda::device_ptr<std::int64_t>(idx, "topk indices");
    if (d.rows == 0) return;
    switch (cuda::topk_list_size(k)) {
      case 2: launch_topk_lists<T, 2>(stream_, px, d.rows, d.cols, k, pv, pi); break;
      case 4: launch_topk_lists<T, 4>(stream_, px, d.rows, d.cols, k, pv, pi); break;
      case 8: launch_topk_lists<T, 8>(stream_, px, d.rows, d.cols, k, pv, pi); break;
      case 16: launch_topk_lists<T, 16>(stream_, px, d.rows, d.cols, k, pv, pi); break;
      default: {
        Tensor order = Tensor::empty({d.rows, d.cols}, DType::i64, Device::cuda);
        std::int64_t* po = cuda::device_ptr<std::int64_t>(order, "topk order");
        argsort_rows<T>(*this, px, d.rows, d.cols, /*descending=*/true, po);
        take_sorted_kernel<T><<<cuda::grid_blocks(d.rows * k), cuda::kBlockThreads, 0, stream_>>>(px, po, d.rows, d.cols,
                                                                                                  k, pv, pi);
        UPCYCLE_CUDA_CHECK_LAUNCH();
      }
    }
  });
}

// CPU twin: CpuBackend::argsort in src/backend/cpu/cpu_sort.cpp.
void CudaBackend::argsort(const Tensor& x, bool descending, Tensor& idx) {
  const SortRows d = check_argsort_args(x, idx);
  dispatch_floating(x.dtype(), "argsort", [&](auto t) {
    using T = decltype(t);
    const T* px = cuda::device_ptr<T>(x, "argsort input");
    std::int64_t* pi = cuda::device_ptr<std::int64_t>(idx, "argsort indices");
    argsort_rows<T>(*this, px, d.rows, d.cols, descending, pi);
  });
}

}  // namespace upcycle
