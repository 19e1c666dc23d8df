#pragma once
// Exchange patterns whose every row each rank can predict, shared by the all-to-all tests.
// Row j of the rows rank s sends to rank d holds value(s, d, j, e) at element e, an integer that
// is exact in every dtype, so received data and gradients are compared for equality.
#include <cstdint>
#include <vector>

#include "upcycle/core/tensor.hpp"

namespace upcycle::testing {

// Rows rank `src` sends to rank `dst` in a world of `world` ranks.
using CountFn = std::int64_t (*)(int src, int dst, int world);

// Rank 0 sends nothing, rank world-1 receives nothing, and some other pairs exchange no rows
// either; with one rank nothing moves at all.
inline std::int64_t irregular_count(int src, int dst, int world) {
  if (src == 0 || dst == world - 1) return 0;
  return (3 * src + dst) % 4;
}

// Every pair exchanges at least one row.
inline std::int64_t dense_count(int src, int dst, int) { return src + dst + 1; }

inline double row_value(int src, int dst, std::int64_t j, std::int64_t e) {
  return 1000.0 * src + 100.0 * dst + 10.0 * static_cast<double>(j) + static_cast<double>(e);
}

struct Exchange {
  std::vector<std::int64_t> send_counts, recv_counts;
};

inline Exchange exchange_for(CountFn count, int rank, int world) {
  Exchange x;
  for (int p = 0; p < world; ++p) {
    x.send_counts.push_back(count(rank, p, world));
    x.recv_counts.push_back(count(p, rank, world));
  }
  return x;
}

// The rows `rank` sends ([sum of send counts, row_shape...], dtype), in destination order.
inline Tensor rows_to_send(CountFn count, int rank, int world, const Shape& row_shape, DType dtype) {
  std::vector<double> v;
  std::int64_t rows = 0;
  for (int d = 0; d < world; ++d) {
    for (std::int64_t j = 0; j < count(rank, d, world); ++j, ++rows)
      for (std::int64_t e = 0; e < row_shape.numel(); ++e) v.push_back(row_value(rank, d, j, e));
  }
  Shape shape{rows};
  for (std::int64_t n : row_shape) shape.push_back(n);
  return Tensor::from_vector<double>(v, shape, Device::cpu).to(dtype);
}

// What `rank` must receive, flattened, in source order.
inline std::vector<double> rows_expected(CountFn count, int rank, int world, const Shape& row_shape) {
  std::vector<double> v;
  for (int s = 0; s < world; ++s) {
    for (std::int64_t j = 0; j < count(s, rank, world); ++j)
      for (std::int64_t e = 0; e < row_shape.numel(); ++e) v.push_back(row_value(s, rank, j, e));
  }
  return v;
}

inline std::vector<double> as_doubles(const Tensor& t) { return t.to(DType::f64).to_vector<double>(); }

}  // namespace upcycle::testing
