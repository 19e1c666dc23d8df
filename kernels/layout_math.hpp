#pragma once
// Index math of the layout kernels (kernels/layout.cu: permute, copy_axis) and the reduction
// kernels (kernels/reduce.cu: reduce, expand_axis, sum_squares) as plain functions: the kernels
// call them on the device, and tests/unit/test_cuda_layout_math.cpp checks them on the CPU
// against naive references, without a GPU. No CUDA includes: g++ compiles this header as is.
//
// Plans are small structs of fixed-size arrays, built on the host and passed to the kernels by
// value (kernel parameter space), so that no index table has to be copied to the device.
// Index functions are templates on the index type I: the kernels use 32-bit unsigned math when
// every index fits (integer division is several times cheaper than in 64 bits) and int64 above.
#include <cstdint>

#include "upcycle/core/host_device.hpp"

namespace upcycle::cuda {

// The rank limit of tensors (Shape::kMaxDims; layout.cu asserts that they agree).
constexpr int kMaxLayoutDims = 8;

// ---------------------------------------------------------------------------------------------
// permute

// A permutation reduced to its essential form: size-1 input dims dropped, and input dims that
// stay adjacent and in order in the output merged into one. [B, T, H, D] -> [B, H, T, D] stays
// 4-D with a contiguous innermost D; the identity becomes one dim (a plain copy).
struct PermutePlan {
  int ndim = 0;                               // coalesced rank (0 or 1: nothing moves)
  std::int64_t size[kMaxLayoutDims] = {};     // coalesced output dims, in output order
  std::int64_t in_stride[kMaxLayoutDims] = {};   // input stride of each output dim
  std::int64_t out_stride[kMaxLayoutDims] = {};  // output (row-major) stride of each output dim
  int in_last_pos = 0;  // output position of the dim that is contiguous in the input
};

// out.shape[i] = in_shape[perm[i]], rank ndim <= kMaxLayoutDims, perm already checked.
inline PermutePlan plan_permute(int ndim, const std::int64_t* in_shape, const int* perm) {
  // Input dims other than size 1, renumbered densely: two dims that were separated only by size-1
  // dims count as adjacent.
  int dense_of[kMaxLayoutDims] = {};
  std::int64_t dense_size[kMaxLayoutDims] = {};
  int kept = 0;
  for (int d = 0; d < ndim; ++d) {
    dense_of[d] = kept;
    if (in_shape[d] != 1) dense_size[kept++] = in_shape[d];
  }
  int order[kMaxLayoutDims] = {};  // dense input dim of each kept output dim
  int m = 0;
  for (int i = 0; i < ndim; ++i)
    if (in_shape[perm[i]] != 1) order[m++] = dense_of[perm[i]];

  // Group output dims whose input dims follow each other (d, d + 1, ...).
  int group_first[kMaxLayoutDims] = {};  // first dense input dim of each group
  PermutePlan p;
  for (int i = 0; i < m; ++i) {
    if (i > 0 && order[i] == order[i - 1] + 1) {
      p.size[p.ndim - 1] *= dense_size[order[i]];
    } else {
      group_first[p.ndim] = order[i];
      p.size[p.ndim++] = dense_size[order[i]];
    }
  }
  // A group's input stride is the product of the groups that lie after it in the input; the group
  // that lies last in the input is the contiguous one.
  for (int i = 0; i < p.ndim; ++i) {
    std::int64_t stride = 1;
    for (int j = 0; j < p.ndim; ++j)
      if (group_first[j] > group_first[i]) stride *= p.size[j];
    p.in_stride[i] = stride;
    if (group_first[i] > group_first[p.in_last_pos]) p.in_last_pos = i;
  }
  std::int64_t stride = 1;
  for (int i = p.ndim - 1; i >= 0; --i) {
    p.out_stride[i] = stride;
    stride *= p.size[i];
  }
  return p;
}

// Input linear index of the element at output linear index `out_index` (out_index < numel).
template <class I>
UPCYCLE_HD inline I permute_source_index(const PermutePlan& p, I out_index) {
  I in = 0;
  for (int d = p.ndim - 1; d > 0; --d) {
    const I size = static_cast<I>(p.size[d]);
    const I q = out_index / size;
    in += (out_index - q * size) * static_cast<I>(p.in_stride[d]);
    out_index = q;
  }
  if (p.ndim > 0) in += out_index * static_cast<I>(p.in_stride[0]);
  return in;
}

// When the last output dim is also the input's contiguous one (in_last_pos == ndim - 1), every
// output row of size[ndim - 1] elements is one contiguous input run, so the permute can move wider
// words: the widest of 16, 8, 4 bytes (above elem_bytes) that divides the row's bytes and both
// base addresses; elem_bytes when none does.
inline int permute_word_bytes(const PermutePlan& p, int elem_bytes, std::uintptr_t src_addr, std::uintptr_t dst_addr) {
  if (p.ndim < 1 || p.in_last_pos != p.ndim - 1) return elem_bytes;
  const std::uint64_t all = static_cast<std::uint64_t>(p.size[p.ndim - 1]) * static_cast<std::uint64_t>(elem_bytes) |
                            static_cast<std::uint64_t>(src_addr) | static_cast<std::uint64_t>(dst_addr);
  for (int w = 16; w > elem_bytes; w /= 2)
    if (all % static_cast<std::uint64_t>(w) == 0) return w;
  return elem_bytes;
}

// The plan in words of word_bytes (from permute_word_bytes): the last dim shrinks; every other
// input stride is a multiple of it (the last output dim is the last input dim), so all divide.
inline PermutePlan permute_plan_in_words(const PermutePlan& p, int elem_bytes, int word_bytes) {
  const std::int64_t per = word_bytes / elem_bytes;
  if (per == 1 || p.ndim < 1) return p;
  PermutePlan w = p;
  const int last = p.ndim - 1;
  w.size[last] = p.size[last] / per;
  for (int d = 0; d < last; ++d) w.in_stride[d] = p.in_stride[d] / per;
  std::int64_t stride = 1;
  for (int d = last; d >= 0; --d) {
    w.out_stride[d] = stride;
    stride *= w.size[d];
  }
  return w;
}

// When the last output dim is not the input's contiguous one, permute runs as a batch of 2-D
// transposes through square tiles: dim a (contiguous in the input) and dim b (the last output
// dim, contiguous in the output); every other dim is a batch dim.
constexpr int kTransposeTile = 32;

struct TransposePlan {
  int nbatch = 0;
  std::int64_t batch_size[kMaxLayoutDims] = {};  // batch dims, in output order
  std::int64_t batch_in_stride[kMaxLayoutDims] = {};
  std::int64_t batch_out_stride[kMaxLayoutDims] = {};
  std::int64_t na = 0, nb = 0;            // sizes of dims a and b
  std::int64_t out_stride_a = 0;          // output stride of a (its input stride is 1)
  std::int64_t in_stride_b = 0;           // input stride of b (its output stride is 1)
  std::int64_t tiles_a = 0, tiles_b = 0;  // tiles along a and b
  std::int64_t tasks = 0;                 // batch * tiles_a * tiles_b
};

// For a plan with ndim >= 2 and in_last_pos != ndim - 1.
inline TransposePlan plan_transpose(const PermutePlan& p) {
  TransposePlan t;
  const int a = p.in_last_pos, b = p.ndim - 1;
  std::int64_t batch = 1;
  for (int i = 0; i < p.ndim; ++i) {
    if (i == a || i == b) continue;
    t.batch_size[t.nbatch] = p.size[i];
    t.batch_in_stride[t.nbatch] = p.in_stride[i];
    t.batch_out_stride[t.nbatch] = p.out_stride[i];
    ++t.nbatch;
    batch *= p.size[i];
  }
  t.na = p.size[a];
  t.nb = p.size[b];
  t.out_stride_a = p.out_stride[a];
  t.in_stride_b = p.in_stride[b];
  t.tiles_a = (t.na + kTransposeTile - 1) / kTransposeTile;
  t.tiles_b = (t.nb + kTransposeTile - 1) / kTransposeTile;
  t.tasks = batch * t.tiles_a * t.tiles_b;
  return t;
}

// One tile of the transpose: batch index and tile coordinates along a and b. Consecutive tasks
// walk along b (the output's contiguous dim), so neighbouring blocks write neighbouring memory.
struct TransposeTask {
  std::int64_t batch, ta, tb;
};
UPCYCLE_HD inline TransposeTask transpose_task(const TransposePlan& t, std::int64_t task) {
  TransposeTask r;
  r.tb = task % t.tiles_b;
  const std::int64_t rest = task / t.tiles_b;
  r.ta = rest % t.tiles_a;
  r.batch = rest / t.tiles_a;
  return r;
}

// Input and output offsets of the first element of batch index `batch`.
template <class I>
UPCYCLE_HD inline void transpose_batch_offsets(const TransposePlan& t, I batch, I& in_off, I& out_off) {
  in_off = 0;
  out_off = 0;
  for (int d = t.nbatch - 1; d >= 0; --d) {
    const I size = static_cast<I>(t.batch_size[d]);
    const I q = batch / size;
    const I i = batch - q * size;
    in_off += i * static_cast<I>(t.batch_in_stride[d]);
    out_off += i * static_cast<I>(t.batch_out_stride[d]);
    batch = q;
  }
}

// Element (i, j) of a batch (i along a, j along b) sits at in_off + i + j * in_stride_b in the
// input and at out_off + i * out_stride_a + j in the output.
template <class I>
UPCYCLE_HD inline I transpose_in_index(const TransposePlan& t, I in_off, I i, I j) {
  return in_off + i + j * static_cast<I>(t.in_stride_b);
}
template <class I>
UPCYCLE_HD inline I transpose_out_index(const TransposePlan& t, I out_off, I i, I j) {
  return out_off + i * static_cast<I>(t.out_stride_a) + j;
}

// ---------------------------------------------------------------------------------------------
// copy_axis: for o < outer, dst[o, dst_off + j, :] (+)= src[o, src_off + j, :] for j < len. For
// each o the slab is one contiguous run on both sides, so the copy is `outer` runs of `run`
// units; a unit is an element, or (plain copies) a wider word when every size, offset and
// address allows it.
struct SlabCopy {
  std::int64_t outer = 0;
  std::int64_t run = 0;                     // units per outer index: len * inner
  std::int64_t src_step = 0, src_base = 0;  // src run o starts at o * src_step + src_base
  std::int64_t dst_step = 0, dst_base = 0;
};

inline SlabCopy plan_slab_copy(std::int64_t src_axis, std::int64_t src_off, std::int64_t dst_axis,
                               std::int64_t dst_off, std::int64_t outer, std::int64_t len, std::int64_t inner) {
  SlabCopy s;
  s.outer = outer;
  s.run = len * inner;
  s.src_step = src_axis * inner;
  s.src_base = src_off * inner;
  s.dst_step = dst_axis * inner;
  s.dst_base = dst_off * inner;
  return s;
}

// Source and destination index of unit k (k < outer * run).
template <class I>
UPCYCLE_HD inline void slab_offsets(const SlabCopy& s, I k, I& src, I& dst) {
  const I run = static_cast<I>(s.run);
  const I o = k / run;
  const I j = k - o * run;
  src = o * static_cast<I>(s.src_step) + static_cast<I>(s.src_base) + j;
  dst = o * static_cast<I>(s.dst_step) + static_cast<I>(s.dst_base) + j;
}

// The widest word (16, 8, 4 or 2 bytes, at least elem_bytes when that is one of them) that
// divides every run, step and offset of `s` (in elements of elem_bytes) and both base addresses.
inline int slab_word_bytes(const SlabCopy& s, int elem_bytes, std::uintptr_t src_addr, std::uintptr_t dst_addr) {
  const std::uint64_t e = static_cast<std::uint64_t>(elem_bytes);
  const std::uint64_t all = static_cast<std::uint64_t>(s.run) * e | static_cast<std::uint64_t>(s.src_step) * e |
                            static_cast<std::uint64_t>(s.src_base) * e | static_cast<std::uint64_t>(s.dst_step) * e |
                            static_cast<std::uint64_t>(s.dst_base) * e | static_cast<std::uint64_t>(src_addr) |
                            static_cast<std::uint64_t>(dst_addr);
  for (int w = 16; w > elem_bytes; w /= 2)
    if (all % static_cast<std::uint64_t>(w) == 0) return w;
  return elem_bytes;
}

// The same copy in units of word_bytes (a multiple of elem_bytes that slab_word_bytes allowed).
inline SlabCopy slab_in_words(const SlabCopy& s, int elem_bytes, int word_bytes) {
  const std::int64_t per = word_bytes / elem_bytes;
  SlabCopy w = s;
  w.run = s.run / per;
  w.src_step = s.src_step / per;
  w.src_base = s.src_base / per;
  w.dst_step = s.dst_step / per;
  w.dst_base = s.dst_base / per;
  return w;
}

// ---------------------------------------------------------------------------------------------
// reduce: x viewed as [outer, axis, inner], out [outer, inner].
//
// inner == 1 ("rows"): each row of `axis` contiguous elements goes to one warp (short rows) or
// one block (long rows). inner > 1 ("columns"): a block of tx x ty threads takes tx adjacent
// columns of one outer index; tx threads read adjacent elements of a row (coalesced) and the ty
// thread rows split the axis, combined through shared memory. Either way, when there are too
// few rows or column tiles to fill the GPU and the axis is long, the axis is cut into `chunks`
// contiguous ranges reduced by different blocks into a partial per (output, chunk); a second
// pass reduces each output's partials in a fixed tree (deterministic: no atomics).
constexpr int kReduceThreads = 256;                 // threads per block of every reduce kernel
constexpr int kReduceWarpsPerBlock = kReduceThreads / 32;
constexpr std::int64_t kReduceTargetBlocks = 1024;  // about 8 blocks on each of the H200's 132 SMs
constexpr std::int64_t kReduceMaxChunks = 1024;
constexpr std::int64_t kReduceWarpRowMax = 512;     // rows up to this length: one warp per row
constexpr std::int64_t kReduceMinRowChunk = 4096;   // elements per block of a split row
constexpr std::int64_t kReduceMinColRowsPerThread = 16;  // axis rows per thread of a split column

// Start of chunk c of `chunks` contiguous ranges covering [0, len).
UPCYCLE_HD inline std::int64_t chunk_begin(std::int64_t c, std::int64_t len, std::int64_t chunks) {
  return c * len / chunks;
}

inline std::int64_t reduce_chunks(std::int64_t base_tasks, std::int64_t max_useful) {
  if (base_tasks >= kReduceTargetBlocks || max_useful <= 1) return 1;
  std::int64_t c = (kReduceTargetBlocks + base_tasks - 1) / base_tasks;
  if (c > max_useful) c = max_useful;
  if (c > kReduceMaxChunks) c = kReduceMaxChunks;
  return c < 1 ? 1 : c;
}

struct ReduceRowsPlan {
  bool warp_per_row = true;
  std::int64_t chunks = 1;
};

// `rows` rows of `len` elements; allow_split = false for the second pass (its rows are short).
inline ReduceRowsPlan plan_reduce_rows(std::int64_t rows, std::int64_t len, bool allow_split) {
  ReduceRowsPlan p;
  p.warp_per_row = len <= kReduceWarpRowMax;
  if (!p.warp_per_row && allow_split) p.chunks = reduce_chunks(rows, len / kReduceMinRowChunk);
  return p;
}

struct ReduceColsPlan {
  int tx = 32, ty = 8;  // powers of two; tx * ty <= kReduceThreads, a multiple of 32
  std::int64_t col_tiles = 1;
  std::int64_t chunks = 1;
};

inline std::int64_t next_pow2(std::int64_t v) {
  std::int64_t p = 1;
  while (p < v) p *= 2;
  return p;
}

// inner > 1.
inline ReduceColsPlan plan_reduce_cols(std::int64_t outer, std::int64_t axis, std::int64_t inner) {
  ReduceColsPlan p;
  const std::int64_t width = next_pow2(inner);
  p.tx = static_cast<int>(width < 32 ? width : 32);
  p.ty = kReduceThreads / p.tx;
  // A short axis leaves thread rows idle: give their threads more columns instead, or (when the
  // columns are all covered) use a smaller block, keeping at least two warps.
  while (p.ty > 1 && p.ty / 2 >= axis) {
    if (p.tx < width) p.tx *= 2;
    else if (p.tx * p.ty <= 64) break;
    p.ty /= 2;
  }
  p.col_tiles = (inner + p.tx - 1) / p.tx;
  p.chunks = reduce_chunks(outer * p.col_tiles, axis / (static_cast<std::int64_t>(p.ty) * kReduceMinColRowsPerThread));
  return p;
}

// Block task of the column kernel: outer index o, axis chunk c, column tile. Consecutive tasks
// take adjacent column tiles of the same rows.
struct ReduceColsTask {
  std::int64_t o, c, tile;
};
UPCYCLE_HD inline ReduceColsTask reduce_cols_task(std::int64_t task, std::int64_t col_tiles, std::int64_t chunks) {
  ReduceColsTask t;
  t.tile = task % col_tiles;
  const std::int64_t rest = task / col_tiles;
  t.c = rest % chunks;
  t.o = rest / chunks;
  return t;
}

// Linear index of x[o, a, i].
UPCYCLE_HD inline std::int64_t reduce_x_index(std::int64_t o, std::int64_t a, std::int64_t i, std::int64_t axis,
                                              std::int64_t inner) {
  return (o * axis + a) * inner + i;
}

// Partial of output (o, i) (linear index r = o * inner + i) from chunk c: [outputs, chunks], so
// that the second pass reads each output's partials contiguously.
UPCYCLE_HD inline std::int64_t reduce_partial_index(std::int64_t r, std::int64_t c, std::int64_t chunks) {
  return r * chunks + c;
}

// expand_axis: out[o, j, i] = alpha x[o, i]; the source of output linear index k.
template <class I>
UPCYCLE_HD inline I expand_source_index(I k, I axis_inner, I inner) {
  const I o = k / axis_inner;
  const I i = k - (k / inner) * inner;
  return o * inner + i;
}

// ---------------------------------------------------------------------------------------------
// sum_squares over many tensors: every tensor is cut into fixed blocks of kSumSquaresBlock
// elements, one thread block each; block k of the whole list writes partial k, and one final
// block sums the partials in a fixed tree. Tensors go to the kernel in batches of at most
// kSumSquaresMaxTensors whose pointers and sizes travel by value in the kernel parameters
// (about 1 KB of the 4 KB parameter space).
constexpr int kSumSquaresMaxTensors = 40;
constexpr std::int64_t kSumSquaresBlock = 16384;
constexpr int kSumSquaresThreads = 256;
constexpr int kSumSquaresFinalThreads = 1024;

struct SumSquaresBatch {
  const void* ptr[kSumSquaresMaxTensors];
  std::int64_t numel[kSumSquaresMaxTensors];
  std::int64_t first_block[kSumSquaresMaxTensors + 1];  // first_block[count]: blocks of the batch
  unsigned char is_f64[kSumSquaresMaxTensors];
  int count;
  std::int64_t partial_base;  // partial index of the batch's first block
};

inline void sum_squares_batch_init(SumSquaresBatch& b, std::int64_t partial_base) {
  b.count = 0;
  b.first_block[0] = 0;
  b.partial_base = partial_base;
  for (int i = 0; i < kSumSquaresMaxTensors; ++i) {
    b.ptr[i] = nullptr;
    b.numel[i] = 0;
    b.first_block[i + 1] = 0;
    b.is_f64[i] = 0;
  }
}

// Appends a non-empty tensor; returns its number of blocks. The batch must not be full.
inline std::int64_t sum_squares_batch_add(SumSquaresBatch& b, const void* ptr, std::int64_t numel, bool f64) {
  const std::int64_t blocks = (numel + kSumSquaresBlock - 1) / kSumSquaresBlock;
  b.ptr[b.count] = ptr;
  b.numel[b.count] = numel;
  b.is_f64[b.count] = f64 ? 1 : 0;
  b.first_block[b.count + 1] = b.first_block[b.count] + blocks;
  ++b.count;
  return blocks;
}

// The tensor of block `block` (< first_block[count]) of the batch.
UPCYCLE_HD inline int sum_squares_tensor_of(const SumSquaresBatch& b, std::int64_t block) {
  int t = 0;
  while (t + 1 < b.count && b.first_block[t + 1] <= block) ++t;
  return t;
}

}  // namespace upcycle::cuda
