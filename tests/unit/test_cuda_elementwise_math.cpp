// The broadcasting index math of the CUDA elementwise kernels (kernels/elementwise_math.hpp)
// checked on the CPU: which element of each binary operand an output element reads, against a
// naive reference that unravels the output index over the larger shape and keeps the trailing
// dims of the smaller one (the suffix rule of Backend::binary), for both directions, size-1 dims,
// scalars and empty shapes; and the grid-stride cursor against i % period.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "elementwise_math.hpp"

namespace {

using upcycle::cuda::BinaryBroadcast;
using upcycle::cuda::Repeat;
using Dims = std::vector<std::int64_t>;

std::int64_t numel(const Dims& d) {
  std::int64_t n = 1;
  for (std::int64_t x : d) n *= x;
  return n;
}

// The element of `small` (a suffix of `big`) that element i of `big` reads.
std::int64_t naive_suffix_index(std::int64_t i, const Dims& big, const Dims& small) {
  std::vector<std::int64_t> coord(big.size());
  for (std::size_t d = big.size(); d-- > 0;) {
    coord[d] = i % big[d];
    i /= big[d];
  }
  std::int64_t j = 0;
  const std::size_t skip = big.size() - small.size();
  for (std::size_t d = 0; d < small.size(); ++d) j = j * small[d] + coord[skip + d];
  return j;
}

// The (a index, b index) pairs a launch of binary_kernel reads, simulated with `blocks` x
// `threads` threads, in output order.
std::vector<std::pair<std::int64_t, std::int64_t>> simulate(std::int64_t na, std::int64_t nb, std::int64_t blocks,
                                                            std::int64_t threads) {
  const std::int64_t n = na > nb ? na : nb;
  std::vector<std::pair<std::int64_t, std::int64_t>> reads(static_cast<std::size_t>(n), {-1, -1});
  std::vector<int> visits(static_cast<std::size_t>(n), 0);
  const BinaryBroadcast bc = upcycle::cuda::binary_broadcast(na, nb);
  const std::int64_t stride = blocks * threads;
  for (std::int64_t first = 0; first < stride; ++first) {
    if (bc.repeat == Repeat::none) {
      for (std::int64_t i = first; i < n; i += stride) reads[i] = {i, i}, ++visits[i];
      continue;
    }
    upcycle::cuda::RepeatCursor c(first, stride, bc.period);
    for (std::int64_t i = first; i < n; i += stride, c.advance()) {
      reads[i] = bc.repeat == Repeat::a ? std::make_pair(c.j, i) : std::make_pair(i, c.j);
      ++visits[i];
    }
  }
  for (std::int64_t i = 0; i < n; ++i) EXPECT_EQ(visits[i], 1) << "output element " << i;
  return reads;
}

TEST(CudaElementwiseMath, BinaryBroadcastValues) {
  BinaryBroadcast b = upcycle::cuda::binary_broadcast(6, 6);
  EXPECT_EQ(b.repeat, Repeat::none);
  EXPECT_EQ(b.period, 6);
  b = upcycle::cuda::binary_broadcast(3, 12);
  EXPECT_EQ(b.repeat, Repeat::a);
  EXPECT_EQ(b.period, 3);
  b = upcycle::cuda::binary_broadcast(12, 3);
  EXPECT_EQ(b.repeat, Repeat::b);
  EXPECT_EQ(b.period, 3);
  b = upcycle::cuda::binary_broadcast(1, 5);  // a scalar
  EXPECT_EQ(b.repeat, Repeat::a);
  EXPECT_EQ(b.period, 1);
  b = upcycle::cuda::binary_broadcast(0, 0);  // empty operands: nothing to read
  EXPECT_EQ(b.repeat, Repeat::none);
  EXPECT_EQ(b.period, 0);
}

TEST(CudaElementwiseMath, RepeatIndexValues) {
  EXPECT_EQ(upcycle::cuda::repeat_index(0, 4), 0);
  EXPECT_EQ(upcycle::cuda::repeat_index(5, 4), 1);
  EXPECT_EQ(upcycle::cuda::repeat_index(11, 4), 3);
  EXPECT_EQ(upcycle::cuda::repeat_index(11, 1), 0);
  EXPECT_EQ(upcycle::cuda::repeat_index((std::int64_t{1} << 40) + 7, 1000), ((std::int64_t{1} << 40) + 7) % 1000);
}

TEST(CudaElementwiseMath, SuffixBroadcastMatchesNaiveReference) {
  struct Case {
    Dims big, small;
  };
  const std::vector<Case> cases = {
      {{2, 3, 4}, {3, 4}}, {{2, 3, 4}, {4}},    {{2, 3, 4}, {2, 3, 4}}, {{5, 1}, {1}},     {{3, 1, 2}, {1, 2}},
      {{4, 3}, {}},        {{7}, {7}},          {{1}, {1}},             {{1, 1, 1}, {1}},  {{33, 65}, {65}},
      {{3, 257}, {257}},   {{2, 5, 1, 3}, {1, 3}}, {{3, 0}, {0}},       {{2, 0}, {0}},     {{0}, {0}},
  };
  // (An empty larger shape only ever meets an empty suffix: the CPU check takes the operand with
  // more elements as the larger, so [0, 3] with [3] is refused before any kernel runs.)
  for (const Case& c : cases) {
    const std::int64_t nb = numel(c.big), ns = numel(c.small);
    for (int dir = 0; dir < 2; ++dir) {  // dir 0: b is the smaller operand, 1: a is
      const std::int64_t na = dir ? ns : nb, nbb = dir ? nb : ns;
      for (std::int64_t blocks : {1, 2, 3}) {
        for (std::int64_t threads : {1, 4, 32, 256}) {
          const auto reads = simulate(na, nbb, blocks, threads);
          ASSERT_EQ(static_cast<std::int64_t>(reads.size()), nb);
          for (std::int64_t i = 0; i < nb; ++i) {
            const std::int64_t expect_small = naive_suffix_index(i, c.big, c.small);
            const std::int64_t got_big = dir ? reads[i].second : reads[i].first;
            const std::int64_t got_small = dir ? reads[i].first : reads[i].second;
            EXPECT_EQ(got_big, i);
            EXPECT_EQ(got_small, expect_small) << "element " << i << " dir " << dir;
          }
        }
      }
    }
  }
}

TEST(CudaElementwiseMath, EqualCountsReadElementwise) {
  // [2, 3] with [3, 2]: the CPU reads both elementwise (equal element counts), not by suffix.
  const auto reads = simulate(6, 6, 1, 4);
  for (std::int64_t i = 0; i < 6; ++i) {
    EXPECT_EQ(reads[i].first, i);
    EXPECT_EQ(reads[i].second, i);
  }
}

TEST(CudaElementwiseMath, SuffixExample) {
  // out [2, 3] = a [2, 3] + b [3]: out[1, 2] (element 5) reads a[5] and b[2].
  const auto reads = simulate(6, 3, 1, 2);
  EXPECT_EQ(reads[5].first, 5);
  EXPECT_EQ(reads[5].second, 2);
  EXPECT_EQ(reads[3].second, 0);
}

TEST(CudaElementwiseMath, RepeatCursorFollowsModulo) {
  const std::int64_t big = std::int64_t{1} << 34;
  for (std::int64_t period : {std::int64_t{1}, std::int64_t{2}, std::int64_t{3}, std::int64_t{7}, std::int64_t{1000},
                              std::int64_t{540672}, big + 1}) {
    for (std::int64_t stride : {std::int64_t{1}, std::int64_t{2}, std::int64_t{5}, std::int64_t{256},
                                std::int64_t{540672}, std::int64_t{132 * 16 * 256}, big * 2 + 3}) {
      for (std::int64_t first : {std::int64_t{0}, std::int64_t{1}, std::int64_t{13}, std::int64_t{255}, big}) {
        upcycle::cuda::RepeatCursor c(first, stride, period);
        for (std::int64_t s = 0; s < 64; ++s) {
          const std::int64_t i = first + s * stride;
          ASSERT_EQ(c.j, i % period) << "first " << first << " stride " << stride << " period " << period;
          c.advance();
        }
      }
    }
  }
}

}  // namespace
