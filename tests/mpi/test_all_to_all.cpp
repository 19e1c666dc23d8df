// The differentiable all_to_all_v: forward is the exchange, backward the reverse exchange. Data
// and gradients are integers or exactly representable in double, so everything compares exactly.
#include <gtest/gtest.h>

#include <vector>

#include "exchange_pattern.hpp"
#include "gradcheck.hpp"
#include "upcycle/dist/all_to_all.hpp"
#include "upcycle/dist/world.hpp"
#include "upcycle/ops/elementwise.hpp"
#include "upcycle/ops/reduce.hpp"

namespace upcycle {
namespace {

using testing::as_doubles;
using testing::CountFn;

const Shape kRow{2, 3};

class AllToAllOpTest : public ::testing::TestWithParam<CountFn> {
 protected:
  std::shared_ptr<Communicator> world = make_world_communicator();
  const int W = world->size();
  const int r = world->rank();
  CountFn count = GetParam();
  testing::Exchange x = testing::exchange_for(count, r, W);
};

// The seed rank `dst` puts on the row j it received from rank `src`: distinct for every row
// and element, so a gradient sent to the wrong rank or position shows.
double seed_value(int dst, int src, std::int64_t j, std::int64_t e) {
  return 3.0 * testing::row_value(src, dst, j, e) + 7.0 * dst + 0.5;
}

TEST_P(AllToAllOpTest, ForwardIsTheExchange) {
  const Var in(testing::rows_to_send(count, r, W, kRow, DType::f64), true);
  const Var out = all_to_all_v(*world, in, x.send_counts, x.recv_counts);
  EXPECT_TRUE(out.requires_grad());
  EXPECT_EQ(out.shape().ndim(), 3);
  EXPECT_EQ(as_doubles(out.value()), testing::rows_expected(count, r, W, kRow));
}

TEST_P(AllToAllOpTest, BackwardIsTheReverseExchange) {
  const Var in(testing::rows_to_send(count, r, W, kRow, DType::f64), true);
  const Var out = all_to_all_v(*world, in, x.send_counts, x.recv_counts);
  std::vector<double> seed, want;
  for (int s = 0; s < W; ++s)
    for (std::int64_t j = 0; j < count(s, r, W); ++j)
      for (std::int64_t e = 0; e < kRow.numel(); ++e) seed.push_back(seed_value(r, s, j, e));
  for (int d = 0; d < W; ++d)
    for (std::int64_t j = 0; j < count(r, d, W); ++j)
      for (std::int64_t e = 0; e < kRow.numel(); ++e) want.push_back(seed_value(d, r, j, e));
  out.backward(Tensor::from_vector<double>(seed, out.shape(), Device::cpu));
  ASSERT_TRUE(in.grad().defined());
  EXPECT_EQ(in.grad().shape(), in.shape());
  EXPECT_EQ(as_doubles(in.grad()), want);
}

TEST_P(AllToAllOpTest, RoundTripIsTheIdentity) {
  const Var in(testing::random_tensor(testing::rows_to_send(count, r, W, kRow, DType::f64).shape(), 100 + r),
               true);
  const Var there = all_to_all_v(*world, in, x.send_counts, x.recv_counts);
  const Var back = all_to_all_v(*world, there, x.recv_counts, x.send_counts);
  EXPECT_EQ(back.value().to_vector<double>(), in.value().to_vector<double>());
  const Tensor seed = testing::random_tensor(in.shape(), 200 + r);
  back.backward(seed);
  EXPECT_EQ(in.grad().to_vector<double>(), seed.to_vector<double>());
}

TEST_P(AllToAllOpTest, GradientFlowsThroughALoss) {
  // loss = sum(out^2) on every rank: d loss / d out = 2 out, which the reverse exchange returns to
  // the rows' sources, so d loss / d in = 2 in -- also on ranks that received no rows.
  const Var in(testing::rows_to_send(count, r, W, kRow, DType::f64), true);
  const Var loss = sum_all(square(all_to_all_v(*world, in, x.send_counts, x.recv_counts)));
  loss.backward();
  std::vector<double> want = as_doubles(in.value());
  for (double& v : want) v *= 2;
  EXPECT_EQ(as_doubles(in.grad()), want);
}

TEST_P(AllToAllOpTest, WithoutGradientsItIsAPlainExchange) {
  const Var ids(testing::rows_to_send(count, r, W, kRow, DType::i64));
  const Var moved = all_to_all_v(*world, ids, x.send_counts, x.recv_counts);
  EXPECT_FALSE(moved.requires_grad());
  EXPECT_EQ(as_doubles(moved.value()), testing::rows_expected(count, r, W, kRow));
  NoGradGuard no_grad;
  const Var in(testing::rows_to_send(count, r, W, kRow, DType::f32), true);
  EXPECT_FALSE(all_to_all_v(*world, in, x.send_counts, x.recv_counts).requires_grad());
}

INSTANTIATE_TEST_SUITE_P(Patterns, AllToAllOpTest,
                         ::testing::Values(&testing::irregular_count, &testing::dense_count),
                         [](const ::testing::TestParamInfo<CountFn>& info) {
                           return info.param == &testing::irregular_count ? "Irregular" : "Dense";
                         });

TEST(AllToAllOp, NeedsASharedCommunicator) {
  SelfCommunicator on_stack;  // backward could outlive it, so the op refuses it
  const Var in(Tensor::zeros({2, 3}, DType::f32, Device::cpu), true);
  EXPECT_THROW(all_to_all_v(on_stack, in, {2}, {2}), Error);
}

}  // namespace
}  // namespace upcycle
