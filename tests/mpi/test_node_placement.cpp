// Where each rank runs (dist/world.hpp node_placement, node_max_sharing): the node-local ranks come
// from MPI_Comm_split_type(MPI_COMM_TYPE_SHARED), not from launcher variables, and number the
// ranks of each node 0..n-1 in world-rank order. Ranks are grouped by host name here, so the checks
// hold on one machine (CTest: 1, 2 and 4 ranks) and across several. Also: the world broadcast that
// carries NCCL's unique id, and the GPU binding of a CPU run.
// Every assertion that can stop a test comes after the test's last collective.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "upcycle/dist/comm_backend.hpp"
#include "upcycle/dist/world.hpp"

namespace upcycle {
namespace {

// A stable 63-bit hash of this rank's host name (the node it runs on).
std::int64_t host_hash() {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  return static_cast<std::int64_t>(std::hash<std::string>{}(host) >> 1);
}

std::vector<std::int64_t> gather_i64(Communicator& world, std::int64_t v) {
  Tensor mine = Tensor::from_vector<std::int64_t>({v}, {1}, Device::cpu);
  Tensor all = Tensor::empty({world.size()}, DType::i64, Device::cpu);
  world.all_gather(mine, all);
  return all.to_vector<std::int64_t>();
}

TEST(NodePlacement, LocalRanksNumberTheRanksOfEachNodeInWorldOrder) {
  auto world = make_world_communicator();
  const NodePlacement p = node_placement();
  const auto hosts = gather_i64(*world, host_hash());
  const auto local_ranks = gather_i64(*world, p.local_rank);
  const auto local_sizes = gather_i64(*world, p.local_size);
  const int r = world->rank();
  // This rank's node: the ranks with its host, in world order.
  std::vector<int> node;
  for (int q = 0; q < world->size(); ++q)
    if (hosts[static_cast<std::size_t>(q)] == hosts[static_cast<std::size_t>(r)]) node.push_back(q);
  EXPECT_EQ(p.local_size, static_cast<int>(node.size()));
  for (std::size_t i = 0; i < node.size(); ++i) {
    EXPECT_EQ(local_ranks[static_cast<std::size_t>(node[i])], static_cast<std::int64_t>(i))
        << "world rank " << node[i] << " should be local rank " << i;
    EXPECT_EQ(local_sizes[static_cast<std::size_t>(node[i])], static_cast<std::int64_t>(node.size()));
  }
  EXPECT_GE(p.local_rank, 0);
  EXPECT_LT(p.local_rank, p.local_size);
}

TEST(NodePlacement, MaxSharingCountsTheRanksOfTheNodeWithTheSameKey) {
  auto world = make_world_communicator();
  const NodePlacement p = node_placement();
  // Everyone on the node passes the same key: all of them share it.
  const int all_same = node_max_sharing("GPU 0000:3b:00.0");
  // A key of its own per rank: nobody shares.
  const int own = node_max_sharing("rank " + std::to_string(world->rank()));
  // Local ranks paired up (0 and 1, 2 and 3, ...): pairs share, a last odd rank is alone.
  const int paired = node_max_sharing("pair " + std::to_string(p.local_rank / 2));
  const auto seen = gather_i64(*world, all_same);
  const auto sizes = gather_i64(*world, p.local_size);
  EXPECT_EQ(all_same, p.local_size);
  EXPECT_EQ(own, 1);
  EXPECT_EQ(paired, std::min(2, p.local_size));
  // Every rank got its own node's count.
  for (std::size_t q = 0; q < seen.size(); ++q) EXPECT_EQ(seen[q], sizes[q]) << "world rank " << q;
}

TEST(NodePlacement, BroadcastFromWorldRootCarriesBytes) {
  auto world = make_world_communicator();
  // What NCCL's 128-byte unique id needs: the bytes of rank 0 on every rank.
  unsigned char id[128];
  for (int i = 0; i < 128; ++i) id[i] = static_cast<unsigned char>(world->rank() == 0 ? (i * 7 + 3) & 0xff : 0);
  broadcast_from_world_root(id, sizeof id);
  bool same = true;
  for (int i = 0; i < 128; ++i) same = same && id[i] == static_cast<unsigned char>((i * 7 + 3) & 0xff);
  EXPECT_TRUE(same) << "rank " << world->rank() << " did not receive rank 0's bytes";
}

TEST(NodePlacement, CpuRunsBindNoGpuButKnowTheirPlace) {
  auto world = make_world_communicator();
  const GpuBinding b = bind_rank_to_gpu("cpu", "auto");
  const NodePlacement p = node_placement();
  EXPECT_EQ(b.gpu, -1);
  EXPECT_EQ(b.node.local_rank, p.local_rank);
  EXPECT_EQ(b.node.local_size, p.local_size);
}

}  // namespace
}  // namespace upcycle
