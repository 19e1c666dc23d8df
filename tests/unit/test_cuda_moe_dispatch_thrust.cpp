// The CUDA backend's MoE dispatch algorithm (kernels/moe_dispatch_thrust.inl) run on the CPU
// through Thrust's CPP system, without a GPU, compared output by output with a naive reference
// and with CpuBackend::moe_dispatch: random routings with T in {0, 1, 7, 100}, k in {1, 2, 4},
// E in {1, 3, 8}, capacity 0 (keep all) and small; and invalid expert ids.
//
// Compiled with -DTHRUST_DEVICE_SYSTEM=THRUST_DEVICE_SYSTEM_CPP -I<cuda>/include/cccl
// -I<cuda>/include (Thrust is header-only; no CUDA runtime is linked).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <thrust/system/cpp/execution_policy.h>

#include "moe_dispatch_thrust.inl"
#include "upcycle/backend/backend.hpp"

namespace {

struct Dispatch {
  std::vector<std::int64_t> counts, kept_slots, kept_tokens, slot_dropped;
};

// Counts the reports of invalid expert ids (the CUDA build sets the device error flag instead).
struct CountReports {
  int* reports;
  void operator()() const { ++*reports; }
};

Dispatch run_thrust(const std::vector<std::int64_t>& indices, std::int64_t k, std::int64_t E, std::int64_t capacity,
                    int* reports) {
  const auto S = static_cast<std::int64_t>(indices.size());
  // Outputs start as garbage: every element must be written.
  Dispatch d{std::vector<std::int64_t>(static_cast<std::size_t>(2 * E), -7),
             std::vector<std::int64_t>(static_cast<std::size_t>(S), -7),
             std::vector<std::int64_t>(static_cast<std::size_t>(S), -7),
             std::vector<std::int64_t>(static_cast<std::size_t>(S), -7)};
  std::vector<std::int64_t> scratch(static_cast<std::size_t>(upcycle::moe_thrust::scratch_elements(S, E)), -7);
  upcycle::moe_thrust::moe_dispatch_thrust(thrust::cpp::par, indices.data(), S, k, E, capacity, d.counts.data(),
                                           d.kept_slots.data(), d.kept_tokens.data(), d.slot_dropped.data(),
                                           scratch.data(), CountReports{reports});
  return d;
}

// The definition, written out plainly: each expert's slots in slot order, its first `capacity`
// kept (all when capacity is 0), the kept ones listed expert by expert; invalid ids are left out.
Dispatch run_naive(const std::vector<std::int64_t>& indices, std::int64_t k, std::int64_t E, std::int64_t capacity) {
  const auto S = static_cast<std::int64_t>(indices.size());
  Dispatch d{std::vector<std::int64_t>(static_cast<std::size_t>(2 * E), 0),
             std::vector<std::int64_t>(static_cast<std::size_t>(S), 0),
             std::vector<std::int64_t>(static_cast<std::size_t>(S), 0),
             std::vector<std::int64_t>(static_cast<std::size_t>(S), 0)};
  std::size_t next = 0;
  for (std::int64_t e = 0; e < E; ++e) {
    std::vector<std::int64_t> mine;
    for (std::int64_t s = 0; s < S; ++s)
      if (indices[static_cast<std::size_t>(s)] == e) mine.push_back(s);
    const auto routed = static_cast<std::int64_t>(mine.size());
    const std::int64_t kept = capacity == 0 ? routed : std::min(routed, capacity);
    d.counts[static_cast<std::size_t>(e)] = routed;
    d.counts[static_cast<std::size_t>(E + e)] = kept;
    for (std::int64_t i = 0; i < routed; ++i) {
      const std::int64_t s = mine[static_cast<std::size_t>(i)];
      if (i < kept) {
        d.kept_slots[next] = s;
        d.kept_tokens[next] = s / k;
        ++next;
      } else {
        d.slot_dropped[static_cast<std::size_t>(s)] = 1;
      }
    }
  }
  return d;
}

Dispatch run_cpu_backend(const std::vector<std::int64_t>& indices, std::int64_t k, std::int64_t E,
                         std::int64_t capacity) {
  using upcycle::Device;
  using upcycle::DType;
  using upcycle::Tensor;
  const auto S = static_cast<std::int64_t>(indices.size());
  const Tensor idx = Tensor::from_vector<std::int64_t>(indices, {S / k, k}, Device::cpu);
  Tensor counts = Tensor::empty({2, E}, DType::i64, Device::cpu);
  Tensor slots = Tensor::empty({S}, DType::i64, Device::cpu);
  Tensor tokens = Tensor::empty({S}, DType::i64, Device::cpu);
  Tensor dropped = Tensor::empty({S}, DType::i64, Device::cpu);
  upcycle::backend_for(Device::cpu).moe_dispatch(idx, E, capacity, counts, slots, tokens, dropped);
  return {counts.to_vector<std::int64_t>(), slots.to_vector<std::int64_t>(), tokens.to_vector<std::int64_t>(),
          dropped.to_vector<std::int64_t>()};
}

void expect_same(const Dispatch& got, const Dispatch& want, const std::string& what) {
  EXPECT_EQ(got.counts, want.counts) << what;
  EXPECT_EQ(got.kept_slots, want.kept_slots) << what;
  EXPECT_EQ(got.kept_tokens, want.kept_tokens) << what;
  EXPECT_EQ(got.slot_dropped, want.slot_dropped) << what;
}

TEST(CudaMoeDispatchThrust, MatchesTheReferenceAndTheCpuBackend) {
  std::mt19937 rng(2024);
  int cases = 0;
  for (std::int64_t T : {0, 1, 7, 100})
    for (std::int64_t k : {1, 2, 4})
      for (std::int64_t E : {1, 3, 8})
        for (std::int64_t capacity : {0, 1, 2, 5}) {
          std::uniform_int_distribution<std::int64_t> expert(0, E - 1);
          std::vector<std::int64_t> indices(static_cast<std::size_t>(T * k));
          for (auto& e : indices) e = expert(rng);
          const std::string what = "T=" + std::to_string(T) + " k=" + std::to_string(k) + " E=" + std::to_string(E) +
                                   " capacity=" + std::to_string(capacity);
          int reports = 0;
          const Dispatch got = run_thrust(indices, k, E, capacity, &reports);
          EXPECT_EQ(reports, 0) << what;
          expect_same(got, run_naive(indices, k, E, capacity), what + " (naive reference)");
          expect_same(got, run_cpu_backend(indices, k, E, capacity), what + " (CpuBackend)");
          ++cases;
        }
  EXPECT_EQ(cases, 4 * 3 * 3 * 4);
}

// A concrete case worked by hand: 4 tokens, k = 2, 3 experts, capacity 2.
TEST(CudaMoeDispatchThrust, HandWorkedExample) {
  // slots:           0  1  2  3  4  5  6  7
  const std::vector<std::int64_t> indices = {2, 0, 0, 2, 2, 0, 2, 1};
  int reports = 0;
  const Dispatch d = run_thrust(indices, 2, 3, 2, &reports);
  EXPECT_EQ(reports, 0);
  EXPECT_EQ(d.counts, (std::vector<std::int64_t>{3, 1, 4, 2, 1, 2}));
  // expert 0 keeps slots 1, 2 (drops 5); expert 1 keeps 7; expert 2 keeps 0, 3 (drops 4, 6).
  EXPECT_EQ(d.kept_slots, (std::vector<std::int64_t>{1, 2, 7, 0, 3, 0, 0, 0}));
  EXPECT_EQ(d.kept_tokens, (std::vector<std::int64_t>{0, 1, 3, 0, 1, 0, 0, 0}));
  EXPECT_EQ(d.slot_dropped, (std::vector<std::int64_t>{0, 0, 0, 0, 1, 1, 1, 0}));
}

// Invalid expert ids are reported and their slots left out of every count (the CPU backend
// throws instead, so only the reference is compared here).
TEST(CudaMoeDispatchThrust, InvalidExpertIdsAreReportedAndLeftOut) {
  const std::vector<std::int64_t> indices = {1, -1, 0, 3, 1, 7, 0, 1};
  int reports = 0;
  const Dispatch d = run_thrust(indices, 2, 3, 0, &reports);
  EXPECT_EQ(reports, 3);
  expect_same(d, run_naive(indices, 2, 3, 0), "invalid ids");
  EXPECT_EQ(d.counts, (std::vector<std::int64_t>{2, 3, 0, 2, 3, 0}));
  EXPECT_EQ(d.slot_dropped, (std::vector<std::int64_t>(8, 0)));
}

}  // namespace
