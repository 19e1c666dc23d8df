// The index math of the CUDA layout and reduction kernels (kernels/layout_math.hpp), checked on the
// CPU against naive references: the kernels compute exactly these functions on the device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "layout_math.hpp"

namespace upcycle::cuda {
namespace {

using Dims = std::vector<std::int64_t>;

std::int64_t product(const Dims& d) {
  std::int64_t n = 1;
  for (std::int64_t v : d) n *= v;
  return n;
}

// GCC 12 reports a false -Wfree-nonheap-object on the vectors below once inlined (a known GCC
// false positive); nothing here frees a non-heap pointer.
#pragma GCC diagnostic ignored "-Wfree-nonheap-object"

// Naive permute: for every output element, its multi-index, the input multi-index it came from
// (in[perm[i]] = out[i]) and that element's linear index.
std::vector<std::int64_t> naive_permute_sources(const Dims& in, const std::vector<int>& perm) {
  const int n = static_cast<int>(in.size());
  Dims out(in.size());
  for (int i = 0; i < n; ++i) out[static_cast<std::size_t>(i)] = in[static_cast<std::size_t>(perm[static_cast<std::size_t>(i)])];
  std::vector<std::int64_t> src(static_cast<std::size_t>(product(out)));
  std::vector<std::int64_t> idx(in.size(), 0), in_idx(in.size(), 0);
  for (std::size_t k = 0; k < src.size(); ++k) {
    std::int64_t rest = static_cast<std::int64_t>(k);
    for (int d = n - 1; d >= 0; --d) {
      idx[static_cast<std::size_t>(d)] = rest % out[static_cast<std::size_t>(d)];
      rest /= out[static_cast<std::size_t>(d)];
    }
    for (int i = 0; i < n; ++i) in_idx[static_cast<std::size_t>(perm[static_cast<std::size_t>(i)])] = idx[static_cast<std::size_t>(i)];
    std::int64_t lin = 0;
    for (int d = 0; d < n; ++d) lin = lin * in[static_cast<std::size_t>(d)] + in_idx[static_cast<std::size_t>(d)];
    src[k] = lin;
  }
  return src;
}

PermutePlan plan_of(const Dims& in, const std::vector<int>& perm) {
  return plan_permute(static_cast<int>(in.size()), in.data(), perm.data());
}

// Every output element through the plan (both index widths) and, when the plan transposes, through
// the tiled walk of the transpose kernel: each output written once, from the naive source.
void expect_permute_matches(const Dims& in, const std::vector<int>& perm) {
  SCOPED_TRACE(::testing::PrintToString(in) + " perm " + ::testing::PrintToString(perm));
  const std::vector<std::int64_t> want = naive_permute_sources(in, perm);
  const PermutePlan p = plan_of(in, perm);
  std::int64_t planned = 1;
  for (int d = 0; d < p.ndim; ++d) planned *= p.size[d];
  EXPECT_EQ(planned, static_cast<std::int64_t>(want.size()));
  for (std::size_t k = 0; k < want.size(); ++k) {
    ASSERT_EQ(permute_source_index<std::int64_t>(p, static_cast<std::int64_t>(k)), want[k]) << "at " << k;
    ASSERT_EQ(permute_source_index<std::uint32_t>(p, static_cast<std::uint32_t>(k)),
              static_cast<std::uint32_t>(want[k]))
        << "at " << k;
  }
  if (p.ndim < 2 || p.in_last_pos == p.ndim - 1 || want.empty()) return;
  const TransposePlan t = plan_transpose(p);
  std::vector<int> written(want.size(), 0);
  for (std::int64_t task = 0; task < t.tasks; ++task) {
    const TransposeTask tt = transpose_task(t, task);
    std::int64_t in_off = 0, out_off = 0;
    transpose_batch_offsets<std::int64_t>(t, tt.batch, in_off, out_off);
    for (std::int64_t i = tt.ta * kTransposeTile; i < std::min(t.na, (tt.ta + 1) * kTransposeTile); ++i)
      for (std::int64_t j = tt.tb * kTransposeTile; j < std::min(t.nb, (tt.tb + 1) * kTransposeTile); ++j) {
        const std::int64_t o = transpose_out_index(t, out_off, i, j);
        ASSERT_GE(o, 0);
        ASSERT_LT(o, static_cast<std::int64_t>(want.size()));
        EXPECT_EQ(transpose_in_index(t, in_off, i, j), want[static_cast<std::size_t>(o)]) << "out " << o;
        ++written[static_cast<std::size_t>(o)];
      }
  }
  for (std::size_t k = 0; k < written.size(); ++k) ASSERT_EQ(written[k], 1) << "out " << k;
}

void expect_all_permutations(const Dims& in) {
  std::vector<int> perm(in.size());
  std::iota(perm.begin(), perm.end(), 0);
  int count = 0;
  do {
    expect_permute_matches(in, perm);
    ++count;
  } while (std::next_permutation(perm.begin(), perm.end()));
  int factorial = 1;
  for (std::size_t i = 2; i <= in.size(); ++i) factorial *= static_cast<int>(i);
  EXPECT_EQ(count, factorial);
}

TEST(CudaLayoutMath, PermuteAllPermutationsOfOddRank4) { expect_all_permutations({3, 5, 7, 9}); }

TEST(CudaLayoutMath, PermuteWithSizeOneDims) {
  expect_all_permutations({3, 1, 5, 1, 7});
  expect_all_permutations({1, 1, 1});
  expect_all_permutations({1, 33, 1, 34});
}

TEST(CudaLayoutMath, PermuteRankOneAndZero) {
  expect_permute_matches({7}, {0});
  const PermutePlan one = plan_of({7}, {0});
  EXPECT_EQ(one.ndim, 1);
  const PermutePlan scalar = plan_of({}, {});
  EXPECT_EQ(scalar.ndim, 0);
  EXPECT_EQ(permute_source_index<std::int64_t>(scalar, 0), 0);
}

TEST(CudaLayoutMath, PermuteEmptyDims) {
  expect_all_permutations({3, 0, 5});
  expect_all_permutations({0, 2, 1});
  const PermutePlan p = plan_of({3, 0, 5}, {2, 0, 1});
  std::int64_t planned = 1;
  for (int d = 0; d < p.ndim; ++d) planned *= p.size[d];
  EXPECT_EQ(planned, 0);
}

TEST(CudaLayoutMath, PermuteTilesAndTails) {
  // Sizes around and across the 32-element tile, batched and not.
  expect_all_permutations({33, 65});
  expect_all_permutations({2, 31, 40});
  expect_all_permutations({3, 64, 1, 17});
  expect_permute_matches({2, 1, 3, 2, 1, 2, 3, 2}, {7, 6, 5, 4, 3, 2, 1, 0});
  expect_permute_matches({2, 3, 2, 2, 3, 2, 2, 3}, {1, 0, 3, 2, 5, 4, 7, 6});
  expect_permute_matches({2, 3, 2, 2, 3, 2, 2, 3}, {3, 4, 5, 6, 7, 0, 1, 2});
}

TEST(CudaLayoutMath, PermutePlanCoalesces) {
  // [B, T, H, D] -> [B, H, T, D]: nothing merges, D stays contiguous.
  PermutePlan p = plan_of({2, 3, 4, 5}, {0, 2, 1, 3});
  EXPECT_EQ(p.ndim, 4);
  EXPECT_EQ(p.in_last_pos, 3);
  EXPECT_EQ(p.in_stride[1], 5);
  EXPECT_EQ(p.in_stride[2], 20);
  // Identity: one dim.
  p = plan_of({2, 3, 4, 5}, {0, 1, 2, 3});
  EXPECT_EQ(p.ndim, 1);
  EXPECT_EQ(p.size[0], 120);
  // Swap of the last two: the leading dims merge, a batched transpose.
  p = plan_of({2, 3, 4, 5}, {0, 1, 3, 2});
  ASSERT_EQ(p.ndim, 3);
  EXPECT_EQ(p.size[0], 6);
  EXPECT_EQ(p.size[1], 5);
  EXPECT_EQ(p.size[2], 4);
  EXPECT_EQ(p.in_stride[0], 20);
  EXPECT_EQ(p.in_stride[1], 1);
  EXPECT_EQ(p.in_stride[2], 5);
  EXPECT_EQ(p.in_last_pos, 1);
  const TransposePlan t = plan_transpose(p);
  EXPECT_EQ(t.nbatch, 1);
  EXPECT_EQ(t.na, 5);
  EXPECT_EQ(t.nb, 4);
  EXPECT_EQ(t.out_stride_a, 4);
  EXPECT_EQ(t.in_stride_b, 5);
  EXPECT_EQ(t.tasks, 6);
  // Two halves swapped: a 2-D transpose of [6, 20].
  p = plan_of({2, 3, 4, 5}, {2, 3, 0, 1});
  ASSERT_EQ(p.ndim, 2);
  EXPECT_EQ(p.size[0], 20);
  EXPECT_EQ(p.size[1], 6);
  EXPECT_EQ(p.in_stride[0], 1);
  EXPECT_EQ(p.in_stride[1], 20);
  EXPECT_EQ(p.in_last_pos, 0);
  // Size-1 dims between two dims do not stop them merging.
  p = plan_of({4, 1, 5, 1}, {1, 0, 3, 2});
  EXPECT_EQ(p.ndim, 1);
  EXPECT_EQ(p.size[0], 20);
}

TEST(CudaLayoutMath, PermuteInWideWords) {
  // [B, T, H, D] -> [B, H, T, D] with D = 8 f32: rows of 32 bytes move as 16-byte words.
  const Dims in = {2, 3, 4, 8};
  const std::vector<int> perm = {0, 2, 1, 3};
  const PermutePlan p = plan_of(in, perm);
  EXPECT_EQ(permute_word_bytes(p, 4, 0x1000, 0x2000), 16);
  EXPECT_EQ(permute_word_bytes(p, 4, 0x1008, 0x2000), 8);
  EXPECT_EQ(permute_word_bytes(p, 4, 0x1000, 0x2004), 4);
  EXPECT_EQ(permute_word_bytes(p, 8, 0x1000, 0x2000), 16);
  // D = 3 f32: no wider word; a transposing plan: never.
  EXPECT_EQ(permute_word_bytes(plan_of({2, 3, 4, 3}, perm), 4, 0, 0), 4);
  EXPECT_EQ(permute_word_bytes(plan_of({2, 3, 4, 8}, {0, 1, 3, 2}), 4, 0, 0), 4);
  // D = 6 bf16: 4-byte words (12 bytes per row).
  EXPECT_EQ(permute_word_bytes(plan_of({2, 3, 4, 6}, perm), 2, 0, 0), 4);

  const std::vector<std::int64_t> want = naive_permute_sources(in, perm);
  const PermutePlan w = permute_plan_in_words(p, 4, 16);
  for (std::int64_t k = 0; k < static_cast<std::int64_t>(want.size()) / 4; ++k) {
    const std::int64_t src = permute_source_index<std::int64_t>(w, k);
    for (std::int64_t e = 0; e < 4; ++e) EXPECT_EQ(src * 4 + e, want[static_cast<std::size_t>(k * 4 + e)]);
  }
  const Dims in6 = {3, 5, 2, 6};
  const std::vector<std::int64_t> want6 = naive_permute_sources(in6, {1, 0, 2, 3});
  const PermutePlan w6 = permute_plan_in_words(plan_of(in6, {1, 0, 2, 3}), 2, 4);
  for (std::int64_t k = 0; k < static_cast<std::int64_t>(want6.size()) / 2; ++k) {
    const std::uint32_t src = permute_source_index<std::uint32_t>(w6, static_cast<std::uint32_t>(k));
    for (std::int64_t e = 0; e < 2; ++e)
      EXPECT_EQ(static_cast<std::int64_t>(src) * 2 + e, want6[static_cast<std::size_t>(k * 2 + e)]);
  }
}

TEST(CudaLayoutMath, SlabCopyMatchesNaive) {
  struct Case {
    std::int64_t outer, src_axis, src_off, dst_axis, dst_off, len, inner;
  };
  for (const Case& c : {Case{3, 7, 2, 5, 1, 4, 3}, Case{1, 9, 0, 9, 0, 9, 1}, Case{4, 2, 1, 6, 5, 1, 5},
                        Case{2, 3, 0, 4, 1, 0, 7}}) {
    const SlabCopy s = plan_slab_copy(c.src_axis, c.src_off, c.dst_axis, c.dst_off, c.outer, c.len, c.inner);
    std::vector<std::int64_t> src_of(static_cast<std::size_t>(c.outer * c.dst_axis * c.inner), -1);
    for (std::int64_t k = 0; k < s.outer * s.run; ++k) {
      std::int64_t si = 0, di = 0;
      slab_offsets<std::int64_t>(s, k, si, di);
      std::uint32_t si32 = 0, di32 = 0;
      slab_offsets<std::uint32_t>(s, static_cast<std::uint32_t>(k), si32, di32);
      EXPECT_EQ(si32, static_cast<std::uint32_t>(si));
      EXPECT_EQ(di32, static_cast<std::uint32_t>(di));
      ASSERT_EQ(src_of[static_cast<std::size_t>(di)], -1) << "written twice";
      src_of[static_cast<std::size_t>(di)] = si;
    }
    for (std::int64_t o = 0; o < c.outer; ++o)
      for (std::int64_t a = 0; a < c.dst_axis; ++a)
        for (std::int64_t i = 0; i < c.inner; ++i) {
          const std::int64_t d = (o * c.dst_axis + a) * c.inner + i;
          const bool in_slab = a >= c.dst_off && a < c.dst_off + c.len;
          const std::int64_t want = in_slab ? (o * c.src_axis + a - c.dst_off + c.src_off) * c.inner + i : -1;
          EXPECT_EQ(src_of[static_cast<std::size_t>(d)], want) << "dst " << d;
        }
  }
}

TEST(CudaLayoutMath, SlabWordWidth) {
  // f32: run 8, steps and offsets multiples of 4 elements, 16-byte aligned addresses: 16 bytes.
  SlabCopy s = plan_slab_copy(/*src_axis*/ 4, /*src_off*/ 0, /*dst_axis*/ 8, /*dst_off*/ 4, /*outer*/ 3, /*len*/ 4,
                              /*inner*/ 2);
  EXPECT_EQ(slab_word_bytes(s, 4, 0x1000, 0x2000), 16);
  EXPECT_EQ(slab_word_bytes(s, 4, 0x1008, 0x2000), 8);
  EXPECT_EQ(slab_word_bytes(s, 4, 0x1004, 0x2000), 4);
  // An odd inner of f32: element words only.
  s = plan_slab_copy(4, 1, 8, 4, 3, 2, 3);
  EXPECT_EQ(slab_word_bytes(s, 4, 0x1000, 0x2000), 4);
  // bf16 pairs: 4 bytes; f64 never below 8.
  s = plan_slab_copy(4, 0, 6, 2, 2, 2, 2);
  EXPECT_EQ(slab_word_bytes(s, 2, 0x1000, 0x2000), 8);
  s = plan_slab_copy(3, 0, 3, 1, 2, 1, 1);
  EXPECT_EQ(slab_word_bytes(s, 8, 0x1008, 0x2000), 8);

  // In words the copy moves the same bytes.
  s = plan_slab_copy(12, 4, 8, 0, 5, 8, 1);
  const int w = slab_word_bytes(s, 4, 0, 0);
  ASSERT_EQ(w, 16);
  const SlabCopy sw = slab_in_words(s, 4, w);
  EXPECT_EQ(sw.run, 2);
  for (std::int64_t k = 0; k < sw.outer * sw.run; ++k) {
    std::int64_t si = 0, di = 0;
    slab_offsets<std::int64_t>(sw, k, si, di);
    for (int e = 0; e < 4; ++e) {
      std::int64_t se = 0, de = 0;
      slab_offsets<std::int64_t>(s, k * 4 + e, se, de);
      EXPECT_EQ(se, si * 4 + e);
      EXPECT_EQ(de, di * 4 + e);
    }
  }
}

// The column kernel's walk: every x[o, a, i] read exactly once, by a thread whose output is (o, i).
void expect_cols_cover(std::int64_t outer, std::int64_t axis, std::int64_t inner) {
  SCOPED_TRACE(::testing::Message() << "[" << outer << ", " << axis << ", " << inner << "]");
  const ReduceColsPlan p = plan_reduce_cols(outer, axis, inner);
  ASSERT_GE(p.tx, 1);
  ASSERT_GE(p.ty, 1);
  EXPECT_EQ(p.tx & (p.tx - 1), 0);
  EXPECT_EQ(p.ty & (p.ty - 1), 0);
  EXPECT_LE(p.tx * p.ty, kReduceThreads);
  EXPECT_EQ((p.tx * p.ty) % 32, 0);
  EXPECT_GE(p.chunks, 1);
  EXPECT_LE(p.chunks, kReduceMaxChunks);
  EXPECT_GE(static_cast<std::int64_t>(p.tx) * p.col_tiles, inner);
  std::vector<int> seen(static_cast<std::size_t>(outer * axis * inner), 0);
  std::vector<int> partials(static_cast<std::size_t>(outer * inner * p.chunks), 0);
  const std::int64_t tasks = outer * p.chunks * p.col_tiles;
  for (std::int64_t task = 0; task < tasks; ++task) {
    const ReduceColsTask t = reduce_cols_task(task, p.col_tiles, p.chunks);
    const std::int64_t a0 = chunk_begin(t.c, axis, p.chunks), a1 = chunk_begin(t.c + 1, axis, p.chunks);
    for (int ty = 0; ty < p.ty; ++ty)
      for (int tx = 0; tx < p.tx; ++tx) {
        const std::int64_t i = t.tile * p.tx + tx;
        if (i >= inner) continue;
        for (std::int64_t a = a0 + ty; a < a1; a += p.ty) ++seen[static_cast<std::size_t>(reduce_x_index(t.o, a, i, axis, inner))];
        if (ty == 0) ++partials[static_cast<std::size_t>(reduce_partial_index(t.o * inner + i, t.c, p.chunks))];
      }
  }
  for (std::size_t k = 0; k < seen.size(); ++k) ASSERT_EQ(seen[k], 1) << "x " << k;
  for (std::size_t k = 0; k < partials.size(); ++k) ASSERT_EQ(partials[k], 1) << "partial " << k;
}

TEST(CudaLayoutMath, ReduceColumnsCoverEveryElementOnce) {
  expect_cols_cover(1, 100000, 64);  // a bias gradient: the axis is split
  expect_cols_cover(3, 5, 7);
  expect_cols_cover(2, 1, 33);
  expect_cols_cover(1, 0, 5);
  expect_cols_cover(5, 3, 2);
  expect_cols_cover(1, 2, 300);
  expect_cols_cover(7, 1000, 3);
  expect_cols_cover(2, 5000, 97);
}

TEST(CudaLayoutMath, ReducePlans) {
  const ReduceColsPlan bias = plan_reduce_cols(1, 100000, 64);
  EXPECT_EQ(bias.tx, 32);
  EXPECT_EQ(bias.ty, 8);
  EXPECT_EQ(bias.col_tiles, 2);
  EXPECT_EQ(bias.chunks, 512);
  // Many rows: no split.
  EXPECT_EQ(plan_reduce_cols(64, 1000, 4096).chunks, 1);
  // A short axis gives its idle thread rows more columns.
  const ReduceColsPlan wide = plan_reduce_cols(10, 2, 4096);
  EXPECT_EQ(wide.tx, 128);
  EXPECT_EQ(wide.ty, 2);
  // Narrow columns and a short axis: a smaller block, still two warps.
  const ReduceColsPlan narrow = plan_reduce_cols(1000, 4, 8);
  EXPECT_EQ(narrow.tx, 8);
  EXPECT_EQ(narrow.ty, 8);

  EXPECT_TRUE(plan_reduce_rows(1000, 100, true).warp_per_row);
  EXPECT_EQ(plan_reduce_rows(1000, 100, true).chunks, 1);
  const ReduceRowsPlan long_row = plan_reduce_rows(1, 50000, true);
  EXPECT_FALSE(long_row.warp_per_row);
  EXPECT_EQ(long_row.chunks, 12);
  EXPECT_EQ(plan_reduce_rows(1, 50000, false).chunks, 1);
  EXPECT_EQ(plan_reduce_rows(4096, 50000, true).chunks, 1);
  EXPECT_EQ(plan_reduce_rows(1, std::int64_t{1} << 32, true).chunks, kReduceMaxChunks);

  // Chunks cover the axis in order, without gaps.
  for (std::int64_t len : {0, 1, 5, 4096, 50001})
    for (std::int64_t chunks : {1, 3, 12, 1024}) {
      EXPECT_EQ(chunk_begin(0, len, chunks), 0);
      EXPECT_EQ(chunk_begin(chunks, len, chunks), len);
      for (std::int64_t c = 0; c < chunks; ++c) EXPECT_LE(chunk_begin(c, len, chunks), chunk_begin(c + 1, len, chunks));
    }
}

TEST(CudaLayoutMath, ExpandSourceIndex) {
  const std::int64_t outer = 3, axis = 4, inner = 5;
  for (std::int64_t o = 0; o < outer; ++o)
    for (std::int64_t j = 0; j < axis; ++j)
      for (std::int64_t i = 0; i < inner; ++i) {
        const std::int64_t k = (o * axis + j) * inner + i;
        EXPECT_EQ(expand_source_index<std::int64_t>(k, axis * inner, inner), o * inner + i);
        EXPECT_EQ(expand_source_index<std::uint32_t>(static_cast<std::uint32_t>(k), axis * inner, inner),
                  static_cast<std::uint32_t>(o * inner + i));
      }
}

TEST(CudaLayoutMath, SumSquaresBatchBlocks) {
  SumSquaresBatch b;
  sum_squares_batch_init(b, 7);
  int dummy[3] = {};
  EXPECT_EQ(sum_squares_batch_add(b, &dummy[0], 1, false), 1);
  EXPECT_EQ(sum_squares_batch_add(b, &dummy[1], 2 * kSumSquaresBlock + 1, true), 3);
  EXPECT_EQ(sum_squares_batch_add(b, &dummy[2], kSumSquaresBlock, false), 1);
  EXPECT_EQ(b.count, 3);
  EXPECT_EQ(b.first_block[3], 5);
  EXPECT_EQ(b.partial_base, 7);
  EXPECT_EQ(b.is_f64[1], 1);
  const int want[5] = {0, 1, 1, 1, 2};
  for (int k = 0; k < 5; ++k) EXPECT_EQ(sum_squares_tensor_of(b, k), want[k]) << "block " << k;
  // A full batch still finds its last tensor.
  sum_squares_batch_init(b, 0);
  for (int t = 0; t < kSumSquaresMaxTensors; ++t) sum_squares_batch_add(b, dummy, 10, false);
  EXPECT_EQ(sum_squares_tensor_of(b, kSumSquaresMaxTensors - 1), kSumSquaresMaxTensors - 1);
  EXPECT_EQ(sum_squares_tensor_of(b, 17), 17);
  // The batch fits the kernel parameter space with room to spare.
  EXPECT_LT(sizeof(SumSquaresBatch), std::size_t{2048});
}

}  // namespace
}  // namespace upcycle::cuda
