// The row-major -> column-major mapping of kernels/gemm_math.hpp (what kernels/gemm.cpp and
// kernels/grouped_gemm.cu hand to cuBLAS), checked without a GPU: a naive column-major GEMM run
// with the mapped arguments must give the naive row-major product, for every transpose
// combination, odd sizes, batches with broadcast operands, and the batch folding of the CPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "gemm_math.hpp"

namespace {

using upcycle::cuda::ColMajorGemm;
using upcycle::cuda::col_major_gemm;

// Column-major BLAS semantics: X(i, j) = x[i + j * ld]; op(X) = X^T when trans.
void naive_col_major(const ColMajorGemm& g, double alpha, const double* a, const double* b, double beta,
                     double* c) {
  for (std::int64_t i = 0; i < g.m; ++i)
    for (std::int64_t j = 0; j < g.n; ++j) {
      double s = 0.0;
      for (std::int64_t p = 0; p < g.k; ++p) {
        const double av = g.trans_first ? a[p + i * g.ld_first] : a[i + p * g.ld_first];
        const double bv = g.trans_second ? b[j + p * g.ld_second] : b[p + j * g.ld_second];
        s += av * bv;
      }
      double& cv = c[i + j * g.ldc];
      cv = alpha * s + (beta == 0.0 ? 0.0 : beta * cv);
    }
}

// Row-major: op(A) is m x k, A stored k x m when trans_a.
void naive_row_major(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, double alpha,
                     const double* a, const double* b, double beta, double* c) {
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      double s = 0.0;
      for (std::int64_t p = 0; p < k; ++p) {
        const double av = ta ? a[p * m + i] : a[i * k + p];
        const double bv = tb ? b[j * k + p] : b[p * n + j];
        s += av * bv;
      }
      double& cv = c[i * n + j];
      cv = alpha * s + (beta == 0.0 ? 0.0 : beta * cv);
    }
}

std::vector<double> random_vector(std::size_t n, std::mt19937& rng) {
  // Small integers: every sum is exact, so the two orders of summation agree bit for bit.
  std::uniform_int_distribution<int> d(-4, 4);
  std::vector<double> v(n);
  for (double& x : v) x = d(rng);
  return v;
}

TEST(CudaGemmMath, MapsOperandsDimensionsAndLeadingDims) {
  const ColMajorGemm g = col_major_gemm(true, false, 3, 5, 7, 11, 13, 17);
  EXPECT_FALSE(g.trans_first);  // B is not transposed
  EXPECT_TRUE(g.trans_second);  // A is
  EXPECT_EQ(g.m, 5);
  EXPECT_EQ(g.n, 3);
  EXPECT_EQ(g.k, 7);
  EXPECT_EQ(g.ld_first, 5);   // B is 7 x 5 row-major
  EXPECT_EQ(g.ld_second, 3);  // A is stored 7 x 3
  EXPECT_EQ(g.ldc, 5);
  EXPECT_EQ(g.stride_first, 13);
  EXPECT_EQ(g.stride_second, 11);
  EXPECT_EQ(g.stride_c, 17);
  int a = 1, b = 2;
  EXPECT_EQ(upcycle::cuda::first_operand(&a, &b), &b);
  EXPECT_EQ(upcycle::cuda::second_operand(&a, &b), &a);
  const ColMajorGemm h = col_major_gemm(false, true, 3, 5, 7);
  EXPECT_TRUE(h.trans_first);
  EXPECT_FALSE(h.trans_second);
  EXPECT_EQ(h.ld_first, 7);   // B stored 5 x 7
  EXPECT_EQ(h.ld_second, 7);  // A is 3 x 7
}

TEST(CudaGemmMath, ColumnMajorCallGivesTheRowMajorProduct) {
  std::mt19937 rng(7);
  const std::int64_t sizes[][3] = {{1, 1, 1}, {3, 5, 7}, {7, 3, 5}, {5, 7, 3}, {1, 9, 4}, {9, 1, 4},
                                   {4, 4, 1}, {33, 17, 31}, {2, 65, 3}};
  for (const auto& s : sizes)
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb)
        for (double beta : {0.0, 1.0, -0.5}) {
          const std::int64_t m = s[0], n = s[1], k = s[2];
          const auto a = random_vector(static_cast<std::size_t>(m * k), rng);
          const auto b = random_vector(static_cast<std::size_t>(k * n), rng);
          auto c0 = random_vector(static_cast<std::size_t>(m * n), rng);
          auto c1 = c0;
          naive_row_major(ta, tb, m, n, k, 2.0, a.data(), b.data(), beta, c0.data());
          const ColMajorGemm g = col_major_gemm(ta, tb, m, n, k);
          naive_col_major(g, 2.0, upcycle::cuda::first_operand(a.data(), b.data()),
                          upcycle::cuda::second_operand(a.data(), b.data()), beta, c1.data());
          ASSERT_EQ(c0, c1) << "m=" << m << " n=" << n << " k=" << k << " ta=" << ta << " tb=" << tb
                            << " beta=" << beta;
        }
}

// A strided batch (what cublasGemmStridedBatchedEx runs), broadcast operands included.
TEST(CudaGemmMath, StridedBatchWithBroadcastOperands) {
  std::mt19937 rng(11);
  const std::int64_t batch = 3, m = 5, n = 3, k = 7;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb)
      for (int bcast = 0; bcast < 3; ++bcast) {
        const std::int64_t sa = bcast == 1 ? 0 : m * k + 2, sb = bcast == 2 ? 0 : k * n + 1, sc = m * n + 3;
        const auto a = random_vector(static_cast<std::size_t>((batch - 1) * sa + m * k), rng);
        const auto b = random_vector(static_cast<std::size_t>((batch - 1) * sb + k * n), rng);
        auto c0 = random_vector(static_cast<std::size_t>((batch - 1) * sc + m * n), rng);
        auto c1 = c0;
        for (std::int64_t i = 0; i < batch; ++i)
          naive_row_major(ta, tb, m, n, k, 1.0, a.data() + i * sa, b.data() + i * sb, 0.5, c0.data() + i * sc);
        const ColMajorGemm g = col_major_gemm(ta, tb, m, n, k, sa, sb, sc);
        for (std::int64_t i = 0; i < batch; ++i)
          naive_col_major(g, 1.0, b.data() + i * g.stride_first, a.data() + i * g.stride_second, 0.5,
                          c1.data() + i * g.stride_c);
        ASSERT_EQ(c0, c1) << "ta=" << ta << " tb=" << tb << " broadcast=" << bcast;
      }
}

// The CPU's folding of a batch against one shared B into a single taller product.
TEST(CudaGemmMath, FoldedBatchIsOneTallProduct) {
  std::mt19937 rng(3);
  const std::int64_t batch = 4, m = 3, n = 5, k = 7;
  EXPECT_TRUE(upcycle::cuda::gemm_batch_folds(batch, false, m, n, k, m * k, 0, m * n));
  EXPECT_FALSE(upcycle::cuda::gemm_batch_folds(1, false, m, n, k, m * k, 0, m * n));
  EXPECT_FALSE(upcycle::cuda::gemm_batch_folds(batch, true, m, n, k, m * k, 0, m * n));
  EXPECT_FALSE(upcycle::cuda::gemm_batch_folds(batch, false, m, n, k, m * k, k * n, m * n));
  EXPECT_FALSE(upcycle::cuda::gemm_batch_folds(batch, false, m, n, k, m * k + 1, 0, m * n));
  EXPECT_FALSE(upcycle::cuda::gemm_batch_folds(batch, false, m, n, k, m * k, 0, 0));
  for (int tb = 0; tb < 2; ++tb) {
    const auto a = random_vector(static_cast<std::size_t>(batch * m * k), rng);
    const auto b = random_vector(static_cast<std::size_t>(k * n), rng);
    auto c0 = random_vector(static_cast<std::size_t>(batch * m * n), rng);
    auto c1 = c0;
    for (std::int64_t i = 0; i < batch; ++i)
      naive_row_major(false, tb, m, n, k, 1.0, a.data() + i * m * k, b.data(), 0.0, c0.data() + i * m * n);
    const ColMajorGemm g = col_major_gemm(false, tb, batch * m, n, k);
    naive_col_major(g, 1.0, b.data(), a.data(), 0.0, c1.data());
    ASSERT_EQ(c0, c1) << "tb=" << tb;
  }
}

TEST(CudaGemmMath, OverlappingBatchesRunInOrder) {
  EXPECT_TRUE(upcycle::cuda::gemm_batch_in_order(3, 4, 0));    // accumulate into one C
  EXPECT_TRUE(upcycle::cuda::gemm_batch_in_order(3, 4, 11));   // overlapping
  EXPECT_FALSE(upcycle::cuda::gemm_batch_in_order(3, 4, 12));  // packed
  EXPECT_FALSE(upcycle::cuda::gemm_batch_in_order(3, 4, 20));  // gaps
}

}  // namespace
