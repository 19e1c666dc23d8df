// Shape ops and the layout kernels under them: forward against index arithmetic written out in
// the test, backward against finite differences.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "gradcheck.hpp"
#include "upcycle/backend/backend.hpp"
#include "upcycle/ops/elementwise.hpp"
#include "upcycle/ops/shape.hpp"

using namespace upcycle;
using upcycle::testing::gradcheck;
using upcycle::testing::random_tensor;

namespace {

std::vector<double> values(const Var& v) { return v.value().to(DType::f64).to_vector<double>(); }

// Row-major strides of a shape.
std::vector<std::int64_t> strides_of(const Shape& s) {
  std::vector<std::int64_t> st(static_cast<std::size_t>(s.ndim()), 1);
  for (int i = s.ndim() - 2; i >= 0; --i) st[static_cast<std::size_t>(i)] = st[static_cast<std::size_t>(i + 1)] * s[i + 1];
  return st;
}

// out[j0, .., jn] = in[i] with i[perm[k]] = j[k], by explicit index decomposition.
template <class T>
std::vector<T> permute_reference(const std::vector<T>& in, const Shape& s, const std::vector<int>& perm) {
  const int n = s.ndim();
  const auto in_st = strides_of(s);
  Shape os;
  for (int k = 0; k < n; ++k) os.push_back(s[perm[static_cast<std::size_t>(k)]]);
  std::vector<T> out(in.size());
  for (std::int64_t flat = 0; flat < os.numel(); ++flat) {
    std::int64_t rest = flat, src = 0;
    for (int k = n - 1; k >= 0; --k) {
      const std::int64_t j = rest % os[k];
      rest /= os[k];
      src += j * in_st[static_cast<std::size_t>(perm[static_cast<std::size_t>(k)])];
    }
    out[static_cast<std::size_t>(flat)] = in[static_cast<std::size_t>(src)];
  }
  return out;
}

void check_permute(const Tensor& x, const std::vector<int>& perm) {
  SCOPED_TRACE(describe(x));
  Var y = permute(Var(x), perm);
  for (int k = 0; k < x.ndim(); ++k) ASSERT_EQ(y.dim(k), x.dim(perm[static_cast<std::size_t>(k)]));
  ASSERT_EQ(y.dtype(), x.dtype());
  // Permutation only moves elements: results must be bit-identical.
  if (x.dtype() == DType::f32)
    EXPECT_EQ(y.value().to_vector<float>(), permute_reference(x.to_vector<float>(), x.shape(), perm));
  else if (x.dtype() == DType::f64)
    EXPECT_EQ(y.value().to_vector<double>(), permute_reference(x.to_vector<double>(), x.shape(), perm));
  else
    EXPECT_EQ(y.value().to_vector<std::int64_t>(), permute_reference(x.to_vector<std::int64_t>(), x.shape(), perm));
}

std::string perm_str(const std::vector<int>& p) {
  std::string s;
  for (int v : p) s += std::to_string(v) + " ";
  return s;
}

}  // namespace

TEST(Reshape, IsAViewWithReshapedGradient) {
  Tensor x = random_tensor({2, 3, 4}, 41);
  Var v(x);
  Var y = reshape(v, {4, -1});
  ASSERT_EQ(y.shape(), (Shape{4, 6}));
  EXPECT_TRUE(y.value().same_storage(x));
  EXPECT_EQ(values(y), x.to_vector<double>());
  EXPECT_THROW(reshape(v, {5, -1}), Error);
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return reshape(in[0], {6, 4}); }, {x}));
  // The gradient comes back in the input's shape even through a chain of reshapes.
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return square(reshape(reshape(in[0], {24}), {3, 8})); }, {x}));
}

TEST(Transpose, ForwardAndGradient) {
  Tensor x = random_tensor({2, 3, 4}, 42);
  Var y = transpose(Var(x), 0, 2);
  ASSERT_EQ(y.shape(), (Shape{4, 3, 2}));
  const auto got = values(y);
  const double* p = x.data<double>();
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) EXPECT_EQ(got[static_cast<std::size_t>((k * 3 + j) * 2 + i)], p[(i * 3 + j) * 4 + k]);
  check_permute(x, {0, 2, 1});
  EXPECT_EQ(values(transpose(Var(x), -1, -2)), values(permute(Var(x), {0, 2, 1})));
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return transpose(in[0], 0, 2); }, {x}));
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return transpose(in[0], -1, -2); }, {x}));
}

TEST(Permute, FourDimensionalForwardAndGradient) {
  Tensor x = random_tensor({2, 3, 4, 5}, 43);
  const std::vector<int> perm{2, 0, 3, 1};
  Var y = permute(Var(x), perm);
  ASSERT_EQ(y.shape(), (Shape{4, 2, 5, 3}));
  const auto got = values(y);
  const double* p = x.data<double>();
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 3; ++b)
      for (int c = 0; c < 4; ++c)
        for (int d = 0; d < 5; ++d)  // y[c, a, d, b] = x[a, b, c, d]
          EXPECT_EQ(got[static_cast<std::size_t>(((c * 2 + a) * 5 + d) * 3 + b)], p[((a * 3 + b) * 4 + c) * 5 + d]);
  EXPECT_TRUE(gradcheck([&](const std::vector<Var>& in) { return permute(in[0], perm); }, {x}));
}

TEST(Permute, EveryPermutationMatchesReference) {
  // All 24 orders of a 4-D tensor and all 120 of a 5-D one with a size-1 dim, which exercise
  // the dim merging, the contiguous-row path and the tiled path.
  for (const Shape& s : {Shape{2, 3, 4, 5}, Shape{3, 1, 2, 4, 2}}) {
    Tensor x = random_tensor(s, 44);
    std::vector<int> perm(static_cast<std::size_t>(s.ndim()));
    std::iota(perm.begin(), perm.end(), 0);
    do {
      SCOPED_TRACE(perm_str(perm));
      check_permute(x, perm);
    } while (std::next_permutation(perm.begin(), perm.end()));
  }
}

TEST(Permute, LargeLayoutsAcrossThreadsAndTiles) {
  // Sizes not multiples of the 16-wide tiles, and above the OpenMP threshold.
  check_permute(random_tensor({4, 130, 70}, 45, -1, 1, DType::f32), {0, 2, 1});     // batched last-two swap
  check_permute(random_tensor({2, 50, 8, 48}, 46, -1, 1, DType::f32), {0, 2, 1, 3});  // heads swap
  check_permute(random_tensor({70, 600}, 47, -1, 1, DType::f32), {1, 0});
  check_permute(random_tensor({3, 40, 33, 17}, 48), {3, 1, 0, 2});
  check_permute(random_tensor({1, 1, 1}, 49), {2, 0, 1});
}

TEST(Permute, MovesIntegerTensorsToo) {
  std::vector<std::int64_t> v(60);
  std::iota(v.begin(), v.end(), 0);
  Tensor x = Tensor::from_vector(v, {3, 4, 5}, Device::cpu);
  Tensor out = Tensor::empty({5, 3, 4}, DType::i64, Device::cpu);
  const int perm[3] = {2, 0, 1};
  backend_for(Device::cpu).permute(x, out, perm);
  EXPECT_EQ(out.to_vector<std::int64_t>(), permute_reference(v, x.shape(), {2, 0, 1}));
}

TEST(Permute, InvalidPermutationsThrow) {
  Var x(random_tensor({2, 3, 4}, 50));
  EXPECT_THROW(permute(x, {0, 0, 1}), Error);
  EXPECT_THROW(permute(x, {0, 1}), Error);
  EXPECT_THROW(permute(x, {0, 1, 3}), Error);
  Tensor wrong = Tensor::empty({2, 3, 4}, DType::f64, Device::cpu);
  const int perm[3] = {2, 1, 0};
  EXPECT_THROW(backend_for(Device::cpu).permute(x.value(), wrong, perm), Error);
}

TEST(Concat, ThreeTensorsOnTheMiddleAxis) {
  Tensor a = random_tensor({2, 1, 4}, 51), b = random_tensor({2, 3, 4}, 52), c = random_tensor({2, 2, 4}, 53);
  Var y = concat({Var(a), Var(b), Var(c)}, 1);
  ASSERT_EQ(y.shape(), (Shape{2, 6, 4}));
  const auto got = values(y);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 6; ++j)
      for (int k = 0; k < 4; ++k) {
        const double want = j < 1   ? a.data<double>()[(i * 1 + j) * 4 + k]
                            : j < 4 ? b.data<double>()[(i * 3 + (j - 1)) * 4 + k]
                                    : c.data<double>()[(i * 2 + (j - 4)) * 4 + k];
        EXPECT_EQ(got[static_cast<std::size_t>((i * 6 + j) * 4 + k)], want);
      }
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return concat(in, 1); }, {a, b, c}));
  // A constant input gets no gradient and does not disturb the others.
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return concat(in, -2); }, {a, b, c}, {}, {1}));
}

TEST(Concat, FirstAndLastAxis) {
  Tensor a = random_tensor({2, 3}, 54), b = random_tensor({1, 3}, 55), c = random_tensor({2, 2}, 56);
  Var rows = concat({Var(a), Var(b)}, 0);
  ASSERT_EQ(rows.shape(), (Shape{3, 3}));
  auto want = a.to_vector<double>();
  for (double v : b.to_vector<double>()) want.push_back(v);
  EXPECT_EQ(values(rows), want);
  Var cols = concat({Var(a), Var(c)}, -1);
  ASSERT_EQ(cols.shape(), (Shape{2, 5}));
  const auto got = values(cols);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 5; ++j)
      EXPECT_EQ(got[static_cast<std::size_t>(i * 5 + j)], j < 3 ? a.data<double>()[i * 3 + j] : c.data<double>()[i * 2 + j - 3]);
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return concat(in, 0); }, {a, b}));
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return concat(in, 1); }, {a, c}));
}

TEST(Concat, MismatchedInputsThrow) {
  Var a(random_tensor({2, 3}, 57)), b(random_tensor({3, 3}, 58));
  EXPECT_THROW(concat({a, b}, 1), Error);
  EXPECT_THROW(concat({a, Var(random_tensor({2, 3}, 59, -1, 1, DType::f32))}, 0), Error);
  EXPECT_THROW(concat({}, 0), Error);
}

TEST(Split, PiecesAndGradient) {
  Tensor x = random_tensor({2, 6, 3}, 60);
  const std::vector<std::int64_t> sizes{1, 3, 2};
  const auto pieces = split(Var(x), sizes, 1);
  ASSERT_EQ(pieces.size(), 3u);
  std::int64_t off = 0;
  for (std::size_t p = 0; p < 3; ++p) {
    ASSERT_EQ(pieces[p].shape(), (Shape{2, sizes[p], 3}));
    const auto got = values(pieces[p]);
    for (int i = 0; i < 2; ++i)
      for (std::int64_t j = 0; j < sizes[p]; ++j)
        for (int k = 0; k < 3; ++k)
          EXPECT_EQ(got[static_cast<std::size_t>((i * sizes[p] + j) * 3 + k)], x.data<double>()[(i * 6 + off + j) * 3 + k]);
    off += sizes[p];
  }
  // Every piece used (reordered): each backward fills its own slab and the slabs add up.
  EXPECT_TRUE(gradcheck(
      [&](const std::vector<Var>& in) {
        const auto s = split(in[0], sizes, 1);
        return concat({s[2], mul_scalar(s[0], 3.0), s[1]}, 1);
      },
      {x}));
  // One piece used: the rest of the input gradient is zero.
  EXPECT_TRUE(gradcheck([&](const std::vector<Var>& in) { return split(in[0], sizes, -2)[1]; }, {x}));
  EXPECT_THROW(split(Var(x), {1, 2}, 1), Error);
  EXPECT_THROW(split(Var(x), {7, -1}, 1), Error);
}

TEST(Slice, ForwardAndGradient) {
  Tensor x = random_tensor({3, 5, 2}, 61);
  Var y = slice(Var(x), 1, 1, 4);
  ASSERT_EQ(y.shape(), (Shape{3, 3, 2}));
  const auto got = values(y);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 2; ++k)
        EXPECT_EQ(got[static_cast<std::size_t>((i * 3 + j) * 2 + k)], x.data<double>()[(i * 5 + j + 1) * 2 + k]);
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return slice(in[0], 1, 1, 4); }, {x}));
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return slice(in[0], 0, 2, 3); }, {x}));
  EXPECT_TRUE(gradcheck([](const std::vector<Var>& in) { return slice(in[0], -1, 1, 2); }, {x}));
  EXPECT_THROW(slice(Var(x), 1, 3, 6), Error);
  EXPECT_THROW(slice(Var(x), 1, 3, 2), Error);
  EXPECT_THROW(slice(Var(x), 3, 0, 1), Error);
}

TEST(CopyAxis, CopiesAndAccumulatesSlabs) {
  // src [2, 3, 4] rows 1..2 of the middle axis -> dst [2, 5, 4] rows 2..3.
  Tensor src = random_tensor({2, 3, 4}, 62), dst = random_tensor({2, 5, 4}, 63);
  const auto before = dst.to_vector<double>();
  Backend& be = backend_for(Device::cpu);
  for (bool accumulate : {false, true}) {
    SCOPED_TRACE(accumulate);
    Tensor d = dst.clone();
    be.copy_axis(src, 3, 1, d, 5, 2, 2, 2, 4, accumulate);
    const auto got = d.to_vector<double>();
    for (int o = 0; o < 2; ++o)
      for (int j = 0; j < 5; ++j)
        for (int k = 0; k < 4; ++k) {
          const std::size_t at = static_cast<std::size_t>((o * 5 + j) * 4 + k);
          double want = before[at];
          if (j >= 2 && j < 4) {
            const double s = src.data<double>()[(o * 3 + (j - 2 + 1)) * 4 + k];
            want = accumulate ? want + s : s;
          }
          EXPECT_EQ(got[at], want);
        }
  }
  EXPECT_THROW(be.copy_axis(src, 3, 2, dst, 5, 0, 2, 2, 4, false), Error);  // source slab past the end
  EXPECT_THROW(be.copy_axis(src, 3, 0, dst, 5, 4, 2, 2, 4, false), Error);  // destination slab past the end
  EXPECT_THROW(be.copy_axis(src, 3, 0, dst, 4, 0, 2, 2, 4, false), Error);  // wrong dst axis length
}

TEST(CopyAxis, LargeSlabAcrossThreads) {
  // One outer index with a run longer than a chunk, then many outer indices.
  for (const Shape& s : {Shape{1, 50000, 1}, Shape{4000, 5, 3}}) {
    Tensor src = random_tensor(s, 64, -1, 1, DType::f32);
    Shape ds = s;
    ds[1] = s[1] + 2;
    Tensor dst = Tensor::zeros(ds, DType::f32, Device::cpu);
    backend_for(Device::cpu).copy_axis(src, s[1], 0, dst, ds[1], 1, s[0], s[1], s[2], true);
    const auto a = src.to_vector<float>(), b = dst.to_vector<float>();
    for (std::int64_t o = 0; o < s[0]; ++o)
      for (std::int64_t j = 0; j < ds[1]; ++j)
        for (std::int64_t k = 0; k < s[2]; ++k) {
          const float want = j >= 1 && j <= s[1] ? a[static_cast<std::size_t>((o * s[1] + j - 1) * s[2] + k)] : 0.0f;
          ASSERT_EQ(b[static_cast<std::size_t>((o * ds[1] + j) * s[2] + k)], want);
        }
  }
}
