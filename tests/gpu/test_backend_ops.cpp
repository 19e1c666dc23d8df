// The backend op suite on a GPU: every kernel of the CUDA backend against the CPU backend on the
// same inputs (tests/gpu/backend_op_suite.hpp: cases, tolerance tiers and why). Exits with 77
// (CTest: Skipped) when no CUDA device is usable, printing why.
//
// One check per kernel, listing every failing case (kernel, dtype, shape, parameters, the output
// and its worst element). UPCYCLE_OP_FILTER (the suite's filter syntax: "softmax,topk",
// "layernorm*") restricts the run to some kernels. The error cases (an index out of range must
// throw, naming the kernel) run in a test of their own after every comparison, so that a device
// fault they might cause cannot hide another kernel's result (tests of one file run in order).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "backend_op_suite.hpp"
#include "upcycle/backend/backend.hpp"
#include "upcycle/backend/devices.hpp"

namespace upcycle {
namespace {

using testing::OpFailure;
using testing::OpSuitePass;
using testing::OpSuiteStats;

std::string op_filter() {
  const char* f = std::getenv("UPCYCLE_OP_FILTER");
  return f ? f : "";
}

std::string listing(const std::vector<OpFailure>& failures) {
  constexpr std::size_t kMax = 60;
  std::string s;
  for (std::size_t i = 0; i < failures.size() && i < kMax; ++i) s += "\n  " + failures[i].str();
  if (failures.size() > kMax) s += "\n  ... and " + std::to_string(failures.size() - kMax) + " more";
  return s;
}

Backend& cuda_backend() {
  Backend& cuda = backend_for(Device::cuda);
  // The contract's default, set explicitly: the f32 GEMM bounds (~1e-5 of the magnitude) assume
  // full-precision products, and TF32 rounds the inputs to 10 bits (~1e-3).
  cuda.set_allow_tf32(false);
  return cuda;
}

TEST(BackendOps, EveryKernelMatchesTheCpu) {
  Backend& cpu = backend_for(Device::cpu);
  Backend& cuda = cuda_backend();
  const std::string filter = op_filter();
  std::int64_t total = 0, failed = 0;
  for (const std::string& kernel : testing::backend_op_suite_kernels()) {
    if (!testing::op_suite_selects(filter, kernel)) continue;
    OpSuiteStats stats;
    const std::vector<OpFailure> failures =
        testing::run_backend_op_suite(cpu, cuda, kernel, &stats, OpSuitePass::compare);
    std::printf("%-24s %5lld cases, %lld failing\n", kernel.c_str(), static_cast<long long>(stats.cases),
                static_cast<long long>(failures.size()));
    std::fflush(stdout);
    EXPECT_GT(stats.cases, 0) << "no case ran for " << kernel;
    EXPECT_TRUE(failures.empty()) << kernel << ": " << failures.size() << " of " << stats.cases
                                  << " cases differ from the CPU:" << listing(failures);
    total += stats.cases;
    failed += static_cast<std::int64_t>(failures.size());
  }
  std::printf("%lld cases, %lld failing\n", static_cast<long long>(total), static_cast<long long>(failed));
  EXPECT_GT(total, 0) << "the filter '" << filter << "' selected no kernel";
}

TEST(BackendOps, OutOfRangeIndicesThrowNamingTheKernel) {
  Backend& cpu = backend_for(Device::cpu);
  Backend& cuda = cuda_backend();
  OpSuiteStats stats;
  const std::vector<OpFailure> failures =
      testing::run_backend_op_suite(cpu, cuda, op_filter(), &stats, OpSuitePass::errors);
  EXPECT_TRUE(failures.empty()) << failures.size() << " of " << stats.cases << " error cases:" << listing(failures);
  // After the errors the backend must still work (the error flag is cleared when it is raised).
  const std::vector<OpFailure> after = testing::run_backend_op_suite(cpu, cuda, "softmax", nullptr, OpSuitePass::compare);
  EXPECT_TRUE(after.empty()) << "softmax after the error cases:" << listing(after);
}

}  // namespace
}  // namespace upcycle
