// The NCCL communicator (dist/nccl.hpp) on a GPU. Two modes of one program:
//
//   (default) GoogleTest, one rank on one GPU, against SelfCommunicator (what the MPI communicator
//     gives for one rank): every collective for every dtype and reduction, empty tensors, a view
//     with an offset, host tensors (staged through the device), mixed host/device arguments;
//     argument checks; no host wait inside a cuda-tensor collective; order with the kernels on the
//     compute stream; split; the all_to_all_v op and the MoE layer forward and backward; and 5
//     training steps of the tiny MoE ViT through the Trainer (stage moe, run.device = cuda) on NCCL
//     and on SelfCommunicator: the same losses and gradient norms. With one rank a reduction or a
//     broadcast leaves the data as it is, so those cases check the plumbing (types, pointers,
//     streams, staging); the two-rank mode checks the arithmetic.
//
//   --two-ranks [--attempt] [--limit-s=N]: two ranks without mpirun (the GPU machine has none).
//     The program forks two processes before anything touches CUDA; rank 0 hands NCCL's unique id
//     to rank 1 through a pipe; both run every collective on values each rank can predict, split, the all_to_all_v op,
//     and the MoE layer with its experts split over the two ranks against the whole layer on each
//     rank. Two ranks need two GPUs, or one GPU with NCCL_MULTI_RANK_GPU_ENABLE=1 and NCCL 2.30 or
//     later; otherwise the mode exits 77 (skipped), unless --attempt, which tries anyway and prints
//     the outcome: "works", "Duplicate GPU detected" (exit 3), the error (exit 1), or "timed out"
//     (exit 124, after N seconds, default 240: both ranks are killed).
//
// Exit 77 (CTest: Skipped) without a usable GPU, or in a build without NCCL.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "backend_compare.hpp"
#include "upcycle/backend/backend.hpp"
#include "upcycle/backend/devices.hpp"
#include "upcycle/core/rng.hpp"
#include "upcycle/dist/all_to_all.hpp"
#include "upcycle/dist/comm_backend.hpp"
#include "upcycle/dist/nccl.hpp"
#include "upcycle/moe/moe_layer.hpp"
#include "upcycle/ops/elementwise.hpp"
#include "upcycle/ops/reduce.hpp"
#include "upcycle/train/moe_training.hpp"
#include "upcycle/train/trainer.hpp"
#include "fake_fashion_mnist.hpp"
#include "metrics_file.hpp"
#include "tiny_configs.hpp"

namespace upcycle {
namespace {

namespace fs = std::filesystem;
using testing::copy_to;
using testing::host_normal;
using testing::host_values;
using testing::values_of;

const DType kDtypes[] = {DType::f32, DType::f64, DType::i32, DType::i64};
const CommReduce kReduces[] = {CommReduce::sum, CommReduce::max, CommReduce::min};

// Distinct values of every dtype: halves (exact in f32), and for i64 values beyond 2^32, so that a
// collective that moved them as 32-bit ints would lose the high word.
Tensor host_data(const Shape& shape, DType dtype, double seed) {
  std::vector<double> v(static_cast<std::size_t>(shape.numel()));
  for (std::size_t i = 0; i < v.size(); ++i) {
    const double base = seed * 1000.0 + static_cast<double>(i) * 0.5 - 77.0;
    v[i] = dtype == DType::i64 ? 5e9 + std::floor(base) * 3.0 : dtype == DType::i32 ? std::floor(base) : base;
  }
  return host_values(v, shape, dtype);
}

void expect_same(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.shape().str(), want.shape().str()) << what;
  ASSERT_EQ(got.dtype(), want.dtype()) << what;
  const std::vector<double> g = values_of(got), w = values_of(want);
  for (std::size_t i = 0; i < g.size(); ++i)
    if (g[i] != w[i]) {
      ADD_FAILURE() << what << ": element " << i << " is " << g[i] << ", expected " << w[i];
      return;
    }
}

std::string reduce_name(CommReduce op) {
  return op == CommReduce::sum ? "sum" : op == CommReduce::max ? "max" : "min";
}

class NcclOneRank : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { nccl_ = make_nccl_communicator(0, 1, [](void*, std::size_t) {}); }
  // Before main returns: the communicator goes while the CUDA runtime is still up.
  static void TearDownTestSuite() { nccl_.reset(); }

  static std::shared_ptr<Communicator> nccl_;
  std::shared_ptr<Communicator> self_ = std::make_shared<SelfCommunicator>();
  Backend& cuda_ = backend_for(Device::cuda);
};
std::shared_ptr<Communicator> NcclOneRank::nccl_;

TEST_F(NcclOneRank, IsOneRank) {
  ASSERT_NE(nccl_, nullptr);
  EXPECT_EQ(nccl_->rank(), 0);
  EXPECT_EQ(nccl_->size(), 1);
  EXPECT_GE(nccl_version_code(), 21800);
  std::printf("[ nccl ] NCCL %s\n", nccl_version_string().c_str());
}

TEST_F(NcclOneRank, AllReduceMatchesSelfForEveryDtypeAndReduction) {
  for (DType dtype : kDtypes)
    for (CommReduce op : kReduces)
      for (const Shape& shape : {Shape{0}, Shape{1}, Shape{7, 3}, Shape{1 << 20}, Shape{}}) {
        const std::string what = std::string("all_reduce ") + dtype_name(dtype) + " " + reduce_name(op) + " " + shape.str();
        const Tensor data = host_data(shape, dtype, 1);
        Tensor want = data.clone();
        self_->all_reduce(want, op);
        Tensor got = copy_to(data, Device::cuda);
        nccl_->all_reduce(got, op);
        EXPECT_EQ(got.device(), Device::cuda) << what;
        expect_same(got, want, what);
        // A host tensor: staged through the device, back on the host.
        Tensor host = data.clone();
        nccl_->all_reduce(host, op);
        EXPECT_EQ(host.device(), Device::cpu) << what;
        expect_same(host, want, what + " (host tensor)");
      }
}

TEST_F(NcclOneRank, AllReduceOfAViewWritesOnlyTheView) {
  // The trainer reduces rows(0, 2) of its [4] f64 step statistics.
  const Tensor data = host_data({8, 3}, DType::f64, 2);
  Tensor whole = copy_to(data, Device::cuda);
  Tensor view = whole.rows(2, 5);
  nccl_->all_reduce(view, CommReduce::sum);
  expect_same(whole, data, "the tensor around an all-reduced view");
}

TEST_F(NcclOneRank, AllGatherMatchesSelf) {
  for (DType dtype : kDtypes)
    for (const Shape& shape : {Shape{}, Shape{0, 4}, Shape{5, 3}, Shape{1 << 18, 2}}) {
      const std::string what = std::string("all_gather ") + dtype_name(dtype) + " " + shape.str();
      const Tensor in = host_data(shape, dtype, 3);
      Tensor want = Tensor::empty(gathered_shape(shape, 1), dtype, Device::cpu);
      self_->all_gather(in, want);
      Tensor got = testing::copy_to(testing::host_sentinel(want.shape(), dtype), Device::cuda);
      nccl_->all_gather(copy_to(in, Device::cuda), got);
      expect_same(got, want, what);
      // Mixed: a host input into a device output, and the reverse.
      Tensor got2 = copy_to(testing::host_sentinel(want.shape(), dtype), Device::cuda);
      nccl_->all_gather(in, got2);
      expect_same(got2, want, what + " (host in, cuda out)");
      Tensor got3 = testing::host_sentinel(want.shape(), dtype);
      nccl_->all_gather(copy_to(in, Device::cuda), got3);
      expect_same(got3, want, what + " (cuda in, host out)");
    }
  // From a view with an offset: the view's elements, not the storage's first ones.
  const Tensor data = host_data({6, 2}, DType::f32, 4);
  const Tensor whole = copy_to(data, Device::cuda);
  Tensor out = Tensor::empty({3, 2}, DType::f32, Device::cuda);
  nccl_->all_gather(whole.rows(3, 6), out);
  expect_same(out, data.rows(3, 6), "all_gather of rows(3, 6)");
}

TEST_F(NcclOneRank, ReduceScatterMatchesSelf) {
  for (DType dtype : kDtypes)
    for (CommReduce op : kReduces)
      for (const Shape& shape : {Shape{0, 2}, Shape{4, 2}, Shape{1 << 18}}) {
        const std::string what = std::string("reduce_scatter ") + dtype_name(dtype) + " " + reduce_name(op) + " " + shape.str();
        const Tensor in = host_data(shape, dtype, 5);
        Tensor want = Tensor::empty(scattered_shape(shape, 1), dtype, Device::cpu);
        self_->reduce_scatter(in, want, op);
        Tensor got = copy_to(testing::host_sentinel(want.shape(), dtype), Device::cuda);
        nccl_->reduce_scatter(copy_to(in, Device::cuda), got, op);
        expect_same(got, want, what);
        Tensor host = testing::host_sentinel(want.shape(), dtype);
        nccl_->reduce_scatter(in, host, op);
        expect_same(host, want, what + " (host tensors)");
      }
}

TEST_F(NcclOneRank, BroadcastMatchesSelf) {
  for (DType dtype : kDtypes)
    for (const Shape& shape : {Shape{0}, Shape{}, Shape{9, 2}, Shape{1 << 20}}) {
      const std::string what = std::string("broadcast ") + dtype_name(dtype) + " " + shape.str();
      const Tensor data = host_data(shape, dtype, 6);
      Tensor want = data.clone();
      self_->broadcast(want, 0);
      Tensor got = copy_to(data, Device::cuda);
      nccl_->broadcast(got, 0);
      expect_same(got, want, what);
      Tensor host = data.clone();
      nccl_->broadcast(host, 0);
      expect_same(host, want, what + " (host tensor)");
    }
}

TEST_F(NcclOneRank, AllToAllVMatchesSelfWithEmptyAndUnevenRows) {
  for (DType dtype : kDtypes)
    for (std::int64_t rows : {0, 1, 17, 4099})
      for (const Shape& trailing : {Shape{}, Shape{3}, Shape{3, 2}}) {
        Shape shape{rows};
        for (std::int64_t d : trailing) shape.push_back(d);
        const std::string what = std::string("all_to_all_v ") + dtype_name(dtype) + " " + shape.str();
        const std::vector<std::int64_t> counts{rows};
        const Tensor send = host_data(shape, dtype, 7);
        Tensor want = testing::host_sentinel(shape, dtype);
        self_->all_to_all_v(send, counts, want, counts);
        Tensor got = copy_to(testing::host_sentinel(shape, dtype), Device::cuda);
        nccl_->all_to_all_v(copy_to(send, Device::cuda), counts, got, counts);
        expect_same(got, want, what);
        // The MoE layer's count exchange is a host i64 all_to_all_v.
        Tensor host = testing::host_sentinel(shape, dtype);
        nccl_->all_to_all_v(send, counts, host, counts);
        expect_same(host, want, what + " (host tensors)");
      }
}

TEST_F(NcclOneRank, ExchangeCountsMatchesSelf) {
  for (std::int64_t c : {std::int64_t{0}, std::int64_t{1}, std::int64_t{12345678901}}) {
    EXPECT_EQ(nccl_->exchange_counts({c}), self_->exchange_counts({c})) << c;
  }
}

TEST_F(NcclOneRank, ChecksArgumentsBeforeNccl) {
  Tensor a = Tensor::zeros({4, 2}, DType::f32, Device::cuda);
  Tensor wrong = Tensor::zeros({3, 2}, DType::f32, Device::cuda);
  EXPECT_THROW(nccl_->all_gather(a, wrong), Error);
  EXPECT_THROW(nccl_->all_gather(a, a), Error);  // shared storage
  EXPECT_THROW(nccl_->broadcast(a, 1), Error);   // no rank 1
  EXPECT_THROW(nccl_->all_to_all_v(a, {3}, wrong, {3}), Error);
  EXPECT_THROW(nccl_->exchange_counts({1, 2}), Error);
  EXPECT_THROW(nccl_->split(-1, 0), Error);
}

TEST_F(NcclOneRank, CudaCollectivesDoNotMakeTheHostWait) {
  // Everything allocated and uploaded first; then only collectives of cuda tensors.
  Tensor a = copy_to(host_data({1 << 16}, DType::f32, 8), Device::cuda);
  Tensor g = Tensor::empty({1 << 16}, DType::f32, Device::cuda);
  Tensor s = Tensor::empty({1 << 16}, DType::f32, Device::cuda);
  Tensor r = Tensor::empty({1 << 16}, DType::f32, Device::cuda);
  cuda_.synchronize();
  const std::int64_t before = cuda_.allocator_stats().host_waits;
  for (int i = 0; i < 10; ++i) {
    nccl_->all_reduce(a, CommReduce::sum);
    nccl_->all_gather(a, g);
    nccl_->reduce_scatter(a, s, CommReduce::max);
    nccl_->broadcast(a, 0);
    nccl_->all_to_all_v(a, {1 << 16}, r, {1 << 16});
  }
  EXPECT_EQ(cuda_.allocator_stats().host_waits, before) << "a collective of cuda tensors waited for the device";
  cuda_.synchronize();
}

TEST_F(NcclOneRank, RunsInOrderWithTheComputeStream) {
  // A kernel fills a large input, the collective reads it, a kernel scales the output: NCCL on
  // another stream would read the input before the fill or be overwritten by the scale.
  const std::int64_t n = std::int64_t{1} << 25;  // 128 MiB of f32: the fill takes a while
  for (int round = 0; round < 3; ++round) {
    Tensor in = Tensor::zeros({n}, DType::f32, Device::cuda);
    Tensor out = Tensor::empty({n}, DType::f32, Device::cuda);
    cuda_.synchronize();
    cuda_.fill(in, 7.0 + round);
    nccl_->all_gather(in, out);
    cuda_.affine(out, out, 2.0, 0.0);
    for (std::int64_t i : {std::int64_t{0}, n / 2, n - 1})
      EXPECT_EQ(out.rows(i, i + 1).to_vector<float>()[0], 2.0f * static_cast<float>(7 + round))
          << "element " << i << ", round " << round;
  }
}

// all_reduce_async runs on the communication stream: ordered after the fill on the compute
// stream, and the scaling issued after wait() sees its result; no host wait on the way.
TEST_F(NcclOneRank, AsyncAllReduceIsOrderedByEventsWithoutHostWaits) {
  const std::int64_t n = std::int64_t{1} << 25;
  Tensor t = Tensor::zeros({n}, DType::f32, Device::cuda);
  cuda_.synchronize();
  const std::int64_t before = cuda_.allocator_stats().host_waits;
  cuda_.fill(t, 3.0);
  auto request = nccl_->all_reduce_async(t, CommReduce::max);
  request->wait();
  cuda_.affine(t, t, 2.0, 0.0);
  EXPECT_EQ(cuda_.allocator_stats().host_waits, before) << "an asynchronous all-reduce waited for the device";
  for (std::int64_t i : {std::int64_t{0}, n - 1}) EXPECT_EQ(t.rows(i, i + 1).to_vector<float>()[0], 6.0f);
  EXPECT_TRUE(request->test());
}

TEST_F(NcclOneRank, SplitGivesWorkingCommunicators) {
  auto sub = nccl_->split(0, 5);
  ASSERT_NE(sub, nullptr);
  EXPECT_EQ(sub->size(), 1);
  EXPECT_EQ(sub->rank(), 0);
  auto subsub = sub->split(3, -2);
  EXPECT_EQ(subsub->size(), 1);
  const Tensor data = host_data({5, 2}, DType::i64, 9);
  Tensor out = Tensor::empty({5, 2}, DType::i64, Device::cuda);
  subsub->all_gather(copy_to(data, Device::cuda), out);
  expect_same(out, data, "all_gather on a split of a split");
  const ProcessGroups groups = make_process_groups(nccl_, 1);
  EXPECT_EQ(groups.expert_parallel->size(), 1);
  EXPECT_EQ(groups.expert_data_parallel->size(), 1);
  subsub->barrier();
  nccl_->barrier();
}

TEST_F(NcclOneRank, AllToAllOpForwardAndBackwardMatchSelf) {
  const Tensor data = host_normal({9, 4}, DType::f32, 11, 0.0, 1.0);
  const Tensor seed = host_normal({9, 4}, DType::f32, 12, 0.0, 1.0);
  auto run = [&](Communicator& comm) {
    Var x(copy_to(data, Device::cuda), true);
    const Var y = all_to_all_v(comm, x, {9}, {9});
    y.backward(copy_to(seed, Device::cuda));
    return std::make_pair(y.value().to(Device::cpu), x.grad().to(Device::cpu));
  };
  const auto [y_self, g_self] = run(*self_);
  const auto [y_nccl, g_nccl] = run(*nccl_);
  expect_same(y_nccl, y_self, "all_to_all_v op forward");
  expect_same(g_nccl, g_self, "all_to_all_v op backward");
}

TEST_F(NcclOneRank, MoeLayerForwardAndBackwardMatchSelf) {
  moe::MoeConfig m;
  m.d_model = 16;
  m.d_ff = 24;
  m.num_experts = 4;
  m.top_k = 2;
  m.shared_expert = true;
  m.shared_d_ff = 8;
  m.router_std = 1.0;
  const Tensor x_host = host_normal({37, 16}, DType::f32, 21, 0.0, 1.0);
  const Tensor r_host = host_normal({37, 16}, DType::f32, 22, 0.0, 1.0);
  struct Out {
    Tensor y, gx;
    std::vector<std::pair<std::string, Tensor>> grads;
  };
  auto run = [&](const std::shared_ptr<Communicator>& ep) {
    RngStream rng(99);
    moe::MoeLayer layer(m, ep, rng);
    layer.to(Device::cuda);
    Var x(copy_to(x_host, Device::cuda), true);
    const Var y = layer.forward(x);
    sum_all(mul(y, Var(copy_to(r_host, Device::cuda)))).backward();
    Out o{y.value().to(Device::cpu), x.grad().to(Device::cpu), {}};
    for (const auto& [name, p] : layer.named_parameters())
      o.grads.emplace_back(name, p.grad().defined() ? p.grad().to(Device::cpu) : Tensor());
    return o;
  };
  const Out a = run(self_), b = run(nccl_);
  // One rank: the same kernels on the same GPU; index_add's float atomics may add in another order.
  const auto close = [](const Tensor& got, const Tensor& want, const std::string& what) {
    const std::vector<double> g = values_of(got), w = values_of(want);
    ASSERT_EQ(g.size(), w.size()) << what;
    double scale = 1e-6;
    for (double v : w) scale = std::max(scale, std::abs(v));
    for (std::size_t i = 0; i < g.size(); ++i)
      ASSERT_LE(std::abs(g[i] - w[i]), 1e-6 * scale) << what << " element " << i;
  };
  close(b.y, a.y, "moe forward");
  close(b.gx, a.gx, "moe input gradient");
  ASSERT_EQ(a.grads.size(), b.grads.size());
  for (std::size_t i = 0; i < a.grads.size(); ++i) {
    const Tensor& ga = a.grads[i].second;
    const Tensor& gb = b.grads[i].second;
    ASSERT_EQ(ga.defined(), gb.defined()) << a.grads[i].first;
    if (ga.defined()) close(gb, ga, a.grads[i].first);
  }
}

// --- 5 training steps through the Trainer ---

TEST_F(NcclOneRank, FiveMoeTrainingStepsMatchSelfOnTheSameGpu) {
  const fs::path root = fs::temp_directory_path() / ("upcycle_test_nccl_" + std::to_string(::getpid()));
  fs::remove_all(root);
  upcycle::testing::write_fake_fashion_mnist(root / "data", 240, 40);
  auto train = [&](const std::shared_ptr<Communicator>& world, const std::string& name, std::vector<double>& norms) {
    const fs::path dir = root / name;
    const Config cfg = parse_config(testing::tiny_vit_moe_ini(5, dir.string()), "test_nccl_communicator",
                                    {{"run.device", "cuda"}, {"data.path", (root / "data").string()}});
    MoeTask t = make_moe_task(cfg, world);
    Trainer trainer(cfg, t.groups, *t.task, "moe", dir.string());
    const TrainResult r = trainer.run();
    norms = upcycle::testing::logged_grad_norms(dir);
    return r.losses;
  };
  std::vector<double> norms_self, norms_nccl;
  const auto self_losses = train(self_, "self", norms_self);
  const auto nccl_losses = train(nccl_, "nccl", norms_nccl);
  ASSERT_EQ(self_losses.size(), 5u);
  ASSERT_EQ(nccl_losses.size(), 5u);
  ASSERT_EQ(norms_self.size(), 5u);
  ASSERT_EQ(norms_nccl.size(), 5u);
  // The same GPU and kernels; float atomics in index_add may order sums differently: 1e-6.
  for (std::size_t i = 0; i < 5; ++i) {
    EXPECT_NEAR(nccl_losses[i], self_losses[i], 1e-6 * std::abs(self_losses[i])) << "loss, step " << i + 1;
    EXPECT_NEAR(norms_nccl[i], norms_self[i], 1e-6 * std::abs(norms_self[i])) << "grad norm, step " << i + 1;
    std::printf("[ train ] step %zu: loss nccl %.9f self %.9f, grad norm nccl %.9g self %.9g\n", i + 1,
                nccl_losses[i], self_losses[i], norms_nccl[i], norms_self[i]);
  }
  EXPECT_NEAR(self_losses.front(), std::log(10.0), 0.5);  // near-uniform predictions to start
  fs::remove_all(root);
}

// ================================= two ranks, forked =================================

int g_failures = 0;
int g_rank = -1;

void check(bool ok, const std::string& what) {
  if (ok) return;
  ++g_failures;
  std::fprintf(stderr, "[rank %d] FAILED: %s\n", g_rank, what.c_str());
}

void check_values(const Tensor& got, const std::vector<double>& want, const std::string& what) {
  const std::vector<double> g = values_of(got);
  if (g.size() != want.size()) return check(false, what + ": " + std::to_string(g.size()) + " elements, expected " +
                                                       std::to_string(want.size()));
  for (std::size_t i = 0; i < g.size(); ++i)
    if (g[i] != want[i])
      return check(false, what + ": element " + std::to_string(i) + " is " + std::to_string(g[i]) + ", expected " +
                              std::to_string(want[i]));
}

void write_all(int fd, const void* data, std::size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w <= 0) UPCYCLE_THROW("bootstrap pipe: write failed: ", std::strerror(errno));
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

void read_all(int fd, void* data, std::size_t n) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t r = ::read(fd, p, n);
    if (r == 0) UPCYCLE_THROW("bootstrap pipe: rank 0 closed it before sending NCCL's unique id");
    if (r < 0) UPCYCLE_THROW("bootstrap pipe: read failed: ", std::strerror(errno));
    p += r;
    n -= static_cast<std::size_t>(r);
  }
}

// Rows rank `from` sends to rank `to`: uneven, and zero for some pairs (0 -> 0 with two ranks).
std::int64_t rows_between(int from, int to) { return (from + to) % 3; }

void two_rank_checks(const std::shared_ptr<Communicator>& comm) {
  const int r = comm->rank(), n = comm->size();
  for (Device dev : {Device::cuda, Device::cpu}) {
    const std::string where = std::string(" (") + device_name(dev) + " tensors)";
    for (DType dtype : kDtypes) {
      const std::string dt = dtype_name(dtype);
      // all_reduce: rank q holds base + q (base beyond 2^32 for i64).
      const double base = dtype == DType::i64 ? 6e9 : dtype == DType::i32 ? 1000.0 : 0.25;
      for (CommReduce op : kReduces) {
        Tensor t = Tensor::full({5, 3}, base + r, dtype, dev);
        comm->all_reduce(t, op);
        const double want = op == CommReduce::sum ? n * base + n * (n - 1) / 2.0 : op == CommReduce::max ? base + n - 1 : base;
        check_values(t, std::vector<double>(15, want), "all_reduce " + dt + " " + reduce_name(op) + where);
      }
      // all_gather: block q holds 10 q + position.
      std::vector<double> mine(6), gathered;
      for (int i = 0; i < 6; ++i) mine[static_cast<std::size_t>(i)] = 10.0 * r + i;
      for (int q = 0; q < n; ++q)
        for (int i = 0; i < 6; ++i) gathered.push_back(10.0 * q + i);
      Tensor out = Tensor::empty({2 * n, 3}, dtype, dev);
      comm->all_gather(copy_to(host_values(mine, {2, 3}, dtype), dev), out);
      check_values(out, gathered, "all_gather " + dt + where);
      // reduce_scatter: block b of rank q holds (q + 1)(b + 1); rank r gets sum_q (q + 1)(r + 1).
      std::vector<double> blocks;
      for (int b = 0; b < n; ++b)
        for (int i = 0; i < 4; ++i) blocks.push_back((r + 1.0) * (b + 1.0));
      Tensor scattered = Tensor::empty({2, 2}, dtype, dev);
      comm->reduce_scatter(copy_to(host_values(blocks, {2 * n, 2}, dtype), dev), scattered, CommReduce::sum);
      check_values(scattered, std::vector<double>(4, (r + 1.0) * n * (n + 1) / 2.0), "reduce_scatter " + dt + where);
      // broadcast from the last rank.
      std::vector<double> own(7), root(7);
      for (int i = 0; i < 7; ++i) own[static_cast<std::size_t>(i)] = 100.0 * r + i, root[static_cast<std::size_t>(i)] = 100.0 * (n - 1) + i;
      Tensor b = copy_to(host_values(own, {7}, dtype), dev);
      comm->broadcast(b, n - 1);
      check_values(b, root, "broadcast " + dt + where);
      // all_to_all_v: rows_between(r, p) rows of [2] to p, row j of the block to p = 1000 r + 10 p + j.
      std::vector<std::int64_t> sc(static_cast<std::size_t>(n)), rc(static_cast<std::size_t>(n));
      std::vector<double> send_v, want_v;
      for (int p = 0; p < n; ++p) {
        sc[static_cast<std::size_t>(p)] = rows_between(r, p);
        rc[static_cast<std::size_t>(p)] = rows_between(p, r);
        for (std::int64_t j = 0; j < sc[static_cast<std::size_t>(p)]; ++j)
          for (int e = 0; e < 2; ++e) send_v.push_back(1000.0 * r + 10.0 * p + j + 0.5 * e);
        for (std::int64_t j = 0; j < rc[static_cast<std::size_t>(p)]; ++j)
          for (int e = 0; e < 2; ++e) want_v.push_back(1000.0 * p + 10.0 * r + j + 0.5 * e);
      }
      if (dtype == DType::i32 || dtype == DType::i64)
        for (auto* v : {&send_v, &want_v})
          for (double& x : *v) x = std::floor(x);
      const auto rows = [](const std::vector<double>& v) { return static_cast<std::int64_t>(v.size() / 2); };
      Tensor recv = Tensor::empty({rows(want_v), 2}, dtype, dev);
      comm->all_to_all_v(copy_to(host_values(send_v, {rows(send_v), 2}, dtype), dev), sc, recv, rc);
      check_values(recv, want_v, "all_to_all_v " + dt + where);
      check(comm->exchange_counts(sc) == rc, "exchange_counts");
    }
  }
  // Split: each rank alone (color = rank), then all ranks in reverse order (key = -rank).
  auto alone = comm->split(r, 0);
  check(alone->size() == 1 && alone->rank() == 0, "split by rank: one rank each");
  Tensor t = Tensor::full({3}, 5.0 + r, DType::f32, Device::cuda);
  alone->all_reduce(t);
  check_values(t, std::vector<double>(3, 5.0 + r), "all_reduce on a one-rank split");
  // all_reduce_async: a kernel writes the input, the communication stream must wait for it, and
  // the kernel after wait() must see the sum. Several in flight, waited for in reverse.
  {
    const std::int64_t big = std::int64_t{1} << 24;
    std::vector<Tensor> ts;
    std::vector<std::unique_ptr<CommRequest>> requests;
    for (int k = 0; k < 3; ++k) {
      ts.push_back(Tensor::empty({big}, DType::f32, Device::cuda));
      backend_for(Device::cuda).fill(ts.back(), r + 1 + k);
      requests.push_back(comm->all_reduce_async(ts.back()));
    }
    for (int k = 2; k >= 0; --k) {
      requests[static_cast<std::size_t>(k)]->wait();
      backend_for(Device::cuda).affine(ts[static_cast<std::size_t>(k)], ts[static_cast<std::size_t>(k)], 0.5, 0.0);
      const double want = 0.5 * (n * (1 + k) + n * (n - 1) / 2.0);
      const Tensor& t = ts[static_cast<std::size_t>(k)];
      check_values(t.rows(big - 3, big), std::vector<double>(3, want), "all_reduce_async " + std::to_string(k));
    }
  }
  auto reversed = comm->split(0, -r);
  check(reversed->size() == n && reversed->rank() == n - 1 - r, "split with key -rank reverses the ranks");
  Tensor gathered = Tensor::empty({n}, DType::i64, Device::cuda);
  reversed->all_gather(Tensor::full({1}, r, DType::i64, Device::cuda), gathered);
  std::vector<double> order;
  for (int i = 0; i < n; ++i) order.push_back(n - 1 - i);
  check_values(gathered, order, "all_gather in the reversed split");
  // The all_to_all_v op: backward sends every gradient row back where it came from.
  std::vector<double> xs;
  for (int p = 0; p < n; ++p)
    for (std::int64_t j = 0; j < rows_between(r, p); ++j) xs.push_back(100.0 * r + 10.0 * p + j);
  const std::int64_t sent = static_cast<std::int64_t>(xs.size());
  std::vector<std::int64_t> sc, rc;
  for (int p = 0; p < n; ++p) sc.push_back(rows_between(r, p)), rc.push_back(rows_between(p, r));
  Var x(copy_to(host_values(xs, {sent, 1}, DType::f32), Device::cuda), true);
  const Var y = all_to_all_v(*comm, x, sc, rc);
  y.backward(y.value().clone());  // the gradient of 0.5 |y|^2 w.r.t. y is y: back to x it is x
  check_values(x.grad(), xs, "all_to_all_v op backward returns every row to its sender");
  comm->barrier();
}

// The MoE layer with its 4 experts split over the ranks (2 each) against the whole layer on this
// rank, for this rank's own tokens.
void two_rank_moe_check(const std::shared_ptr<Communicator>& comm) {
  moe::MoeConfig m;
  m.d_model = 8;
  m.d_ff = 12;
  m.num_experts = 4;
  m.top_k = 2;
  m.router_std = 1.0;  // spread logits: no near-ties for rounding to flip
  const int r = comm->rank();
  const Tensor x_host = host_normal({13 + 5 * r, 8}, DType::f32, 31 + r, 0.0, 1.0);
  auto run = [&](const std::shared_ptr<Communicator>& ep) {
    RngStream rng(7);
    moe::MoeLayer layer(m, ep, rng);
    layer.to(Device::cuda);
    Var x(copy_to(x_host, Device::cuda), true);
    const Var y = layer.forward(x);
    sum_all(mul(y, y)).backward();
    return std::make_pair(values_of(y.value()), values_of(x.grad()));
  };
  const auto [y_ep, g_ep] = run(comm);
  const auto [y_all, g_all] = run(nullptr);
  auto close = [&](const std::vector<double>& got, const std::vector<double>& want, const std::string& what) {
    double scale = 1e-6;
    for (double v : want) scale = std::max(scale, std::abs(v));
    bool ok = got.size() == want.size();
    for (std::size_t i = 0; ok && i < got.size(); ++i) ok = std::abs(got[i] - want[i]) <= 1e-5 * scale;
    check(ok, what + " with experts split over the ranks differs from the whole layer");
  };
  close(y_ep, y_all, "MoE forward");
  close(g_ep, g_all, "MoE input gradient");
}

int two_rank_child(int rank, int write_fd, int read_fd, bool attempt) {
  g_rank = rank;
  try {
    std::string why;
    const int gpus = cuda_device_count(&why);
    if (gpus == 0) {
      std::printf("[rank %d] SKIPPED: no usable GPU: %s\n", rank, why.c_str());
      return 77;
    }
    if (gpus < 2 && !attempt) {
      const int per_gpu = nccl_ranks_per_gpu(nccl_version_code(), std::getenv("NCCL_MULTI_RANK_GPU_ENABLE"));
      if (per_gpu < 2) {
        std::printf("[rank %d] SKIPPED: two ranks need two GPUs, or NCCL_MULTI_RANK_GPU_ENABLE=1 with NCCL 2.30 or "
                    "later (this is NCCL %s with %d GPU)\n",
                    rank, nccl_version_string().c_str(), gpus);
        return 77;
      }
    }
    use_cuda_device(rank % gpus);
    if (!cuda_usable(&why)) {
      std::printf("[rank %d] SKIPPED: no usable GPU: %s\n", rank, why.c_str());
      return 77;
    }
    std::printf("[rank %d] GPU %d of %d (PCI %s), NCCL %s\n", rank, rank % gpus, gpus,
                cuda_pci_bus_id(rank % gpus).c_str(), nccl_version_string().c_str());
    std::fflush(stdout);
    auto comm = make_nccl_communicator(rank, 2, [&](void* data, std::size_t n) {
      if (rank == 0) write_all(write_fd, data, n);
      else read_all(read_fd, data, n);
    });
    two_rank_checks(comm);
    two_rank_moe_check(comm);
    comm->barrier();
    comm.reset();
    std::printf("[rank %d] %s\n", rank, g_failures == 0 ? "all checks passed" : "checks FAILED");
    return g_failures == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "[rank %d] error: %s\n", rank, e.what());
    return std::strstr(e.what(), "Duplicate GPU") ? 3 : 1;
  }
}

// Forks the two ranks before this process touches CUDA (a child may not use a CUDA context it
// inherited), waits for both (at most `limit_s`), and says what happened.
int two_ranks(bool attempt, int limit_s) {
  int fds[2];
  if (::pipe(fds) != 0) {
    std::perror("pipe");
    return 1;
  }
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pids[2] = {-1, -1};
  for (int rank = 0; rank < 2; ++rank) {
    pids[rank] = ::fork();
    if (pids[rank] < 0) {
      std::perror("fork");
      return 1;
    }
    if (pids[rank] == 0) {
      ::close(rank == 0 ? fds[0] : fds[1]);  // so that rank 1 sees EOF if rank 0 dies first
      const int code = two_rank_child(rank, fds[1], fds[0], attempt);
      std::fflush(stdout);
      std::fflush(stderr);
      ::_exit(code);  // no static destructors: the CUDA runtime and NCCL are torn down by the exit
    }
  }
  ::close(fds[0]);
  ::close(fds[1]);
  int codes[2] = {-1, -1};
  bool timed_out = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(limit_s);
  for (int left = 2; left > 0;) {
    for (int i = 0; i < 2; ++i) {
      if (codes[i] != -1) continue;
      int status = 0;
      if (::waitpid(pids[i], &status, WNOHANG) == pids[i]) {
        codes[i] = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        --left;
      }
    }
    if (left == 0) break;
    if (std::chrono::steady_clock::now() > deadline) {
      timed_out = true;
      for (int i = 0; i < 2; ++i)
        if (codes[i] == -1) ::kill(pids[i], SIGKILL), ::waitpid(pids[i], nullptr, 0), codes[i] = 124;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::printf("two ranks: exit codes %d and %d\n", codes[0], codes[1]);
  if (codes[0] == 0 && codes[1] == 0) {
    std::printf("two ranks: works\n");
    return 0;
  }
  if (codes[0] == 77 && codes[1] == 77) {
    std::printf("two ranks: skipped\n");
    return 77;
  }
  if (codes[0] == 3 || codes[1] == 3) {
    std::printf("two ranks: Duplicate GPU detected\n");
    return 3;
  }
  if (timed_out) {
    std::printf("two ranks: timed out after %d s\n", limit_s);
    return 124;
  }
  std::printf("two ranks: failed (see the ranks' messages above)\n");
  return 1;
}

}  // namespace
}  // namespace upcycle

int main(int argc, char** argv) {
  bool two_ranks = false, attempt = false;
  int limit_s = 240;  // the two ranks' time limit (--limit-s=N), inside any outer one
  for (int i = 1; i < argc; ++i) {
    two_ranks = two_ranks || std::strcmp(argv[i], "--two-ranks") == 0;
    attempt = attempt || std::strcmp(argv[i], "--attempt") == 0;
    if (std::strncmp(argv[i], "--limit-s=", 10) == 0) limit_s = std::max(1, std::atoi(argv[i] + 10));
  }
  if (!upcycle::nccl_in_build()) {
    std::printf("%s: SKIPPED (exit 77): %s\n", argv[0], upcycle::nccl_absent_message().c_str());
    return 77;
  }
  if (two_ranks) return upcycle::two_ranks(attempt, limit_s);
  ::testing::InitGoogleTest(&argc, argv);
  std::string why;
  if (!upcycle::cuda_usable(&why)) {
    std::printf("%s: SKIPPED (exit 77): no usable CUDA device: %s\n", argv[0], why.c_str());
    return 77;
  }
  return RUN_ALL_TESTS();
}
