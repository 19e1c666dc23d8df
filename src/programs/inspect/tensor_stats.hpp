#pragma once
// Statistics of host tensors as read from a checkpoint (f32, f64, i32, i64 as stored), accumulated
// in double precision. Non-finite elements are counted and left out of the sums, so one NaN does
// not hide what the rest of the tensor holds; the counts say that it is there.
#include <cstdint>
#include <vector>

#include "upcycle/core/tensor.hpp"

namespace upcycle::inspect {

struct TensorStats {
  std::int64_t numel = 0;
  std::int64_t nan = 0;
  std::int64_t inf = 0;  // +inf and -inf
  double sum_sq = 0.0;   // of the finite elements
  double mean = 0.0;     // of the finite elements; NaN when there are none
  double std = 0.0;      // population standard deviation (divides by the count), NaN when none
  double min = 0.0, max = 0.0;  // NaN when there are none
  double norm() const;   // L2 norm of the finite elements
  std::int64_t nonfinite() const { return nan + inf; }
};

TensorStats tensor_stats(const Tensor& t);

// Slice e of dim 0 (expert e of an [E, ...] tensor) is row e. Adds to `sum_sq` [E] each row's
// sum of squares, and to `gram` [E * E] the products <row i, row j> (every element included: a
// non-finite one makes the products it enters non-finite).
void add_row_sum_sq(const Tensor& t, std::vector<double>& sum_sq);
void add_row_gram(const Tensor& t, std::vector<double>& gram);

// A - B of two tensors of one shape (any stored dtypes). Sums over the elements where both are
// finite; `nonfinite` counts the others.
struct DiffStats {
  std::int64_t numel = 0;
  std::int64_t nonfinite = 0;
  double max_abs = 0.0;
  double diff_sq = 0.0;  // sum (a - b)^2
  double b_sq = 0.0;     // sum b^2
};
// With row_diff_sq / row_b_sq (size dim 0 of the tensors) also the same sums per row, added.
DiffStats diff_stats(const Tensor& a, const Tensor& b, std::vector<double>* row_diff_sq = nullptr,
                     std::vector<double>* row_b_sq = nullptr);

// ||A - B|| / ||B|| from the sums: 0 when A equals B, +inf when B is zero and A is not.
double relative_norm(double diff_sq, double b_sq);

// Every element as a double (for the small state and upcycling datasets).
std::vector<double> to_doubles(const Tensor& t);

}  // namespace upcycle::inspect
