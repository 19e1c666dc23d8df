#pragma once
// The order of topk / argsort on the GPU as plain functions (no CUDA includes), compiled for the
// host too so that tests/unit/test_cuda_topk_math.cpp checks them against the CPU's comparators.
//
// The CPU (cpu_sort.cpp) orders values by `greater` (NaN above every number, -0 == +0) and breaks
// ties by the lower index. Here every value becomes an unsigned key whose unsigned order is that
// order: the comparisons are then integer ones (no dependence on flush-to-zero or on how NaN
// compares), radix sorts can sort the keys directly, and (key, index) is a total order, so an
// unstable selection gives exactly the stable result.
#include <cstdint>
#include <cstring>

#include "upcycle/core/host_device.hpp"

// Unrolls the list loops in device code (the host compiler does not know the pragma).
#ifdef __CUDA_ARCH__
#define UPCYCLE_TOPK_UNROLL _Pragma("unroll")
#else
#define UPCYCLE_TOPK_UNROLL
#endif

namespace upcycle::cuda {

template <class T>
struct OrderKeyOf;
template <>
struct OrderKeyOf<float> {
  using type = std::uint32_t;
};
template <>
struct OrderKeyOf<double> {
  using type = std::uint64_t;
};
template <class T>
using order_key_t = typename OrderKeyOf<T>::type;

UPCYCLE_HD inline std::uint32_t bits_of(float v) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(v);
#else
  std::uint32_t b;
  std::memcpy(&b, &v, sizeof b);
  return b;
#endif
}
UPCYCLE_HD inline std::uint64_t bits_of(double v) {
#ifdef __CUDA_ARCH__
  return static_cast<std::uint64_t>(__double_as_longlong(v));
#else
  std::uint64_t b;
  std::memcpy(&b, &v, sizeof b);
  return b;
#endif
}

// Larger value <=> larger key. Every NaN (any sign or payload) maps to the largest key, so all NaNs
// tie with each other and rank above +inf; -0 maps to the key of +0 (they tie, as with `>`). A
// positive number gets its bits with the sign bit set (above every negative one), a negative
// number its inverted bits (a larger magnitude is smaller).
template <class T>
UPCYCLE_HD inline order_key_t<T> order_key(T v) {
  using K = order_key_t<T>;
  constexpr int kBits = 8 * static_cast<int>(sizeof(K));
  constexpr K kSign = K{1} << (kBits - 1);
  // Exponent all ones: |bits| above it is NaN, equal to it is inf.
  constexpr K kInf = static_cast<K>(sizeof(K) == 4 ? 0x7F800000ull : 0x7FF0000000000000ull);
  K b = bits_of(v);
  if ((b & ~kSign) > kInf) return ~K{0};
  if (b == kSign) b = 0;
  return (b & kSign) ? static_cast<K>(~b) : static_cast<K>(b | kSign);
}

// A candidate of a top-k selection: the key of x[r, idx] and idx; idx < 0 marks an empty slot.
template <class K>
struct KeyIdx {
  K key;
  std::int64_t idx;
};

// Whether candidate a comes before b in descending order (larger key first, then lower index);
// an empty slot comes after everything.
template <class K>
UPCYCLE_HD inline bool ranks_before(const KeyIdx<K>& a, const KeyIdx<K>& b) {
  if (b.idx < 0) return a.idx >= 0;
  if (a.idx < 0) return false;
  return a.key > b.key || (a.key == b.key && a.idx < b.idx);
}

// The better of two candidates. The order is total, so every lane of a butterfly reduction ends
// with the same winner whatever order it met the candidates in.
template <class K>
UPCYCLE_HD inline KeyIdx<K> better_of(const KeyIdx<K>& a, const KeyIdx<K>& b) {
  return ranks_before(a, b) ? a : b;
}

// A thread's best N candidates, sorted (slot 0 the best). N is a compile-time constant and every
// loop is unrolled, so the list lives in registers.
template <class K, int N>
struct TopList {
  K key[N];
  std::int64_t idx[N];

  UPCYCLE_HD void clear() {
UPCYCLE_TOPK_UNROLL
    for (int p = 0; p < N; ++p) {
      key[p] = 0;
      idx[p] = -1;
    }
  }

  UPCYCLE_HD KeyIdx<K> head() const { return {key[0], idx[0]}; }

  // Inserts c if it beats the worst entry (shifting the worse ones down by one).
  UPCYCLE_HD void insert(const KeyIdx<K>& c) {
    if (!ranks_before(c, KeyIdx<K>{key[N - 1], idx[N - 1]})) return;
    bool placed = false;
UPCYCLE_TOPK_UNROLL
    for (int p = N - 1; p > 0; --p) {
      if (!placed) {
        if (ranks_before(c, KeyIdx<K>{key[p - 1], idx[p - 1]})) {
          key[p] = key[p - 1];
          idx[p] = idx[p - 1];
        } else {
          key[p] = c.key;
          idx[p] = c.idx;
          placed = true;
        }
      }
    }
    if (!placed) {
      key[0] = c.key;
      idx[0] = c.idx;
    }
  }

  // Drops the head (after it won a round of the merge).
  UPCYCLE_HD void pop() {
UPCYCLE_TOPK_UNROLL
    for (int p = 0; p + 1 < N; ++p) {
      key[p] = key[p + 1];
      idx[p] = idx[p + 1];
    }
    key[N - 1] = 0;
    idx[N - 1] = -1;
  }
};

// The list length used for a top-k: the smallest of 2, 4, 8, 16 that holds k (0 when k is too
// large for a register list and the rows are sorted instead).
UPCYCLE_HD inline int topk_list_size(std::int64_t k) {
  if (k <= 2) return 2;
  if (k <= 4) return 4;
  if (k <= 8) return 8;
  if (k <= 16) return 16;
  return 0;
}

// The key argsort sorts ascending: the order key, inverted for a descending sort. A stable sort of
// these keys ties equal values by the lower index, as the CPU's comparators do.
template <class T>
UPCYCLE_HD inline order_key_t<T> argsort_key(T v, bool descending) {
  const order_key_t<T> k = order_key(v);
  return descending ? static_cast<order_key_t<T>>(~k) : k;
}

}  // namespace upcycle::cuda
