// topk (values and indices, ties, gradient), gather_last, and the argsort kernel.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "gradcheck.hpp"
#include "upcycle/backend/backend.hpp"
#include "upcycle/ops/topk.hpp"

namespace upcycle {
namespace {

using testing::gradcheck;
using testing::random_tensor;

// Indices of each row ordered by value, stably (ties keep index order), descending or ascending.
std::vector<std::int64_t> reference_order(const std::vector<double>& x, std::int64_t cols, bool descending) {
  std::vector<std::int64_t> out;
  for (std::size_t r = 0; r * cols < x.size(); ++r) {
    std::vector<std::int64_t> idx(cols);
    std::iota(idx.begin(), idx.end(), 0);
    const double* row = x.data() + r * cols;
    std::stable_sort(idx.begin(), idx.end(), [&](std::int64_t a, std::int64_t b) {
      return descending ? row[a] > row[b] : row[a] < row[b];
    });
    out.insert(out.end(), idx.begin(), idx.end());
  }
  return out;
}

// Checks topk(x, k) against the first k entries of the reference order of each row.
void expect_topk_matches_reference(const Tensor& x, std::int64_t k) {
  const std::int64_t cols = x.dim(-1), rows = x.numel() / cols;
  const std::vector<double> xv = x.to(DType::f64).to_vector<double>();
  const std::vector<std::int64_t> order = reference_order(xv, cols, true);
  const TopK top = topk(Var(x), k);
  Shape expected = x.shape();
  expected[expected.ndim() - 1] = k;
  ASSERT_EQ(top.values.shape(), expected);
  ASSERT_EQ(top.indices.shape(), expected);
  ASSERT_EQ(top.indices.dtype(), DType::i64);
  const std::vector<double> values = top.values.value().to(DType::f64).to_vector<double>();
  const std::vector<std::int64_t> idx = top.indices.to_vector<std::int64_t>();
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t j = 0; j < k; ++j) {
      const std::int64_t want = order[r * cols + j];
      ASSERT_EQ(idx[r * k + j], want) << "row " << r << " rank " << j;
      ASSERT_EQ(values[r * k + j], xv[r * cols + want]) << "row " << r << " rank " << j;
    }
}

TEST(TopK, TiesGoToTheLowerIndexFirst) {
  const Tensor x = Tensor::from_vector<double>({1, 3, 3, 2, 3, 0,  //
                                                -1, -1, -1, -1, -2, -1},
                                               {2, 6}, Device::cpu);
  const TopK top = topk(Var(x), 4);
  EXPECT_EQ(top.indices.to_vector<std::int64_t>(), (std::vector<std::int64_t>{1, 2, 4, 3, 0, 1, 2, 3}));
  EXPECT_EQ(top.values.value().to_vector<double>(), (std::vector<double>{3, 3, 3, 2, -1, -1, -1, -1}));
  expect_topk_matches_reference(x, 6);
}

TEST(TopK, MatchesReferenceForRandomInputs) {
  // Values from a small set make ties common.
  Tensor x = random_tensor({4, 3, 50}, 1, 0.0, 8.0);
  std::vector<double> v = x.to_vector<double>();
  for (double& e : v) e = std::floor(e);
  x = Tensor::from_vector(v, x.shape(), Device::cpu);
  for (std::int64_t k : {0, 1, 5, 50}) {
    expect_topk_matches_reference(x, k);
    expect_topk_matches_reference(x.to(DType::f32), k);
  }
}

// 400 x 100 elements runs the OpenMP path (per-thread index buffers).
TEST(TopK, ParallelPathMatchesReference) {
  expect_topk_matches_reference(random_tensor({400, 100}, 2), 7);
}

TEST(TopK, RejectsKAboveTheRowLength) {
  EXPECT_THROW(topk(Var(random_tensor({2, 5}, 3)), 6), Error);
  EXPECT_THROW(topk(Var(random_tensor({2, 5}, 3)), -1), Error);
}

// x[r, j] = 0.25 * ((5 j + 3 r) mod 8) + noise in [0, 0.1): entries of a row differ by at least
// 0.15, far beyond the finite-difference step, so the selection is the same at x +- eps.
Tensor separated_values(std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
  std::vector<double> v = random_tensor({rows, cols}, seed, 0.0, 0.1).to_vector<double>();
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t j = 0; j < cols; ++j) v[r * cols + j] += 0.25 * ((5 * j + 3 * r) % 8);
  return Tensor::from_vector(v, {rows, cols}, Device::cpu);
}

TEST(TopK, GradientFlowsToTheSelectedEntries) {
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return topk(in[0], 3).values; },
                        {separated_values(6, 8, 4).reshape({2, 3, 8})}));
  // Explicitly: the gradient is the seed at the selected positions and zero elsewhere.
  Var x(separated_values(1, 8, 5), true);
  const TopK top = topk(x, 2);
  top.values.backward(Tensor::from_vector<double>({10.0, 20.0}, {1, 2}, Device::cpu));
  const std::vector<std::int64_t> idx = top.indices.to_vector<std::int64_t>();
  const std::vector<double> g = x.grad().to_vector<double>();
  for (std::int64_t j = 0; j < 8; ++j)
    EXPECT_EQ(g[j], j == idx[0] ? 10.0 : j == idx[1] ? 20.0 : 0.0) << j;
}

TEST(GatherLast, ForwardAndGradientWithRepeatedIndices) {
  const Tensor x = random_tensor({2, 3, 5}, 6);
  const Tensor idx = Tensor::from_vector<std::int64_t>({4, 0, 4, 1, 1, 1, 0, 2, 3, 3, 4, 0, 2, 2, 0, 1, 3, 4}, {2, 3, 3}, Device::cpu);
  const std::vector<double> xv = x.to_vector<double>();
  const std::vector<std::int64_t> iv = idx.to_vector<std::int64_t>();
  const std::vector<double> out = gather_last(Var(x), idx).value().to_vector<double>();
  for (std::int64_t r = 0; r < 6; ++r)
    for (std::int64_t j = 0; j < 3; ++j) EXPECT_EQ(out[r * 3 + j], xv[r * 5 + iv[r * 3 + j]]);
  EXPECT_TRUE(gradcheck([&](const std::vector<Var>& in) { return gather_last(in[0], idx); }, {x}));
  EXPECT_THROW(gather_last(Var(x), Tensor::zeros({2, 2, 3}, DType::i64, Device::cpu)), Error);  // leading shape
}

TEST(Argsort, StableInBothDirections) {
  Tensor x = random_tensor({5, 40}, 7, 0.0, 6.0);
  std::vector<double> v = x.to_vector<double>();
  for (double& e : v) e = std::floor(e);  // many ties
  x = Tensor::from_vector(v, x.shape(), Device::cpu);
  Backend& be = backend_for(Device::cpu);
  for (DType dt : {DType::f64, DType::f32}) {
    for (bool descending : {false, true}) {
      Tensor idx = Tensor::empty({5, 40}, DType::i64, Device::cpu);
      be.argsort(x.to(dt), descending, idx);
      EXPECT_EQ(idx.to_vector<std::int64_t>(), reference_order(v, 40, descending))
          << dtype_name(dt) << (descending ? " descending" : " ascending");
    }
  }
  // 300 x 200 runs the OpenMP path.
  const Tensor big = random_tensor({300, 200}, 8);
  Tensor idx = Tensor::empty({300, 200}, DType::i64, Device::cpu);
  be.argsort(big, true, idx);
  EXPECT_EQ(idx.to_vector<std::int64_t>(), reference_order(big.to_vector<double>(), 200, true));
}

TEST(Argsort, NaNRanksAboveEveryNumber) {
  const Tensor x = Tensor::from_vector<double>({2.0, std::nan(""), 1.0, 3.0}, {1, 4}, Device::cpu);
  Tensor idx = Tensor::empty({1, 4}, DType::i64, Device::cpu);
  backend_for(Device::cpu).argsort(x, false, idx);
  EXPECT_EQ(idx.to_vector<std::int64_t>(), (std::vector<std::int64_t>{2, 0, 3, 1}));
  backend_for(Device::cpu).argsort(x, true, idx);
  EXPECT_EQ(idx.to_vector<std::int64_t>(), (std::vector<std::int64_t>{1, 3, 0, 2}));
}

TEST(Argsort, RejectsNonI64Output) {
  Tensor idx = Tensor::empty({1, 4}, DType::i32, Device::cpu);
  EXPECT_THROW(backend_for(Device::cpu).argsort(random_tensor({1, 4}, 9), false, idx), Error);
}

}  // namespace
}  // namespace upcycle
