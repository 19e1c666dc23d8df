// parallel.backend (auto | mpi | nccl) and the GPU of each rank (dist/comm_backend.hpp): the
// resolution rules and the GPU choice as pure functions, the config rule check_stages_runnable
// applies before anything runs, the schema's values, and what this build says about NCCL.
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "upcycle/core/error.hpp"
#include "upcycle/dist/comm_backend.hpp"
#include "upcycle/io/config.hpp"
#include "upcycle/train/stages.hpp"

using namespace upcycle;

namespace {

// The message of the exception of type E that `f` throws; fails the test otherwise.
template <class E>
std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const E& e) {
    return e.message();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "another exception than expected: " << e.what();
    return "";
  }
  ADD_FAILURE() << "nothing thrown";
  return "";
}

bool is_usage_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const UsageError&) {
    return true;
  } catch (...) {
  }
  return false;
}

const DeviceChoice kCpu{Device::cpu, ""};
const DeviceChoice kCuda{Device::cuda, ""};
const DeviceChoice kAutoOnCpu{Device::cpu, "run.device = auto: training on the CPU (no usable GPU: cudaGetDeviceCount failed)"};
const NcclSupport kNcclUsable{true, true, ""};
const NcclSupport kNcclMissingHere{true, false, "cannot load the NCCL library (tried libnccl.so.2: not found)"};
const NcclSupport kNcclNotBuilt{false, false, "this build has no NCCL communicator (test)"};

}  // namespace

TEST(CommBackend, AutoIsMpiOnTheCpu) {
  for (const NcclSupport& nccl : {kNcclUsable, kNcclMissingHere, kNcclNotBuilt}) {
    const CommBackendChoice c = resolve_comm_backend("auto", kCpu, nccl);
    EXPECT_EQ(c.backend, CommBackend::mpi);
    EXPECT_NE(c.reason.find("training on the CPU"), std::string::npos) << c.reason;
    EXPECT_EQ(resolve_comm_backend("auto", kAutoOnCpu, nccl).backend, CommBackend::mpi);
  }
}

TEST(CommBackend, AutoIsNcclOnTheGpuWhenNcclIsUsable) {
  EXPECT_EQ(resolve_comm_backend("auto", kCuda, kNcclUsable).backend, CommBackend::nccl);
  // Without a usable NCCL a GPU run stays on MPI and says why.
  for (const NcclSupport& nccl : {kNcclMissingHere, kNcclNotBuilt}) {
    const CommBackendChoice c = resolve_comm_backend("auto", kCuda, nccl);
    EXPECT_EQ(c.backend, CommBackend::mpi);
    EXPECT_NE(c.reason.find(nccl.why), std::string::npos) << c.reason;
  }
}

TEST(CommBackend, MpiIsAlwaysMpi) {
  for (const DeviceChoice& d : {kCpu, kCuda, kAutoOnCpu})
    for (const NcclSupport& nccl : {kNcclUsable, kNcclMissingHere, kNcclNotBuilt})
      EXPECT_EQ(resolve_comm_backend("mpi", d, nccl).backend, CommBackend::mpi);
}

TEST(CommBackend, NcclOnTheGpu) {
  const CommBackendChoice c = resolve_comm_backend("nccl", kCuda, kNcclUsable);
  EXPECT_EQ(c.backend, CommBackend::nccl);
  EXPECT_EQ(std::string(comm_backend_name(c.backend)), "nccl");
  EXPECT_EQ(std::string(comm_backend_name(CommBackend::mpi)), "mpi");
}

TEST(CommBackend, NcclOnTheCpuIsAUsageError) {
  for (const NcclSupport& nccl : {kNcclUsable, kNcclNotBuilt}) {
    const std::string m = message_of<UsageError>([&] { resolve_comm_backend("nccl", kCpu, nccl); });
    EXPECT_NE(m.find("parallel.backend = nccl needs run.device = cuda"), std::string::npos) << m;
    EXPECT_NE(m.find("run.device = cpu"), std::string::npos) << m;
    EXPECT_NE(m.find("set parallel.backend = mpi"), std::string::npos) << m;
  }
  // run.device = auto that found no GPU: the same refusal, quoting why there is no GPU.
  const std::string m = message_of<UsageError>([&] { resolve_comm_backend("nccl", kAutoOnCpu, kNcclUsable); });
  EXPECT_NE(m.find("parallel.backend = nccl needs run.device = cuda"), std::string::npos) << m;
  EXPECT_NE(m.find(kAutoOnCpu.reason), std::string::npos) << m;
}

TEST(CommBackend, NcclInABuildWithoutItIsAUsageErrorNamingTheBuild) {
  const std::string m = message_of<UsageError>([&] { resolve_comm_backend("nccl", kCuda, kNcclNotBuilt); });
  EXPECT_NE(m.find("this build has no NCCL communicator"), std::string::npos) << m;
  EXPECT_NE(m.find("use parallel.backend = mpi or auto"), std::string::npos) << m;
}

TEST(CommBackend, NcclBuiltButMissingOnThisMachineIsARunTimeError) {
  bool usage = false;
  std::string m;
  try {
    resolve_comm_backend("nccl", kCuda, kNcclMissingHere);
  } catch (const UsageError& e) {
    usage = true;
    m = e.message();
  } catch (const Error& e) {
    m = e.message();
  }
  EXPECT_FALSE(usage) << "a missing library is not a config error: " << m;
  EXPECT_NE(m.find("NCCL cannot be used on this machine"), std::string::npos) << m;
  EXPECT_NE(m.find(kNcclMissingHere.why), std::string::npos) << m;
}

TEST(CommBackend, UnknownValueIsAUsageError) {
  EXPECT_TRUE(is_usage_error([] { resolve_comm_backend("gloo", kCuda, kNcclUsable); }));
}

TEST(CommBackend, ConfigAloneRulesOutNcclOnTheCpuAndWithoutNccl) {
  for (bool built : {true, false}) {
    const std::string m = message_of<UsageError>([&] { check_comm_backend_request("nccl", "cpu", built); });
    EXPECT_NE(m.find("parallel.backend = nccl needs run.device = cuda"), std::string::npos) << m;
  }
  EXPECT_NE(message_of<UsageError>([] { check_comm_backend_request("nccl", "auto", false); })
                .find("this build has no NCCL communicator"),
            std::string::npos);
  EXPECT_NE(message_of<UsageError>([] { check_comm_backend_request("nccl", "cuda", false); })
                .find("this build has no NCCL communicator"),
            std::string::npos);
  // What needs the device resolved, or is fine, passes here.
  EXPECT_NO_THROW(check_comm_backend_request("nccl", "auto", true));
  EXPECT_NO_THROW(check_comm_backend_request("nccl", "cuda", true));
  for (const char* b : {"auto", "mpi"})
    for (const char* d : {"cpu", "auto", "cuda"})
      for (bool built : {true, false}) EXPECT_NO_THROW(check_comm_backend_request(b, d, built)) << b << " " << d;
}

TEST(CommBackend, StagesRefuseNcclOnTheCpuBeforeRunning) {
  const Config cfg = parse_config("[run]\nstages = dense\ndevice = cpu\n[parallel]\nbackend = nccl\n", "nccl_cpu.ini");
  const std::string m = message_of<UsageError>([&] { check_stages_runnable(cfg); });
  EXPECT_NE(m.find("parallel.backend = nccl needs run.device = cuda"), std::string::npos) << m;
  // The same config with the default backend is runnable.
  const Config fine = parse_config("[run]\nstages = dense\ndevice = cpu\n", "auto_cpu.ini");
  EXPECT_NO_THROW(check_stages_runnable(fine));
}

TEST(CommBackend, SchemaDefaultIsAutoAndTakesTheThreeValues) {
  EXPECT_EQ(default_config().get_string("parallel.backend"), "auto");
  for (const char* v : {"auto", "mpi", "nccl"})
    EXPECT_EQ(parse_config(std::string("[parallel]\nbackend = ") + v + "\n", "b.ini").get_string("parallel.backend"), v);
  EXPECT_TRUE(is_usage_error([] { parse_config("[parallel]\nbackend = gloo\n", "b.ini"); }));
}

TEST(CommBackend, ThisBuildReportsItsNccl) {
  const NcclSupport s = nccl_support();
  EXPECT_EQ(s.built, nccl_in_build());
#ifdef UPCYCLE_WITH_NCCL
  EXPECT_TRUE(nccl_in_build());
  if (s.usable) {
    // The library CMake found (or one on the library path) loads without a GPU.
    EXPECT_GE(nccl_version_code(), 21800);
    EXPECT_EQ(nccl_version_string().find("2."), 0u) << nccl_version_string();
  } else {
    EXPECT_FALSE(s.why.empty());
  }
#else
  EXPECT_FALSE(nccl_in_build());
  EXPECT_FALSE(s.usable);
  EXPECT_NE(s.why.find("this build has no NCCL communicator"), std::string::npos) << s.why;
  EXPECT_NE(message_of<Error>([] { make_nccl_communicator(0, 1, [](void*, std::size_t) {}); })
                .find("this build has no NCCL communicator"),
            std::string::npos);
#endif
}

// --- one GPU per rank ---

TEST(GpuChoice, EachLocalRankItsOwnGpuWhenThereAreEnough) {
  for (int r = 0; r < 8; ++r) EXPECT_EQ(gpu_for_local_rank(r, 8), r);
  EXPECT_EQ(gpu_for_local_rank(0, 1), 0);
  // More ranks than GPUs: round robin (allowed for mpi; check_ranks_per_gpu decides for nccl).
  EXPECT_EQ(gpu_for_local_rank(5, 4), 1);
  EXPECT_THROW(gpu_for_local_rank(0, 0), Error);
  EXPECT_THROW(gpu_for_local_rank(-1, 4), Error);
}

TEST(GpuChoice, MoreRanksThanGpusIsAnErrorNamingBothNumbers) {
  const std::string m = message_of<Error>([] { check_ranks_per_gpu(2, 1, 2, 1); });
  EXPECT_NE(m.find("2 ranks on this node but 1 visible GPU(s)"), std::string::npos) << m;
  EXPECT_NE(m.find("parallel.backend = mpi"), std::string::npos) << m;
  const std::string m8 = message_of<Error>([] { check_ranks_per_gpu(8, 4, 2, 1); });
  EXPECT_NE(m8.find("8 ranks on this node but 4 visible GPU(s)"), std::string::npos) << m8;
  EXPECT_NE(m8.find("start at most 4 rank(s) per node"), std::string::npos) << m8;
  // Within the limit, or no limit (mpi).
  EXPECT_NO_THROW(check_ranks_per_gpu(4, 4, 1, 1));
  EXPECT_NO_THROW(check_ranks_per_gpu(2, 1, 2, 2));
  EXPECT_NO_THROW(check_ranks_per_gpu(8, 1, 8, 0));
  // srun --gpus-per-task=1: each of 4 ranks sees one GPU of its own (busiest = 1).
  EXPECT_NO_THROW(check_ranks_per_gpu(4, 1, 1, 1));
  EXPECT_THROW(check_ranks_per_gpu(3, 1, 3, 2), Error);
}

TEST(GpuChoice, TwoRanksPerGpuOnlyWithTheVariableAndNccl230) {
  EXPECT_EQ(nccl_ranks_per_gpu(22809, nullptr), 1);
  EXPECT_EQ(nccl_ranks_per_gpu(22809, "1"), 1);  // 2.28.9: "Duplicate GPU detected"
  EXPECT_EQ(nccl_ranks_per_gpu(23000, nullptr), 1);
  EXPECT_EQ(nccl_ranks_per_gpu(23000, "0"), 1);
  EXPECT_EQ(nccl_ranks_per_gpu(23000, "1"), 2);
  EXPECT_EQ(nccl_ranks_per_gpu(23105, "1"), 2);
}

TEST(GpuChoice, CpuRunsBindNoGpu) {
  const GpuBinding b = bind_rank_to_gpu("cpu", "nccl");
  EXPECT_EQ(b.gpu, -1);
  EXPECT_EQ(b.gpu_count, 0);
  EXPECT_EQ(b.node.local_rank, 0);  // a single process (no MPI launcher)
  EXPECT_EQ(b.node.local_size, 1);
}

#ifdef UPCYCLE_WITH_NCCL
#include "dist/nccl_library.hpp"

// A failing NCCL call throws an upcycle::Error with the call, the rank and NCCL's own words (the
// library loads without a GPU; the result codes are NCCL's).
TEST(NcclErrors, NameTheCallTheRankAndNcclsMessage) {
  if (!nccl_support().usable) GTEST_SKIP() << nccl_support().why;
  const nccl::Library& lib = nccl::library();
  std::string m;
  try {
    nccl::check(ncclInvalidArgument, "ncclAllReduce", nullptr, "rank 3 of 8");
  } catch (const Error& e) {
    m = e.what();
  }
  EXPECT_NE(m.find("ncclAllReduce failed on rank 3 of 8: "), std::string::npos) << m;
  EXPECT_NE(m.find(lib.GetErrorString(ncclInvalidArgument)), std::string::npos) << m;
  EXPECT_NE(m.find("nccl_library.cpp:"), std::string::npos) << "file and line: " << m;
  EXPECT_NO_THROW(nccl::check(ncclSuccess, "ncclAllReduce", nullptr, "rank 0 of 1"));
  EXPECT_EQ(nccl::version_text(22809), "2.28.9");
  EXPECT_EQ(nccl::version_text(2708), "2.7.8");  // the encoding of 2.8 and older
  EXPECT_EQ(nccl::version_text(23000), "2.30.0");
  EXPECT_EQ(nccl::version_text(lib.version), nccl_version_string());
}
#endif
