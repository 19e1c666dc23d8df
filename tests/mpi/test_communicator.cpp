// Collectives on the world communicator (MPI under mpirun) and on its sub-communicators, with
// integer-valued data every rank can predict, so results are compared exactly. The tests hold for
// any number of ranks; CTest runs them with 1, 2 and 4.
// Assertions that stop a test (ASSERT_*) are only used where every rank fails alike, or after
// the test's last collective, so that one failing rank cannot leave the others waiting.
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "exchange_pattern.hpp"
#include "upcycle/dist/world.hpp"

namespace upcycle {
namespace {

using testing::as_doubles;

const DType kDtypes[] = {DType::f32, DType::f64, DType::i32, DType::i64};

class CommunicatorTest : public ::testing::Test {
 protected:
  std::shared_ptr<Communicator> world = make_world_communicator();
  const int W = world->size();
  const int r = world->rank();
};

Tensor from_doubles(const std::vector<double>& v, const Shape& shape, DType dtype) {
  return Tensor::from_vector<double>(v, shape, Device::cpu).to(dtype);
}

TEST_F(CommunicatorTest, WorldMatchesTheLauncher) {
  EXPECT_GE(W, 1);
  EXPECT_GE(r, 0);
  EXPECT_LT(r, W);
}

TEST_F(CommunicatorTest, AllReduceSumIsExactForEveryDtype) {
  for (DType dtype : kDtypes) {
    std::vector<double> v;
    for (int i = 0; i < 5; ++i) v.push_back((r + 1) * (i + 1));
    Tensor t = from_doubles(v, {5}, dtype);
    world->all_reduce(t, CommReduce::sum);
    EXPECT_EQ(t.dtype(), dtype);
    const std::vector<double> got = as_doubles(t);
    for (int i = 0; i < 5; ++i) EXPECT_EQ(got[i], (i + 1) * W * (W + 1) / 2) << dtype_name(dtype) << " i=" << i;
  }
}

TEST_F(CommunicatorTest, AllReduceMaxAndMin) {
  auto value = [](int rank, int i) { return static_cast<double>((7 * rank + 3 * i) % 11) - 5.0; };
  for (DType dtype : kDtypes) {
    for (CommReduce op : {CommReduce::max, CommReduce::min}) {
      std::vector<double> v;
      for (int i = 0; i < 6; ++i) v.push_back(value(r, i));
      Tensor t = from_doubles(v, {2, 3}, dtype);
      world->all_reduce(t, op);
      const std::vector<double> got = as_doubles(t);
      for (int i = 0; i < 6; ++i) {
        double want = value(0, i);
        for (int p = 1; p < W; ++p)
          want = op == CommReduce::max ? std::max(want, value(p, i)) : std::min(want, value(p, i));
        EXPECT_EQ(got[i], want) << dtype_name(dtype) << (op == CommReduce::max ? " max" : " min") << " i=" << i;
      }
    }
  }
}

TEST_F(CommunicatorTest, AllReduceOfAnEmptyTensorIsANoOp) {
  Tensor t = Tensor::zeros({0, 3}, DType::f32, Device::cpu);
  world->all_reduce(t);
  EXPECT_EQ(t.shape(), Shape({0, 3}));
}

// Several asynchronous all-reduces in flight at once, of every dtype and reduction, waited for in
// reverse order: each holds its own result. A large one (1 Mi floats, past MPI's eager sizes) is
// driven by test() alone, as GradReducer's hooks do, and must report completion.
TEST_F(CommunicatorTest, AsyncAllReducesInFlightTogether) {
  std::vector<Tensor> tensors;
  std::vector<std::unique_ptr<CommRequest>> requests;
  std::vector<CommReduce> ops;
  for (DType dtype : kDtypes) {
    for (CommReduce op : {CommReduce::sum, CommReduce::max, CommReduce::min}) {
      std::vector<double> v;
      for (int i = 0; i < 7; ++i) v.push_back((r + 1) * (i + 1) * (op == CommReduce::min ? -1 : 1));
      tensors.push_back(from_doubles(v, {7}, dtype));
      ops.push_back(op);
      requests.push_back(world->all_reduce_async(tensors.back(), op));
    }
  }
  const std::int64_t n = std::int64_t{1} << 20;
  Tensor big = Tensor::full({n}, r + 1, DType::f32, Device::cpu);
  auto big_request = world->all_reduce_async(big);
  for (std::size_t k = requests.size(); k-- > 0;) {
    requests[k]->wait();
    requests[k]->wait();  // a second wait does nothing
    EXPECT_TRUE(requests[k]->test());
    const std::vector<double> got = as_doubles(tensors[k]);
    for (int i = 0; i < 7; ++i) {
      const double want = ops[k] == CommReduce::sum ? (i + 1) * W * (W + 1) / 2.0
                          : ops[k] == CommReduce::max ? (i + 1) * W
                                                      : -(i + 1) * W;
      EXPECT_EQ(got[static_cast<std::size_t>(i)], want) << dtype_name(tensors[k].dtype()) << " request " << k;
    }
  }
  int polls = 0;
  while (!big_request->test()) ++polls;  // progress comes from test() alone
  const std::vector<float> got = big.to_vector<float>();
  const float want = static_cast<float>(W * (W + 1) / 2);
  EXPECT_EQ(std::count(got.begin(), got.end(), want), n) << "after " << polls << " calls of test()";
}

TEST_F(CommunicatorTest, AsyncAllReduceDroppedWithoutWaitStillCompletes) {
  Tensor t = Tensor::full({5}, r + 1, DType::i64, Device::cpu);
  { auto request = world->all_reduce_async(t); }
  EXPECT_EQ(t.to_vector<std::int64_t>(), std::vector<std::int64_t>(5, W * (W + 1) / 2));
  Tensor empty = Tensor::zeros({0}, DType::f32, Device::cpu);
  EXPECT_TRUE(world->all_reduce_async(empty)->test());
}

TEST_F(CommunicatorTest, AllGatherConcatenatesInRankOrder) {
  for (DType dtype : kDtypes) {
    std::vector<double> v;
    for (int i = 0; i < 6; ++i) v.push_back(100 * r + i);
    const Tensor in = from_doubles(v, {2, 3}, dtype);
    Tensor out = Tensor::empty(gathered_shape(in.shape(), W), dtype, Device::cpu);
    EXPECT_EQ(out.shape(), Shape({2 * W, 3}));
    world->all_gather(in, out);
    const std::vector<double> got = as_doubles(out);
    for (int p = 0; p < W; ++p)
      for (int i = 0; i < 6; ++i) EXPECT_EQ(got[6 * p + i], 100 * p + i) << dtype_name(dtype);
  }
}

TEST_F(CommunicatorTest, AllGatherOfScalarsGivesOnePerRank) {
  const Tensor in = Tensor::full({}, 10 + r, DType::i64, Device::cpu);
  Tensor out = Tensor::empty(gathered_shape(in.shape(), W), DType::i64, Device::cpu);
  world->all_gather(in, out);
  const std::vector<std::int64_t> got = out.to_vector<std::int64_t>();
  ASSERT_EQ(got.size(), static_cast<std::size_t>(W));
  for (int p = 0; p < W; ++p) EXPECT_EQ(got[p], 10 + p);
}

TEST_F(CommunicatorTest, ReduceScatterSumsThenScattersBlocks) {
  // Rank q contributes q + i at flat index i of in ([2W, 3]); rank r keeps block r of the sum.
  for (DType dtype : kDtypes) {
    std::vector<double> v;
    for (int i = 0; i < 6 * W; ++i) v.push_back(r + i);
    const Tensor in = from_doubles(v, {2 * W, 3}, dtype);
    Tensor out = Tensor::empty(scattered_shape(in.shape(), W), dtype, Device::cpu);
    EXPECT_EQ(out.shape(), Shape({2, 3}));
    world->reduce_scatter(in, out, CommReduce::sum);
    const std::vector<double> got = as_doubles(out);
    for (int k = 0; k < 6; ++k) EXPECT_EQ(got[k], W * (6 * r + k) + W * (W - 1) / 2) << dtype_name(dtype);
  }
}

TEST_F(CommunicatorTest, ReduceScatterMax) {
  std::vector<double> v;
  for (int i = 0; i < 2 * W; ++i) v.push_back(r * i);
  const Tensor in = from_doubles(v, {2 * W}, DType::i32);
  Tensor out = Tensor::empty({2}, DType::i32, Device::cpu);
  world->reduce_scatter(in, out, CommReduce::max);
  const std::vector<double> got = as_doubles(out);
  for (int k = 0; k < 2; ++k) EXPECT_EQ(got[k], (W - 1) * (2 * r + k));
}

TEST_F(CommunicatorTest, BroadcastFromTheLastRank) {
  const int root = W - 1;  // non-zero whenever there are several ranks
  for (DType dtype : kDtypes) {
    std::vector<double> v;
    for (int i = 0; i < 7; ++i) v.push_back(r == root ? 10 + i : -1);
    Tensor t = from_doubles(v, {7}, dtype);
    world->broadcast(t, root);
    const std::vector<double> got = as_doubles(t);
    for (int i = 0; i < 7; ++i) EXPECT_EQ(got[i], 10 + i) << dtype_name(dtype);
  }
}

TEST_F(CommunicatorTest, ExchangeCountsTransposesTheCountMatrix) {
  std::vector<std::int64_t> send;
  for (int p = 0; p < W; ++p) send.push_back(testing::irregular_count(r, p, W) + 10 * r);
  const std::vector<std::int64_t> recv = world->exchange_counts(send);
  ASSERT_EQ(recv.size(), static_cast<std::size_t>(W));
  for (int p = 0; p < W; ++p) EXPECT_EQ(recv[p], testing::irregular_count(p, r, W) + 10 * p);
}

void check_all_to_all(Communicator& comm, testing::CountFn count, const Shape& row_shape, DType dtype) {
  const int W = comm.size(), r = comm.rank();
  const testing::Exchange x = testing::exchange_for(count, r, W);
  EXPECT_EQ(comm.exchange_counts(x.send_counts), x.recv_counts);
  const Tensor send = testing::rows_to_send(count, r, W, row_shape, dtype);
  Shape recv_shape{0};
  for (std::int64_t c : x.recv_counts) recv_shape[0] += c;
  for (std::int64_t n : row_shape) recv_shape.push_back(n);
  Tensor recv = Tensor::full(recv_shape, -1, dtype, Device::cpu);
  comm.all_to_all_v(send, x.send_counts, recv, x.recv_counts);
  EXPECT_EQ(as_doubles(recv), testing::rows_expected(count, r, W, row_shape))
      << dtype_name(dtype) << " rows of " << row_shape.str() << " on rank " << r << " of " << W;
}

TEST_F(CommunicatorTest, AllToAllVWithIrregularAndZeroCounts) {
  for (DType dtype : kDtypes) check_all_to_all(*world, testing::irregular_count, {2, 3}, dtype);
}

TEST_F(CommunicatorTest, AllToAllVWithEveryPairExchanging) {
  for (DType dtype : kDtypes) check_all_to_all(*world, testing::dense_count, {3}, dtype);
  check_all_to_all(*world, testing::dense_count, {}, DType::i64);  // rows of one element
}

TEST_F(CommunicatorTest, AllToAllVOfEmptyRows) {
  check_all_to_all(*world, testing::dense_count, {0}, DType::f32);
}

TEST_F(CommunicatorTest, BadArgumentsThrowBeforeCommunicating) {
  // Every rank makes the same mistake, so every rank throws and none waits in a collective.
  const Tensor send = Tensor::zeros({3, 2}, DType::f32, Device::cpu);
  Tensor recv = Tensor::zeros({3, 2}, DType::f32, Device::cpu);
  EXPECT_THROW(world->all_to_all_v(send, {3}, recv, std::vector<std::int64_t>(W + 1, 0)), Error);
  std::vector<std::int64_t> too_many(W, 0), valid(W, 0);
  too_many[0] = 4;
  valid[0] = 3;
  EXPECT_THROW(world->all_to_all_v(send, too_many, recv, too_many), Error);
  Tensor other_rows = Tensor::zeros({3, 5}, DType::f32, Device::cpu);
  EXPECT_THROW(world->all_to_all_v(send, valid, other_rows, valid), Error);
  Tensor wrong = Tensor::zeros({3 * W + 1, 2}, DType::f32, Device::cpu);
  EXPECT_THROW(world->all_gather(send, wrong), Error);
  Tensor ints = Tensor::zeros({3 * W, 2}, DType::i32, Device::cpu);
  EXPECT_THROW(world->all_gather(send, ints), Error);
  Tensor t = Tensor::zeros({2}, DType::f32, Device::cpu);
  EXPECT_THROW(world->broadcast(t, W), Error);
  EXPECT_THROW(world->split(-1, 0), Error);
  Tensor odd = Tensor::zeros({2 * W + 1}, DType::f32, Device::cpu);
  Tensor part = Tensor::zeros({2}, DType::f32, Device::cpu);
  EXPECT_THROW(world->reduce_scatter(odd, part), Error);
}

TEST_F(CommunicatorTest, SplitOrdersRanksByKey) {
  // Two groups by parity, ranked in reverse world order.
  const auto sub = world->split(r % 2, -r);
  std::vector<int> members;
  for (int q = W - 1; q >= 0; --q)
    if (q % 2 == r % 2) members.push_back(q);
  EXPECT_EQ(sub->size(), static_cast<int>(members.size()));
  const Tensor me = Tensor::full({}, r, DType::i32, Device::cpu);
  Tensor all = Tensor::empty({sub->size()}, DType::i32, Device::cpu);
  sub->all_gather(me, all);
  const std::vector<std::int32_t> got = all.to_vector<std::int32_t>();
  EXPECT_EQ(std::vector<int>(got.begin(), got.end()), members);
  EXPECT_EQ(members[static_cast<std::size_t>(sub->rank())], r);
}

TEST(ProcessGroupRanks, FollowTheParallelLayout) {
  using V = std::vector<int>;
  // W = 4, P = 2: EP groups {0,1}, {2,3}; expert-DP groups {0,2}, {1,3}.
  EXPECT_EQ(expert_parallel_ranks(4, 2, 0), V({0, 1}));
  EXPECT_EQ(expert_parallel_ranks(4, 2, 3), V({2, 3}));
  EXPECT_EQ(expert_data_parallel_ranks(4, 2, 0), V({0, 2}));
  EXPECT_EQ(expert_data_parallel_ranks(4, 2, 3), V({1, 3}));
  // W = 4, P = 4: one EP group of everybody; every rank its own expert-DP group.
  for (int q = 0; q < 4; ++q) {
    EXPECT_EQ(expert_parallel_ranks(4, 4, q), V({0, 1, 2, 3}));
    EXPECT_EQ(expert_data_parallel_ranks(4, 4, q), V({q}));
  }
  // W = 2, P = 2.
  EXPECT_EQ(expert_parallel_ranks(2, 2, 1), V({0, 1}));
  EXPECT_EQ(expert_data_parallel_ranks(2, 2, 1), V({1}));
  // W = 4, P = 1: pure data parallel.
  EXPECT_EQ(expert_parallel_ranks(4, 1, 2), V({2}));
  EXPECT_EQ(expert_data_parallel_ranks(4, 1, 2), V({0, 1, 2, 3}));
}

TEST(ProcessGroupRanks, RejectAnExpertParallelSizeThatDoesNotDivideTheWorld) {
  EXPECT_THROW(expert_parallel_ranks(4, 3, 0), UsageError);
  EXPECT_THROW(expert_data_parallel_ranks(4, 0, 0), UsageError);
  EXPECT_THROW(expert_parallel_ranks(4, 2, 4), Error);
}

// Members of `group` in its rank order, by gathering world ranks over it.
std::vector<int> members_of(Communicator& group, int world_rank) {
  const Tensor me = Tensor::full({}, world_rank, DType::i32, Device::cpu);
  Tensor all = Tensor::empty({group.size()}, DType::i32, Device::cpu);
  group.all_gather(me, all);
  const std::vector<std::int32_t> got = all.to_vector<std::int32_t>();
  return {got.begin(), got.end()};
}

TEST_F(CommunicatorTest, ProcessGroupsHaveTheLayoutsMembers) {
  for (int P : {1, 2, 4}) {
    if (W % P != 0) continue;  // the sizes this world can hold
    const ProcessGroups g = make_process_groups(world, P);
    EXPECT_EQ(g.world, world);
    EXPECT_EQ(g.expert_parallel->size(), P);
    EXPECT_EQ(g.expert_parallel->rank(), r % P);
    EXPECT_EQ(g.expert_data_parallel->size(), W / P);
    EXPECT_EQ(g.expert_data_parallel->rank(), r / P);
    EXPECT_EQ(members_of(*g.expert_parallel, r), expert_parallel_ranks(W, P, r)) << "P = " << P;
    EXPECT_EQ(members_of(*g.expert_data_parallel, r), expert_data_parallel_ranks(W, P, r)) << "P = " << P;
    // A reduction stays inside its group: the sum of the members' world ranks.
    Tensor t = Tensor::full({1}, r, DType::i64, Device::cpu);
    g.expert_parallel->all_reduce(t);
    std::int64_t want = 0;
    for (int q : expert_parallel_ranks(W, P, r)) want += q;
    EXPECT_EQ(t.item<std::int64_t>(), want) << "P = " << P;
  }
}

TEST_F(CommunicatorTest, ProcessGroupsRejectABadExpertParallelSize) {
  EXPECT_THROW(make_process_groups(world, W + 1), UsageError);  // W + 1 never divides W
}

TEST(SelfCommunicator, EveryCollectiveIsTheIdentity) {
  const auto self = std::make_shared<SelfCommunicator>();
  EXPECT_EQ(self->rank(), 0);
  EXPECT_EQ(self->size(), 1);
  Tensor t = Tensor::from_vector<float>({1, 2, 3}, {3}, Device::cpu);
  self->all_reduce(t, CommReduce::max);
  auto request = self->all_reduce_async(t);
  EXPECT_TRUE(request->test());  // nothing to wait for
  request->wait();
  self->broadcast(t, 0);
  EXPECT_EQ(t.to_vector<float>(), std::vector<float>({1, 2, 3}));
  Tensor out = Tensor::empty({3}, DType::f32, Device::cpu);
  self->all_gather(t, out);
  EXPECT_EQ(out.to_vector<float>(), std::vector<float>({1, 2, 3}));
  Tensor part = Tensor::empty({3}, DType::f32, Device::cpu);
  self->reduce_scatter(out, part);
  EXPECT_EQ(part.to_vector<float>(), std::vector<float>({1, 2, 3}));
  EXPECT_EQ(self->exchange_counts({4}), std::vector<std::int64_t>({4}));
  check_all_to_all(*self, testing::dense_count, {2}, DType::f64);
  const auto sub = self->split(5, 0);
  EXPECT_EQ(sub->size(), 1);
  self->barrier();
}

}  // namespace
}  // namespace upcycle
