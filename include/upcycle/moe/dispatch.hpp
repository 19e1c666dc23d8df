#pragma once
// Bookkeeping of token dispatch: which (token, expert) slots are kept, in which order they travel,
// and how many rows go to every expert and rank. Functions of the routing only, so tests can
// compare them with independent counts.
//
// Slot s = t * k + j is the j-th choice of token t. Dispatch order: slots stably sorted by expert
// id, i.e. expert 0's slots in token order, then expert 1's, ... . With a capacity C > 0, expert
// e keeps only its first C slots in that (token) order; the rest are dropped and counted.
#include <cstdint>
#include <vector>

#include "upcycle/core/tensor.hpp"

namespace upcycle::moe {

// Capacity per expert for a rank-local batch of `tokens` tokens: ceil(capacity_factor * T * k / E),
// or 0 (no limit, dropless) when capacity_factor == 0. A negative factor throws.
std::int64_t expert_capacity(double capacity_factor, std::int64_t tokens, std::int64_t top_k,
                             std::int64_t num_experts);

// The dispatch of one forward. The slot lists stay on the routing's device (Backend::moe_dispatch
// sorts them there); only the per-expert counts come to the host, since the exchange sizes and the
// expert GEMMs need them: that copy is the dispatch's one host round trip.
struct DispatchPlan {
  std::int64_t tokens = 0, top_k = 0, num_experts = 0;
  std::int64_t capacity = 0;                 // 0 = unlimited
  Tensor slots;                              // [S] i64: kept slots in dispatch order
  Tensor slot_tokens;                        // [S] i64: slots / top_k, the token each kept slot reads
  Tensor slot_dropped;                       // [T, k] i64: 1 where capacity dropped slot s, else 0
  std::vector<std::int64_t> routed_counts;   // [E] slots routed to each expert (before capacity)
  std::vector<std::int64_t> kept_counts;     // [E] slots kept for each expert
  std::int64_t dropped = 0;                  // sum(routed_counts) - sum(kept_counts)
};

// indices: the router's [T, k] i64 choices (values in [0, E)) on any device; capacity as returned
// by expert_capacity.
DispatchPlan plan_dispatch(const Tensor& indices, std::int64_t num_experts, std::int64_t capacity);

// The expert-parallel side of the exchange for a group of P ranks holding L = E / P experts each.
struct ExchangePlan {
  std::vector<std::int64_t> send_counts;    // [P] rows to each rank (its experts' kept slots)
  std::vector<std::int64_t> recv_counts;    // [P] rows from each rank
  std::vector<std::int64_t> expert_rows;    // [L] rows each local expert receives in total
  // Received rows arrive source rank by source rank, each source's rows grouped by local expert.
  // to_expert_order[j] = the received row placed at position j when the rows are regrouped expert
  // by expert (expert 0's rows from rank 0, from rank 1, ..., then expert 1's, ...);
  // to_source_order is its inverse (position in expert order of received row i).
  std::vector<std::int64_t> to_expert_order;
  std::vector<std::int64_t> to_source_order;
};

// recv_expert_counts[q * L + i] = rows source rank q sends to local expert i (exchanged first).
ExchangePlan plan_exchange(const std::vector<std::int64_t>& kept_counts, int ep_size, int ep_rank,
                           const std::vector<std::int64_t>& recv_expert_counts);

}  // namespace upcycle::moe
