// The order of the CUDA topk / argsort kernels (kernels/topk_math.hpp) checked on the CPU: the
// order keys must rank values exactly as the CPU's comparators do (cpu_sort.cpp: NaN above every
// number, -0 == +0, ties by the lower index), and the kernels' per-thread lists merged round by
// round (simulated here for warps and blocks) must give the CPU's top-k.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "topk_math.hpp"

namespace {

namespace uc = upcycle::cuda;

// The CPU's order (a copy of cpu_sort.cpp's comparators, the reference).
template <class T>
bool cpu_greater(T a, T b) {
  return a > b || (std::isnan(a) && !std::isnan(b));
}
template <class T>
struct CpuDescending {
  const T* x;
  bool operator()(std::int64_t a, std::int64_t b) const {
    if (cpu_greater(x[a], x[b])) return true;
    if (cpu_greater(x[b], x[a])) return false;
    return a < b;
  }
};
template <class T>
struct CpuAscending {
  const T* x;
  bool operator()(std::int64_t a, std::int64_t b) const {
    if (cpu_greater(x[b], x[a])) return true;
    if (cpu_greater(x[a], x[b])) return false;
    return a < b;
  }
};

template <class T>
std::vector<T> special_values() {
  const T inf = std::numeric_limits<T>::infinity(), nan = std::numeric_limits<T>::quiet_NaN();
  return {T(0),  -T(0), T(1),   T(-1),  T(2.5), T(-2.5), inf, -inf, nan, -nan,
          std::numeric_limits<T>::denorm_min(), -std::numeric_limits<T>::denorm_min(),
          std::numeric_limits<T>::min(), std::numeric_limits<T>::max(), std::numeric_limits<T>::lowest(),
          T(1e-3), T(-1e-3)};
}

template <class T>
void check_key_order() {
  const auto v = special_values<T>();
  for (T a : v)
    for (T b : v) {
      const auto ka = uc::order_key(a), kb = uc::order_key(b);
      EXPECT_EQ(ka > kb, cpu_greater(a, b)) << a << " vs " << b;
      EXPECT_EQ(ka == kb, !cpu_greater(a, b) && !cpu_greater(b, a)) << a << " vs " << b;
    }
}

TEST(CudaTopkMath, OrderKeysRankLikeTheCpu) {
  check_key_order<float>();
  check_key_order<double>();
  EXPECT_EQ(uc::order_key(0.0f), 0x80000000u);
  EXPECT_EQ(uc::order_key(-0.0f), 0x80000000u);
  EXPECT_EQ(uc::order_key(std::numeric_limits<float>::quiet_NaN()), 0xFFFFFFFFu);
  EXPECT_EQ(uc::order_key(-std::numeric_limits<float>::quiet_NaN()), 0xFFFFFFFFu);
  EXPECT_EQ(uc::order_key(std::numeric_limits<float>::infinity()), 0xFF800000u);
  EXPECT_EQ(uc::order_key(-std::numeric_limits<float>::infinity()), 0x007FFFFFu);
  EXPECT_EQ(uc::order_key(1.0), 0xBFF0000000000000ull);
  EXPECT_EQ(uc::argsort_key(1.0f, true), ~uc::order_key(1.0f));
  EXPECT_EQ(uc::argsort_key(1.0f, false), uc::order_key(1.0f));
}

TEST(CudaTopkMath, RanksBeforeAndEmptySlots) {
  using C = uc::KeyIdx<std::uint32_t>;
  EXPECT_TRUE(uc::ranks_before(C{5, 3}, C{4, 0}));
  EXPECT_TRUE(uc::ranks_before(C{5, 1}, C{5, 3}));
  EXPECT_FALSE(uc::ranks_before(C{5, 3}, C{5, 1}));
  EXPECT_FALSE(uc::ranks_before(C{5, 3}, C{5, 3}));
  EXPECT_TRUE(uc::ranks_before(C{0, 9}, C{7, -1}));
  EXPECT_FALSE(uc::ranks_before(C{7, -1}, C{0, 9}));
  EXPECT_FALSE(uc::ranks_before(C{7, -1}, C{7, -1}));
  EXPECT_EQ(uc::better_of(C{5, 3}, C{5, 1}).idx, 1);
  EXPECT_EQ(uc::better_of(C{5, 1}, C{5, 3}).idx, 1);
  EXPECT_EQ(uc::topk_list_size(1), 2);
  EXPECT_EQ(uc::topk_list_size(3), 4);
  EXPECT_EQ(uc::topk_list_size(8), 8);
  EXPECT_EQ(uc::topk_list_size(9), 16);
  EXPECT_EQ(uc::topk_list_size(17), 0);
}

// Values with many ties, NaNs of both signs, signed zeros and infinities.
template <class T>
std::vector<T> random_row(std::int64_t cols, std::mt19937& rng) {
  std::uniform_int_distribution<int> pick(0, 19);
  std::vector<T> row(static_cast<std::size_t>(cols));
  for (T& v : row) {
    const int p = pick(rng);
    if (p == 0) v = std::numeric_limits<T>::quiet_NaN();
    else if (p == 1) v = -std::numeric_limits<T>::quiet_NaN();
    else if (p == 2) v = -T(0);
    else if (p == 3) v = T(0);
    else if (p == 4) v = std::numeric_limits<T>::infinity();
    else if (p == 5) v = -std::numeric_limits<T>::infinity();
    else v = static_cast<T>(pick(rng) - 10) / T(4);
  }
  return row;
}

// The kernels' algorithm on the host: `threads` threads stride over the row (thread t takes
// columns t, t + threads, ...), each keeping a list of N; k rounds take the best head.
template <class T, int N>
std::vector<std::int64_t> simulated_topk(const std::vector<T>& row, std::int64_t k, int threads) {
  using K = uc::order_key_t<T>;
  std::vector<uc::TopList<K, N>> lists(static_cast<std::size_t>(threads));
  for (auto& l : lists) l.clear();
  const auto cols = static_cast<std::int64_t>(row.size());
  for (int t = 0; t < threads; ++t)
    for (std::int64_t c = t; c < cols; c += threads)
      lists[static_cast<std::size_t>(t)].insert({uc::order_key(row[static_cast<std::size_t>(c)]), c});
  std::vector<std::int64_t> out;
  for (std::int64_t j = 0; j < k; ++j) {
    uc::KeyIdx<K> best{K{0}, -1};
    for (const auto& l : lists) best = uc::better_of(best, l.head());
    EXPECT_GE(best.idx, 0);
    for (auto& l : lists)
      if (l.idx[0] == best.idx) l.pop();
    out.push_back(best.idx);
  }
  return out;
}

template <class T, int N>
void check_topk(std::int64_t cols, std::int64_t k, int threads, std::mt19937& rng) {
  const auto row = random_row<T>(cols, rng);
  std::vector<std::int64_t> order(static_cast<std::size_t>(cols));
  std::iota(order.begin(), order.end(), std::int64_t{0});
  std::partial_sort(order.begin(), order.begin() + k, order.end(), CpuDescending<T>{row.data()});
  order.resize(static_cast<std::size_t>(k));
  const auto got = simulated_topk<T, N>(row, k, threads);
  EXPECT_EQ(got, order) << "cols=" << cols << " k=" << k << " threads=" << threads;
}

TEST(CudaTopkMath, ThreadListsMergeToTheCpuTopk) {
  std::mt19937 rng(1234);
  for (int rep = 0; rep < 20; ++rep)
    for (std::int64_t cols : {1, 2, 3, 8, 31, 33, 100, 1000, 2500})
      for (int threads : {32, 256}) {
        for (std::int64_t k : {1, 2}) {
          if (k > cols) continue;
          check_topk<float, 2>(cols, k, threads, rng);
          check_topk<double, 2>(cols, k, threads, rng);
        }
        if (cols >= 3) check_topk<float, 4>(cols, 3, threads, rng);
        if (cols >= 8) check_topk<double, 8>(cols, 8, threads, rng);
        if (cols >= 16) check_topk<float, 16>(cols, 16, threads, rng);
        check_topk<float, 16>(cols, std::min<std::int64_t>(cols, 11), threads, rng);
      }
}

// A stable ascending sort of argsort_key gives the CPU's argsort, both directions.
template <class T>
void check_argsort(std::int64_t cols, bool descending, std::mt19937& rng) {
  const auto row = random_row<T>(cols, rng);
  std::vector<std::int64_t> cpu(static_cast<std::size_t>(cols)), gpu(static_cast<std::size_t>(cols));
  std::iota(cpu.begin(), cpu.end(), std::int64_t{0});
  std::iota(gpu.begin(), gpu.end(), std::int64_t{0});
  if (descending) std::sort(cpu.begin(), cpu.end(), CpuDescending<T>{row.data()});
  else std::sort(cpu.begin(), cpu.end(), CpuAscending<T>{row.data()});
  std::stable_sort(gpu.begin(), gpu.end(), [&](std::int64_t a, std::int64_t b) {
    return uc::argsort_key(row[static_cast<std::size_t>(a)], descending) <
           uc::argsort_key(row[static_cast<std::size_t>(b)], descending);
  });
  EXPECT_EQ(gpu, cpu) << "cols=" << cols << " descending=" << descending;
}

TEST(CudaTopkMath, ArgsortKeysGiveTheCpuOrder) {
  std::mt19937 rng(99);
  for (std::int64_t cols : {1, 2, 7, 64, 1001})
    for (bool desc : {false, true}) {
      check_argsort<float>(cols, desc, rng);
      check_argsort<double>(cols, desc, rng);
    }
}

}  // namespace
