// Layout kernels: pure data movement, so they work on any dtype by moving elements as unsigned
// words of the dtype's size (accumulating copies need arithmetic and take floating dtypes only).
#include <algorithm>
#include <cstring>

#include "backend/checks_layout.hpp"
#include "cpu_backend.hpp"
#include "cpu_parallel.hpp"

namespace upcycle {

namespace {

// dispatch_bytes (element widths) is shared with the CUDA backend: backend/checks_layout.hpp.

// A permutation reduced to its essential form: size-1 dims dropped and input dims that stay
// adjacent and in order in the output merged. [B, T, H, D] -> [B, H, T, D] becomes the 4-D
// (0, 2, 1, 3) with a contiguous inner block D; [B, M, N] -> [B, N, M] stays a batched transpose.
// ndim <= 1 means the permutation moves nothing. (Plain arrays: at most kMaxDims entries.)
struct CoalescedPerm {
  int ndim = 0;
  std::int64_t out_size[Shape::kMaxDims] = {};    // output dims, in output order
  std::int64_t in_stride[Shape::kMaxDims] = {};   // input stride of each output dim
  std::int64_t out_stride[Shape::kMaxDims] = {};
  int in_last_pos = 0;  // output position of the input's stride-1 dim
};

CoalescedPerm coalesce(const Shape& in, const int* perm) {
  const int n = in.ndim();
  // The non-trivial input dims, renumbered densely so that adjacency survives dropping size-1 dims.
  int dense[Shape::kMaxDims] = {};
  std::int64_t dense_size[Shape::kMaxDims] = {};
  int m = 0;
  for (int d = 0; d < n; ++d) {
    dense[d] = m;
    if (in[d] != 1) dense_size[m++] = in[d];
  }
  int p[Shape::kMaxDims] = {};  // their output order
  m = 0;
  for (int i = 0; i < n; ++i)
    if (in[perm[i]] != 1) p[m++] = dense[perm[i]];

  // Runs of consecutive input dims along the output order merge into one dim.
  int first[Shape::kMaxDims] = {};  // first input dim of each run
  std::int64_t size[Shape::kMaxDims] = {};
  int g = 0;
  for (int i = 0; i < m; ++i) {
    if (i > 0 && p[i] == p[i - 1] + 1) {
      size[g - 1] *= dense_size[p[i]];
    } else {
      first[g] = p[i];
      size[g++] = dense_size[p[i]];
    }
  }

  // The input stride of a run: product of the sizes of the runs that start later in the input.
  CoalescedPerm c;
  c.ndim = g;
  for (int i = 0; i < g; ++i) {
    std::int64_t stride = 1;
    for (int j = 0; j < g; ++j)
      if (first[j] > first[i]) stride *= size[j];
    c.out_size[i] = size[i];
    c.in_stride[i] = stride;
    if (stride == 1) c.in_last_pos = i;
  }
  std::int64_t stride = 1;
  for (int i = g - 1; i >= 0; --i) {
    c.out_stride[i] = stride;
    stride *= c.out_size[i];
  }
  return c;
}

// Input and output offsets of flat index `flat` over the output dims in `dims` (a subset, in
// output order). One division chain per call; callers amortise it over a block of elements.
void offsets_of(const CoalescedPerm& c, const int* dims, int ndims, std::int64_t flat, std::int64_t& in_off,
                std::int64_t& out_off) {
  in_off = 0;
  out_off = 0;
  for (int k = ndims - 1; k >= 0; --k) {
    const int d = dims[k];
    const std::int64_t i = flat % c.out_size[d];
    flat /= c.out_size[d];
    in_off += i * c.in_stride[d];
    out_off += i * c.out_stride[d];
  }
}

// The last output dim is also the input's stride-1 dim: every output row of `inner` elements is
// a contiguous input run. One task per index of the dims before the last two; the second-to-last
// dim is walked by adding its stride.
template <class W>
void permute_rows(const CoalescedPerm& c, const W* in, W* out, std::int64_t numel) {
  const int n = c.ndim;
  const std::int64_t inner = c.out_size[n - 1], rows = c.out_size[n - 2], row_stride = c.in_stride[n - 2];
  const std::int64_t tasks = numel / (inner * rows);
  int dims[Shape::kMaxDims] = {};
  for (int i = 0; i < n - 2; ++i) dims[i] = i;
  const std::int64_t per_task = inner * rows;
  cpu::parallel_for(tasks, (16384 + per_task - 1) / per_task, [&](std::int64_t t0, std::int64_t t1) {
    for (std::int64_t t = t0; t < t1; ++t) {
      std::int64_t in_off, out_off;
      offsets_of(c, dims, n - 2, t, in_off, out_off);
      for (std::int64_t r = 0; r < rows; ++r) {
        const W* src = in + in_off + r * row_stride;
        W* dst = out + out_off + r * inner;
#pragma omp simd
        for (std::int64_t i = 0; i < inner; ++i) dst[i] = src[i];
      }
    }
  });
}

// The last output dim is strided in the input: a batch of 2-D transposes between output dims
// a = in_last_pos (input stride 1) and b = last (output stride 1), done in square tiles so that
// both the strided reads and the contiguous writes stay in cache.
template <class W>
void permute_tiled(const CoalescedPerm& c, const W* in, W* out, std::int64_t numel) {
  constexpr std::int64_t kTile = 16;  // 16 x 16 beat 32 x 32 and two-level tilings (f32, EPYC)
  const int n = c.ndim;
  const int a = c.in_last_pos, b = n - 1;
  const std::int64_t na = c.out_size[a], nb = c.out_size[b];
  const std::int64_t out_stride_a = c.out_stride[a], in_stride_b = c.in_stride[b];
  const std::int64_t tiles_a = (na + kTile - 1) / kTile, tiles_b = (nb + kTile - 1) / kTile;
  int dims[Shape::kMaxDims] = {};  // every output dim but a and b
  int nd = 0;
  for (int i = 0; i < b; ++i)
    if (i != a) dims[nd++] = i;
  const std::int64_t batch = numel / (na * nb);
  const std::int64_t tasks = batch * tiles_a * tiles_b;
  const std::int64_t per_task = numel / tasks;  // elements per tile, on average
  cpu::parallel_for(tasks, (16384 + per_task - 1) / per_task, [&](std::int64_t t0, std::int64_t t1) {
    for (std::int64_t t = t0; t < t1; ++t) {
      const std::int64_t tb = t % tiles_b, ta = (t / tiles_b) % tiles_a, bt = t / (tiles_b * tiles_a);
      std::int64_t in_off, out_off;
      offsets_of(c, dims, nd, bt, in_off, out_off);
      const std::int64_t a0 = ta * kTile, a1 = std::min(na, a0 + kTile);
      const std::int64_t b0 = tb * kTile, b1 = std::min(nb, b0 + kTile);
      for (std::int64_t i = a0; i < a1; ++i) {
        const W* src = in + in_off + i;
        W* dst = out + out_off + i * out_stride_a;
        for (std::int64_t j = b0; j < b1; ++j) dst[j] = src[j * in_stride_b];
      }
    }
  });
}

}  // namespace

void CpuBackend::permute(const Tensor& x, Tensor& out, const int* perm) {
  check_permute_args(x, out, perm);
  const Shape& s = x.shape();
  const std::int64_t numel = x.numel();
  if (numel == 0) return;
  const CoalescedPerm c = coalesce(s, perm);
  if (c.ndim <= 1) {  // nothing moves
    std::memcpy(out.raw(), x.raw(), x.nbytes());
    return;
  }
  dispatch_bytes(x.dtype(), [&](auto w) {
    using W = decltype(w);
    const W* in = static_cast<const W*>(x.raw());
    W* o = static_cast<W*>(out.raw());
    if (c.in_last_pos == c.ndim - 1) permute_rows(c, in, o, numel);
    else permute_tiled(c, in, o, numel);
  });
}

void CpuBackend::copy_axis(const Tensor& src, std::int64_t src_axis, std::int64_t src_off, Tensor& dst,
                           std::int64_t dst_axis, std::int64_t dst_off, std::int64_t outer, std::int64_t len,
                           std::int64_t inner, bool accumulate) {
  check_copy_axis_args(src, src_axis, src_off, dst, dst_axis, dst_off, outer, len, inner);
  // For each outer index the slab is one contiguous run of len * inner elements on both sides.
  // Runs are cut into chunks so that outer == 1 (a slab of the first axis) still parallelises.
  constexpr std::int64_t kChunk = 16384;
  const std::int64_t run = len * inner;
  if (run == 0 || outer == 0) return;
  const std::int64_t chunks = (run + kChunk - 1) / kChunk;
  const std::int64_t src_base = src_off * inner, src_step = src_axis * inner;
  const std::int64_t dst_base = dst_off * inner, dst_step = dst_axis * inner;
  auto launch = [&](auto* in, auto* out, auto body) {
    // Tasks are (outer index, chunk of its run) pairs.
    const std::int64_t per_task = std::min(run, kChunk);
    cpu::parallel_for(outer * chunks, (16384 + per_task - 1) / per_task, [&](std::int64_t t0, std::int64_t t1) {
      for (std::int64_t t = t0; t < t1; ++t) {
        const std::int64_t o = t / chunks, ch = t % chunks;
        const std::int64_t b = ch * kChunk, e = std::min(run, b + kChunk);
        body(in + o * src_step + src_base, out + o * dst_step + dst_base, b, e);
      }
    });
  };
  if (accumulate) {
    dispatch_floating(src.dtype(), "copy_axis (accumulate)", [&](auto t) {
      using T = decltype(t);
      launch(src.data<T>(), dst.data<T>(), [](const T* in, T* out, std::int64_t b, std::int64_t e) {
#pragma omp simd
        for (std::int64_t i = b; i < e; ++i) out[i] += in[i];
      });
    });
    return;
  }
  dispatch_bytes(src.dtype(), [&](auto w) {
    using W = decltype(w);
    launch(static_cast<const W*>(src.raw()), static_cast<W*>(dst.raw()),
           [](const W* in, W* out, std::int64_t b, std::int64_t e) {
             std::memcpy(out + b, in + b, static_cast<std::size_t>(e - b) * sizeof(W));
           });
  });
}

}  // namespace upcycle
