// MoE dispatch bookkeeping on the CPU (twin of kernels/moe_dispatch.cu): a counting sort of the
// routing slots by expert. Slots visited in increasing s are in token order within each expert,
// so the sort is stable and the first `capacity` slots an expert meets are the ones it keeps.
#include <vector>

#include "backend/kernel_checks.hpp"
#include "cpu_backend.hpp"

namespace upcycle {

void CpuBackend::moe_dispatch(const Tensor& indices, std::int64_t num_experts, std::int64_t capacity, Tensor& counts,
                              Tensor& kept_slots, Tensor& kept_tokens, Tensor& slot_dropped) {
  check_moe_dispatch_args(indices, num_experts, capacity, counts, kept_slots, kept_tokens, slot_dropped);
  const std::int64_t E = num_experts, k = indices.dim(1), S = indices.numel();
  const std::int64_t* idx = indices.data<std::int64_t>();
  std::int64_t* routed = counts.data<std::int64_t>();
  std::int64_t* kept = routed + E;
  std::int64_t* slots = kept_slots.data<std::int64_t>();
  std::int64_t* tokens = kept_tokens.data<std::int64_t>();
  std::int64_t* dropped = slot_dropped.data<std::int64_t>();
  for (std::int64_t e = 0; e < E; ++e) routed[e] = 0;
  for (std::int64_t s = 0; s < S; ++s) {
    UPCYCLE_CHECK(idx[s] >= 0 && idx[s] < E, "moe_dispatch: expert index ", idx[s], " of slot ", s, " outside [0, ",
                  E, ")");
    ++routed[idx[s]];
  }
  std::vector<std::int64_t> next(static_cast<std::size_t>(E));  // next write position of each expert
  std::int64_t offset = 0;
  for (std::int64_t e = 0; e < E; ++e) {
    kept[e] = capacity > 0 && routed[e] > capacity ? capacity : routed[e];
    next[static_cast<std::size_t>(e)] = offset;
    offset += kept[e];
  }
  std::vector<std::int64_t> seen(static_cast<std::size_t>(E), 0);
  for (std::int64_t s = 0; s < S; ++s) {
    const auto e = static_cast<std::size_t>(idx[s]);
    if (seen[e]++ >= kept[e]) {
      dropped[s] = 1;
      continue;
    }
    dropped[s] = 0;
    const std::int64_t pos = next[e]++;
    slots[pos] = s;
    tokens[pos] = s / k;
  }
  for (std::int64_t p = offset; p < S; ++p) slots[p] = tokens[p] = 0;  // unspecified; keep them defined
}

}  // namespace upcycle
