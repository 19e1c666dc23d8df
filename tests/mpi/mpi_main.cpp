// GoogleTest main for the multi-rank tests: every rank runs every test (the tests call
// collectives, so all ranks must run the same tests in the same order). Rank 0 prints the usual
// report; the other ranks print only their failures, tagged with their rank. At the end the ranks
// agree on the outcome, so a failure on any rank fails every process and the mpirun.
#include <gtest/gtest.h>

#include <cstdio>
#include <exception>
#include <string>

#include "upcycle/dist/world.hpp"

namespace {

class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}

  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_, result.file_name() ? result.file_name() : "?",
                 result.line_number(), result.message());
  }

  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (info.result()->Failed())
      std::fprintf(stderr, "[rank %d] FAILED %s.%s\n", rank_, info.test_suite_name(), info.name());
  }

 private:
  int rank_;
};

int run(int argc, char** argv) {
  upcycle::MpiSession session(argc, argv);  // first: MPI may rewrite argv
  ::testing::InitGoogleTest(&argc, argv);
  const auto world = upcycle::make_world_communicator();
  if (world->rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(world->rank()));
  }
  const int failed_here = RUN_ALL_TESTS() != 0 ? 1 : 0;

  upcycle::Tensor mine = upcycle::Tensor::full({1}, failed_here, upcycle::DType::i32, upcycle::Device::cpu);
  upcycle::Tensor all = upcycle::Tensor::empty({world->size()}, upcycle::DType::i32, upcycle::Device::cpu);
  world->all_gather(mine, all);
  std::string failed_ranks;
  for (int p = 0; p < world->size(); ++p)
    if (all.data<std::int32_t>()[p]) failed_ranks += " " + std::to_string(p);
  if (world->rank() == 0) {
    if (failed_ranks.empty())
      std::printf("[mpi] all %d rank(s) passed\n", world->size());
    else
      std::fprintf(stderr, "[mpi] FAILED on rank(s):%s of %d\n", failed_ranks.c_str(), world->size());
  }
  return failed_ranks.empty() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
