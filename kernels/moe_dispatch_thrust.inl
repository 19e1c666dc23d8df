// The MoE dispatch bookkeeping as Thrust algorithms over plain pointers, written once for two
// systems: kernels/moe_dispatch.cu runs it on the GPU (thrust::cuda::par_nosync with the backend's
// allocator, on the compute stream), tests/unit/test_cuda_moe_dispatch_thrust.cpp on the CPU
// (THRUST_DEVICE_SYSTEM_CPP, thrust::cpp::par) against CpuBackend::moe_dispatch. No CUDA code
// here: the functors are UPCYCLE_HD, and what only the device can do (report an error) comes in
// as the Sink functor.
//
// CPU twin: CpuBackend::moe_dispatch in src/backend/cpu/cpu_dispatch.cpp (a counting sort). Here:
//   1. key[s] = expert of slot s (E for an invalid id: after every expert, so it is counted and
//      kept nowhere); order[s] = s;
//   2. stable sort of (key, order) by key: the slots of each expert in token order;
//   3. start[e] = first sorted position with key >= e, for e in [0, E] (a vectorised binary
//      search): routed[e] = start[e + 1] - start[e], kept[e] = routed[e] capped at capacity;
//   4. offset = exclusive scan of kept;
//   5. sorted position p of expert e has rank p - start[e] within its expert: kept when the rank
//      is below kept[e] (then written at offset[e] + rank), dropped otherwise.
// Invalid expert ids report through the sink; their slots get slot_dropped = 0 and nothing else.
#pragma once

#include <cstdint>

#include <thrust/binary_search.h>
#include <thrust/fill.h>
#include <thrust/for_each.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/scan.h>
#include <thrust/sequence.h>
#include <thrust/sort.h>
#include <thrust/transform.h>

#include "upcycle/core/host_device.hpp"

namespace upcycle::moe_thrust {

// int64 scratch elements moe_dispatch_thrust needs for S slots and E experts.
inline std::int64_t scratch_elements(std::int64_t slots, std::int64_t num_experts) {
  return 2 * slots + 2 * num_experts + 1;
}

// Step 1: the sort key of a slot, reporting an expert id outside [0, E).
template <class Sink>
struct SlotKey {
  const std::int64_t* indices;
  std::int64_t num_experts;
  Sink sink;
  UPCYCLE_HD std::int64_t operator()(std::int64_t s) const {
    const std::int64_t e = indices[s];
    if (e < 0 || e >= num_experts) {
      sink();
      return num_experts;
    }
    return e;
  }
};

// Step 3: counts[e] (routed) and counts[E + e] (kept) from the start positions.
struct ExpertCounts {
  const std::int64_t* start;
  std::int64_t* counts;
  std::int64_t num_experts, capacity;
  UPCYCLE_HD void operator()(std::int64_t e) const {
    const std::int64_t routed = start[e + 1] - start[e];
    counts[e] = routed;
    counts[num_experts + e] = capacity > 0 && routed > capacity ? capacity : routed;
  }
};

// Step 5: one sorted position. Each slot appears at exactly one position, so every write below
// goes to a distinct element.
struct PlaceSlot {
  const std::int64_t* key;
  const std::int64_t* order;
  const std::int64_t* start;
  const std::int64_t* kept;    // counts + E
  const std::int64_t* offset;  // exclusive scan of kept
  std::int64_t num_experts, k;
  std::int64_t* kept_slots;
  std::int64_t* kept_tokens;
  std::int64_t* slot_dropped;
  UPCYCLE_HD void operator()(std::int64_t p) const {
    const std::int64_t e = key[p], s = order[p];
    if (e >= num_experts) {  // an invalid expert id (already reported)
      slot_dropped[s] = 0;
      return;
    }
    const std::int64_t rank = p - start[e];
    if (rank >= kept[e]) {
      slot_dropped[s] = 1;
      return;
    }
    slot_dropped[s] = 0;
    const std::int64_t q = offset[e] + rank;
    kept_slots[q] = s;
    kept_tokens[q] = s / k;
  }
};

// indices [slots / k, k]; counts [2, E]; kept_slots, kept_tokens, slot_dropped [slots]; scratch
// of scratch_elements(slots, E) int64. Writes every output element (kept_slots / kept_tokens
// beyond the kept ones are 0, as on the CPU). All pointers are memory of the policy's system.
template <class Policy, class Sink>
void moe_dispatch_thrust(const Policy& policy, const std::int64_t* indices, std::int64_t slots, std::int64_t k,
                         std::int64_t num_experts, std::int64_t capacity, std::int64_t* counts,
                         std::int64_t* kept_slots, std::int64_t* kept_tokens, std::int64_t* slot_dropped,
                         std::int64_t* scratch, Sink sink) {
  const std::int64_t E = num_experts;
  std::int64_t* key = scratch;                // [slots]
  std::int64_t* order = key + slots;          // [slots]
  std::int64_t* start = order + slots;        // [E + 1]
  std::int64_t* offset = start + (E + 1);     // [E]
  const thrust::counting_iterator<std::int64_t> zero(0);

  if (slots > 0) {
    thrust::transform(policy, zero, zero + slots, key, SlotKey<Sink>{indices, E, sink});
    thrust::sequence(policy, order, order + slots);
    thrust::stable_sort_by_key(policy, key, key + slots, order);
  }
  thrust::lower_bound(policy, key, key + slots, zero, zero + (E + 1), start);
  thrust::for_each(policy, zero, zero + E, ExpertCounts{start, counts, E, capacity});
  thrust::exclusive_scan(policy, counts + E, counts + 2 * E, offset);
  if (slots == 0) return;
  thrust::fill(policy, kept_slots, kept_slots + slots, std::int64_t{0});
  thrust::fill(policy, kept_tokens, kept_tokens + slots, std::int64_t{0});
  thrust::for_each(policy, zero, zero + slots,
                   PlaceSlot{key, order, start, counts + E, offset, E, k, kept_slots, kept_tokens, slot_dropped});
}

}  // namespace upcycle::moe_thrust
