// Row gathers, index_add and the last-dim gather/scatter kernels: forward against plain loops,
// backward against finite differences and against explicit counts of repeated indices.
#include <gtest/gtest.h>

#include <cmath>

#include "gradcheck.hpp"
#include "upcycle/backend/backend.hpp"
#include "upcycle/ops/index.hpp"

using namespace upcycle;
using upcycle::testing::gradcheck;
using upcycle::testing::random_tensor;

namespace {

std::vector<double> values(const Var& v) { return v.value().to(DType::f64).to_vector<double>(); }

// Runs `body` and returns the message of the Error it throws ("" when it does not throw).
template <class F>
std::string error_of(F&& body) {
  try {
    body();
  } catch (const Error& e) {
    return e.message();
  }
  return "";
}

}  // namespace

TEST(Embedding, ForwardWithRepeatedIndices) {
  Tensor table = random_tensor({5, 3}, 71);
  Tensor idx = Tensor::from_vector(std::vector<std::int64_t>{0, 2, 2, 4, 0, 2}, {2, 3}, Device::cpu);
  Var y = embedding(Var(table), idx);
  ASSERT_EQ(y.shape(), (Shape{2, 3, 3}));
  const auto got = values(y);
  const auto ids = idx.to_vector<std::int64_t>();
  for (std::size_t i = 0; i < ids.size(); ++i)
    for (int d = 0; d < 3; ++d) EXPECT_EQ(got[i * 3 + static_cast<std::size_t>(d)], table.data<double>()[ids[i] * 3 + d]);
}

TEST(Embedding, GradientAddsUpRepeats) {
  Tensor table = random_tensor({5, 3}, 72);
  for (DType dt : {DType::i64, DType::i32}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor idx = Tensor::from_vector(std::vector<std::int64_t>{0, 2, 2, 4, 0, 2}, {2, 3}, Device::cpu).to(dt);
    EXPECT_TRUE(gradcheck([&](const std::vector<Var>& in) { return embedding(in[0], idx); }, {table}));
    // With a seed of ones, row r of the gradient is (number of times r was looked up) everywhere.
    Var leaf(table, true);
    embedding(leaf, idx).backward(Tensor::full({2, 3, 3}, 1.0, DType::f64, Device::cpu));
    const double counts[5] = {2, 0, 3, 0, 1};
    const auto g = leaf.grad().to_vector<double>();
    for (int r = 0; r < 5; ++r)
      for (int d = 0; d < 3; ++d) EXPECT_EQ(g[static_cast<std::size_t>(r * 3 + d)], counts[r]) << "row " << r;
  }
}

TEST(Embedding, OutOfRangeAndBadIndexTensorsThrow) {
  Var table(random_tensor({5, 3}, 73));
  const std::string msg = error_of([&] { embedding(table, Tensor::from_vector(std::vector<std::int64_t>{1, 5}, {2}, Device::cpu)); });
  EXPECT_NE(msg.find("index 5"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[0, 5)"), std::string::npos) << msg;
  EXPECT_NE(error_of([&] { embedding(table, Tensor::from_vector(std::vector<std::int32_t>{-1}, {1}, Device::cpu)); }).find("index -1"),
            std::string::npos);
  EXPECT_THROW(embedding(table, Tensor::from_vector(std::vector<double>{1.0}, {1}, Device::cpu)), Error);  // floating indices
}

TEST(GatherRows, ForwardAndGradient) {
  Tensor x = random_tensor({6, 4}, 74);
  Tensor idx = Tensor::from_vector(std::vector<std::int32_t>{5, 0, 5, 3, 1}, {5}, Device::cpu);
  Var y = gather_rows(Var(x), idx);
  ASSERT_EQ(y.shape(), (Shape{5, 4}));
  const auto got = values(y);
  const auto ids = idx.to_vector<std::int32_t>();
  for (std::size_t i = 0; i < ids.size(); ++i)
    for (int d = 0; d < 4; ++d) EXPECT_EQ(got[i * 4 + static_cast<std::size_t>(d)], x.data<double>()[ids[i] * 4 + d]);
  EXPECT_TRUE(gradcheck([&](const std::vector<Var>& in) { return gather_rows(in[0], idx); }, {x}));
  EXPECT_THROW(gather_rows(Var(x), Tensor::from_vector(std::vector<std::int32_t>{0, 1}, {1, 2}, Device::cpu)), Error);  // not 1-D
  EXPECT_THROW(gather_rows(Var(x), Tensor::from_vector(std::vector<std::int32_t>{6}, {1}, Device::cpu)), Error);
}

TEST(IndexAddRows, ForwardAndGradient) {
  Tensor src = random_tensor({6, 3}, 75);
  Tensor idx = Tensor::from_vector(std::vector<std::int64_t>{3, 0, 3, 3, 1, 0}, {6}, Device::cpu);
  Var y = index_add_rows(4, idx, Var(src));
  ASSERT_EQ(y.shape(), (Shape{4, 3}));
  std::vector<double> want(12, 0.0);
  const auto ids = idx.to_vector<std::int64_t>();
  for (std::size_t i = 0; i < ids.size(); ++i)
    for (int d = 0; d < 3; ++d) want[static_cast<std::size_t>(ids[i] * 3 + d)] += src.data<double>()[i * 3 + static_cast<std::size_t>(d)];
  const auto got = values(y);
  for (std::size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-15);
  EXPECT_TRUE(gradcheck([&](const std::vector<Var>& in) { return index_add_rows(4, idx, in[0]); }, {src}));
  EXPECT_THROW(index_add_rows(3, idx, Var(src)), Error);                     // index 3 >= 3 rows
  EXPECT_THROW(index_add_rows(4, idx, Var(random_tensor({5, 3}, 76))), Error);  // 5 rows for 6 indices
}

TEST(IndexAddRows, KernelRejectsBadIndexBeforeWriting) {
  // The bad index comes last: validation must run before any row is accumulated.
  Tensor out = random_tensor({3, 2}, 77);
  const auto before = out.to_vector<double>();
  Tensor idx = Tensor::from_vector(std::vector<std::int64_t>{0, 1, 7}, {3}, Device::cpu);
  const std::string msg = error_of([&] { backend_for(Device::cpu).index_add_rows(out, idx, random_tensor({3, 2}, 78)); });
  EXPECT_NE(msg.find("index 7 at position 2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[0, 3)"), std::string::npos) << msg;
  EXPECT_EQ(out.to_vector<double>(), before);
}

TEST(IndexAddRows, ManyCollidingRowsAcrossThreads) {
  // N * D far above the OpenMP threshold with only 3 distinct rows, so threads that split the
  // rows would keep racing on the same elements. A race cannot be forced, but at this size it
  // loses updates often enough on a multi-core machine to show here.
  // The sources are multiples of 1/8 in [-1, 1]: every partial sum (|.| <= 20000) is then exact
  // in f32, so the result must equal the reference exactly and any lost update shows.
  const std::int64_t N = 20000, D = 128, V = 3;
  std::vector<std::int32_t> ids(static_cast<std::size_t>(N));
  for (std::int64_t i = 0; i < N; ++i) ids[static_cast<std::size_t>(i)] = static_cast<std::int32_t>((i * 5 + i / 3) % V);
  Tensor idx = Tensor::from_vector(ids, {N}, Device::cpu);
  std::vector<float> s = random_tensor({N, D}, 79).to(DType::f32).to_vector<float>();
  for (float& v : s) v = std::round(v * 8.0f) / 8.0f;
  Tensor src = Tensor::from_vector(s, {N, D}, Device::cpu);
  Var y = index_add_rows(V, idx, Var(src));
  std::vector<double> want(static_cast<std::size_t>(V * D), 0.0);
  for (std::int64_t i = 0; i < N; ++i)
    for (std::int64_t d = 0; d < D; ++d)
      want[static_cast<std::size_t>(ids[static_cast<std::size_t>(i)] * D + d)] += s[static_cast<std::size_t>(i * D + d)];
  const auto got = values(y);
  for (std::size_t i = 0; i < want.size(); ++i) ASSERT_EQ(got[i], want[i]) << "element " << i;
  // And the gather back reproduces the rows exactly.
  Var back = gather_rows(y, idx);
  const auto g = values(back);
  for (std::int64_t i = 0; i < N; ++i)
    for (std::int64_t d = 0; d < D; ++d)
      ASSERT_EQ(g[static_cast<std::size_t>(i * D + d)], got[static_cast<std::size_t>(ids[static_cast<std::size_t>(i)] * D + d)]);
}

TEST(GatherLast, KernelForwardAndErrors) {
  Backend& be = backend_for(Device::cpu);
  Tensor x = random_tensor({2, 3, 5}, 80);
  Tensor idx = Tensor::from_vector(std::vector<std::int64_t>{4, 0, 0, 1, 2, 3, 4, 4, 1, 0, 2, 3}, {2, 3, 2}, Device::cpu);
  Tensor out = Tensor::empty({2, 3, 2}, DType::f64, Device::cpu);
  be.gather_last(x, idx, out);
  const auto ids = idx.to_vector<std::int64_t>();
  for (int r = 0; r < 6; ++r)
    for (int j = 0; j < 2; ++j)
      EXPECT_EQ(out.data<double>()[r * 2 + j], x.data<double>()[r * 5 + ids[static_cast<std::size_t>(r * 2 + j)]]);
  Tensor bad = Tensor::from_vector(std::vector<std::int32_t>{0, 5}, {1, 2}, Device::cpu);
  Tensor x1 = random_tensor({1, 5}, 81), o1 = Tensor::empty({1, 2}, DType::f64, Device::cpu);
  const std::string msg = error_of([&] { be.gather_last(x1, bad, o1); });
  EXPECT_NE(msg.find("index 5 at position 1"), std::string::npos) << msg;
  Tensor wrong_rows = Tensor::from_vector(std::vector<std::int64_t>{0, 1}, {2, 1}, Device::cpu);
  EXPECT_THROW(be.gather_last(x1, wrong_rows, o1), Error);
}

TEST(ScatterAddLast, KernelIsTheAdjointOfGatherLast) {
  // <gather_last(x, idx), s> == <x, scatter_add_last(0, idx, s)> for any x and s, repeats included.
  Backend& be = backend_for(Device::cpu);
  Tensor x = random_tensor({4, 6}, 82), s = random_tensor({4, 3}, 83);
  Tensor idx = Tensor::from_vector(std::vector<std::int32_t>{5, 5, 0, 1, 2, 1, 3, 3, 3, 0, 4, 5}, {4, 3}, Device::cpu);
  Tensor gathered = Tensor::empty({4, 3}, DType::f64, Device::cpu), scattered = Tensor::zeros({4, 6}, DType::f64, Device::cpu);
  be.gather_last(x, idx, gathered);
  be.scatter_add_last(scattered, idx, s);
  double lhs = 0.0, rhs = 0.0;
  for (int i = 0; i < 12; ++i) lhs += gathered.data<double>()[i] * s.data<double>()[i];
  for (int i = 0; i < 24; ++i) rhs += x.data<double>()[i] * scattered.data<double>()[i];
  EXPECT_NEAR(lhs, rhs, 1e-14);
  // Row 2 sends all three entries to column 3.
  const double* sc = scattered.data<double>();
  EXPECT_NEAR(sc[2 * 6 + 3], s.data<double>()[6] + s.data<double>()[7] + s.data<double>()[8], 1e-15);
  EXPECT_EQ(sc[2 * 6 + 0], 0.0);
  Tensor out = Tensor::zeros({1, 2}, DType::f64, Device::cpu);
  const auto before = out.to_vector<double>();
  EXPECT_THROW(be.scatter_add_last(out, Tensor::from_vector(std::vector<std::int64_t>{1, -2}, {1, 2}, Device::cpu),
                                   random_tensor({1, 2}, 84)),
               Error);
  EXPECT_EQ(out.to_vector<double>(), before);
}
