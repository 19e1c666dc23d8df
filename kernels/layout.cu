// CudaBackend layout kernels: permute and copy_axis. CPU twins: src/backend/cpu/cpu_layout.cpp.
//
// Pure data movement, so (like the CPU) any dtype moves as unsigned words of its size, or of a
// wider size where the layout and the addresses allow (16-byte words when they can); only the
// accumulating copy does arithmetic and takes floating dtypes. The index math lives in
// layout_math.hpp, where the CPU tests check it.
#include <climits>
#include <cstdint>

#include "backend/checks_layout.hpp"
#include "cuda_common.cuh"
#include "layout_math.hpp"

namespace upcycle {

namespace {

static_assert(cuda::kMaxLayoutDims == Shape::kMaxDims, "layout_math.hpp plans hold every dim of a Shape");

constexpr int kTransposeRows = 8;  // thread rows of a transpose block: 32 x 8 threads per 32 x 32 tile

// The device address of a tensor that the layout kernels move as raw words (any dtype).
void* cuda_raw(const Tensor& t, const char* what) {
  UPCYCLE_CHECK(t.defined(), what, ": undefined tensor");
  UPCYCLE_CHECK(t.device() == Device::cuda, what, ": expected a cuda tensor, got ", describe(t));
  return t.raw();
}

unsigned task_blocks(std::int64_t tasks) {
  constexpr std::int64_t kMax = INT_MAX;
  return static_cast<unsigned>(tasks < 1 ? 1 : (tasks > kMax ? kMax : tasks));
}

// --- permute -----------------------------------------------------------------------------------

// Output order, one word per thread: writes are coalesced, and so are the reads, because this
// kernel only runs when the last output dim is contiguous in the input too. CPU twin:
// permute_rows in src/backend/cpu/cpu_layout.cpp.
template <class W, class I>
__global__ void permute_gather_kernel(const W* __restrict__ in, W* __restrict__ out, std::int64_t n,
                                      cuda::PermutePlan p) {
  for (std::int64_t k = cuda::grid_first(); k < n; k += cuda::grid_stride()) {
    const I idx = static_cast<I>(k);
    out[idx] = in[cuda::permute_source_index<I>(p, idx)];
  }
}

// A batch of 2-D transposes between dim a (contiguous in the input) and dim b (contiguous in the
// output) through a 32 x 32 shared-memory tile, so that both the reads (lanes along a) and the
// writes (lanes along b) are coalesced; the +1 column keeps the column reads free of bank
// conflicts. A tile element is read back only under the same bounds test that wrote it. CPU twin:
// permute_tiled in src/backend/cpu/cpu_layout.cpp.
template <class W>
__global__ void __launch_bounds__(cuda::kTransposeTile* kTransposeRows)
    permute_transpose_kernel(const W* __restrict__ in, W* __restrict__ out, cuda::TransposePlan t) {
  constexpr int kTile = cuda::kTransposeTile;
  __shared__ W tile[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  for (std::int64_t task = blockIdx.x; task < t.tasks; task += gridDim.x) {
    const cuda::TransposeTask tt = cuda::transpose_task(t, task);
    std::int64_t in_off = 0, out_off = 0;
    cuda::transpose_batch_offsets<std::int64_t>(t, tt.batch, in_off, out_off);
    const std::int64_t a0 = tt.ta * kTile, b0 = tt.tb * kTile;
    // tile[r][c] holds element (a0 + c, b0 + r).
    const std::int64_t ia = a0 + tx;
    for (int r = ty; r < kTile; r += kTransposeRows) {
      const std::int64_t jb = b0 + r;
      if (ia < t.na && jb < t.nb) tile[r][tx] = in[cuda::transpose_in_index<std::int64_t>(t, in_off, ia, jb)];
    }
    __syncthreads();
    const std::int64_t jb = b0 + tx;
    for (int r = ty; r < kTile; r += kTransposeRows) {
      const std::int64_t i = a0 + r;
      if (i < t.na && jb < t.nb) out[cuda::transpose_out_index<std::int64_t>(t, out_off, i, jb)] = tile[tx][r];
    }
    __syncthreads();  // the next task overwrites the tile
  }
}

template <class W>
void launch_permute_gather(const void* in, void* out, std::int64_t n, const cuda::PermutePlan& p,
                           cudaStream_t stream) {
  const W* src = static_cast<const W*>(in);
  W* dst = static_cast<W*>(out);
  // 32-bit index math (cheaper divisions) whenever every index fits.
  if (n <= INT_MAX) permute_gather_kernel<W, std::uint32_t><<<cuda::grid_blocks(n), cuda::kBlockThreads, 0, stream>>>(src, dst, n, p);
  else permute_gather_kernel<W, std::int64_t><<<cuda::grid_blocks(n), cuda::kBlockThreads, 0, stream>>>(src, dst, n, p);
  UPCYCLE_CUDA_CHECK_LAUNCH();
}

// --- copy_axis ---------------------------------------------------------------------------------

// dst[o, dst_off + j, :] = src[o, src_off + j, :] as `outer` runs of words, one word per thread.
// CPU twin: CpuBackend::copy_axis (plain copy) in src/backend/cpu/cpu_layout.cpp.
template <class W, class I>
__global__ void copy_slab_kernel(const W* __restrict__ src, W* __restrict__ dst, cuda::SlabCopy s, std::int64_t n) {
  for (std::int64_t k = cuda::grid_first(); k < n; k += cuda::grid_stride()) {
    I si, di;
    cuda::slab_offsets<I>(s, static_cast<I>(k), si, di);
    dst[di] = src[si];
  }
}

// dst[o, dst_off + j, :] += src[o, src_off + j, :]; each destination element has one thread
// (src and dst do not overlap), so no atomics. CPU twin: CpuBackend::copy_axis (accumulate) in
// src/backend/cpu/cpu_layout.cpp.
template <class T, class I>
__global__ void accumulate_slab_kernel(const T* __restrict__ src, T* __restrict__ dst, cuda::SlabCopy s,
                                       std::int64_t n) {
  for (std::int64_t k = cuda::grid_first(); k < n; k += cuda::grid_stride()) {
    I si, di;
    cuda::slab_offsets<I>(s, static_cast<I>(k), si, di);
    dst[di] += src[si];
  }
}

// `words`: the larger tensor's size in units of the copy, bounding every index.
template <class W>
void launch_copy_slab(const void* src, void* dst, const cuda::SlabCopy& s, std::int64_t words, cudaStream_t stream) {
  const std::int64_t n = s.outer * s.run;
  const W* ps = static_cast<const W*>(src);
  W* pd = static_cast<W*>(dst);
  if (words <= INT_MAX) copy_slab_kernel<W, std::uint32_t><<<cuda::grid_blocks(n), cuda::kBlockThreads, 0, stream>>>(ps, pd, s, n);
  else copy_slab_kernel<W, std::int64_t><<<cuda::grid_blocks(n), cuda::kBlockThreads, 0, stream>>>(ps, pd, s, n);
  UPCYCLE_CUDA_CHECK_LAUNCH();
}

}  // namespace

// CPU twin: CpuBackend::permute in src/backend/cpu/cpu_layout.cpp.
void CudaBackend::permute(const Tensor& x, Tensor& out, const int* perm) {
  check_permute_args(x, out, perm);
  const std::int64_t numel = x.numel();
  if (numel == 0) return;
  const void* in = cuda_raw(x, "permute input");
  void* o = cuda_raw(out, "permute output");
  const cuda::PermutePlan plan = cuda::plan_permute(x.ndim(), x.shape().begin(), perm);
  if (plan.ndim <= 1) {  // nothing moves
    UPCYCLE_CUDA_CHECK(cudaMemcpyAsync(o, in, x.nbytes(), cudaMemcpyDeviceToDevice, stream()));
    return;
  }
  dispatch_bytes(x.dtype(), [&](auto w) {
    using W = decltype(w);
    constexpr int kElem = static_cast<int>(sizeof(W));
    if (plan.in_last_pos != plan.ndim - 1) {
      const cuda::TransposePlan t = cuda::plan_transpose(plan);
      const dim3 block(cuda::kTransposeTile, kTransposeRows);
      permute_transpose_kernel<W><<<task_blocks(t.tasks), block, 0, stream()>>>(static_cast<const W*>(in),
                                                                               static_cast<W*>(o), t);
      UPCYCLE_CUDA_CHECK_LAUNCH();
      return;
    }
    const int word = cuda::permute_word_bytes(plan, kElem, reinterpret_cast<std::uintptr_t>(in),
                                              reinterpret_cast<std::uintptr_t>(o));
    const cuda::PermutePlan p = cuda::permute_plan_in_words(plan, kElem, word);
    const std::int64_t n = numel / (word / kElem);
    switch (word) {
      case 16: launch_permute_gather<uint4>(in, o, n, p, stream()); break;
      case 8: launch_permute_gather<std::uint64_t>(in, o, n, p, stream()); break;
      case 4: launch_permute_gather<std::uint32_t>(in, o, n, p, stream()); break;
      default: launch_permute_gather<std::uint16_t>(in, o, n, p, stream()); break;
    }
  });
}

// CPU twin: CpuBackend::copy_axis in src/backend/cpu/cpu_layout.cpp.
void CudaBackend::copy_axis(const Tensor& src, std::int64_t src_axis, std::int64_t src_off, Tensor& dst,
                            std::int64_t dst_axis, std::int64_t dst_off, std::int64_t outer, std::int64_t len,
                            std::int64_t inner, bool accumulate) {
  check_copy_axis_args(src, src_axis, src_off, dst, dst_axis, dst_off, outer, len, inner);
  if (len * inner == 0 || outer == 0) return;
  const cuda::SlabCopy s = cuda::plan_slab_copy(src_axis, src_off, dst_axis, dst_off, outer, len, inner);
  const std::int64_t n = s.outer * s.run;
  const std::int64_t elems = src.numel() > dst.numel() ? src.numel() : dst.numel();
  if (accumulate) {
    dispatch_floating(src.dtype(), "copy_axis (accumulate)", [&](auto tag) {
      using T = decltype(tag);
      const T* ps = cuda::device_ptr<T>(src, "copy_axis source");
      T* pd = cuda::device_ptr<T>(dst, "copy_axis destination");
      if (elems <= INT_MAX) {
        accumulate_slab_kernel<T, std::uint32_t>
            <<<cuda::grid_blocks(n), cuda::kBlockThreads, 0, stream()>>>(ps, pd, s, n);
      } else {
        accumulate_slab_kernel<T, std::int64_t><<<cuda::grid_blocks(n), cuda::kBlockThreads, 0, stream()>>>(ps, pd, s, n);
      }
      UPCYCLE_CUDA_CHECK_LAUNCH();
    });
    return;
  }
  int elem = 0;
  dispatch_bytes(src.dtype(), [&](auto w) { elem = static_cast<int>(sizeof(w)); });
  const char* ps = static_cast<const char*>(cuda_raw(src, "copy_axis source"));
  char* pd = static_cast<char*>(cuda_raw(dst, "copy_axis destination"));
  // Both sides one contiguous run (a slab of the first axis, or the whole axis): a plain copy.
  if (outer == 1 || (s.src_step == s.run && s.dst_step == s.run)) {
    UPCYCLE_CUDA_CHECK(cudaMemcpyAsync(pd + s.dst_base * elem, ps + s.src_base * elem,
                                       static_cast<std::size_t>(n) * static_cast<std::size_t>(elem),
                                       cudaMemcpyDeviceToDevice, stream()));
    return;
  }
  const int word = cuda::slab_word_bytes(s, elem, reinterpret_cast<std::uintptr_t>(ps),
                                         reinterpret_cast<std::uintptr_t>(pd));
  const cuda::SlabCopy sw = cuda::slab_in_words(s, elem, word);
  const std::int64_t words = elems / (word / elem);
  switch (word) {
    case 16: launch_copy_slab<uint4>(ps, pd, sw, words, stream()); break;
    case 8: launch_copy_slab<std::uint64_t>(ps, pd, sw, words, stream()); break;
    case 4: launch_copy_slab<std::uint32_t>(ps, pd, sw, words, stream()); break;
    default: launch_copy_slab<std::uint16_t>(ps, pd, sw, words, stream()); break;
  }
}

}  // namespace upcycle
