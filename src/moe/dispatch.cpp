#include "upcycle/moe/dispatch.hpp"

#include <algorithm>
#include <cmath>

#include "upcycle/backend/backend.hpp"
#include "upcycle/core/error.hpp"

namespace upcycle::moe {

std::int64_t expert_capacity(double capacity_factor, std::int64_t tokens, std::int64_t top_k,
                             std::int64_t num_experts) {
  UPCYCLE_CHECK(capacity_factor >= 0.0 && std::isfinite(capacity_factor),
                "capacity_factor must be >= 0 (0 = dropless), got ", capacity_factor);
  UPCYCLE_CHECK(num_experts > 0 && top_k > 0 && tokens >= 0, "expert_capacity: bad sizes T = ", tokens,
                ", k = ", top_k, ", E = ", num_experts);
  if (capacity_factor == 0.0) return 0;
  const double c = std::ceil(capacity_factor * static_cast<double>(tokens * top_k) / static_cast<double>(num_experts));
  return static_cast<std::int64_t>(c);
}

DispatchPlan plan_dispatch(const Tensor& indices, std::int64_t num_experts, std::int64_t capacity) {
  check_dtype(indices, DType::i64, "plan_dispatch indices");
  UPCYCLE_CHECK(indices.ndim() == 2, "plan_dispatch: indices must be [T, k], got ", describe(indices));
  UPCYCLE_CHECK(capacity >= 0, "plan_dispatch: negative capacity ", capacity);
  const std::int64_t T = indices.dim(0), k = indices.dim(1), E = num_experts;
  const Device dev = indices.device();
  DispatchPlan p;
  p.tokens = T;
  p.top_k = k;
  p.num_experts = E;
  p.capacity = capacity;
  Tensor counts = Tensor::empty({2, E}, DType::i64, dev);
  Tensor slots = Tensor::empty({T * k}, DType::i64, dev), tokens = Tensor::empty({T * k}, DType::i64, dev);
  p.slot_dropped = Tensor::empty({T, k}, DType::i64, dev);
  Tensor dropped_flat = p.slot_dropped.reshape({T * k});
  backend_for(dev).moe_dispatch(indices, E, capacity, counts, slots, tokens, dropped_flat);
  const std::vector<std::int64_t> c = counts.to_vector<std::int64_t>();  // the one host round trip
  p.routed_counts.assign(c.begin(), c.begin() + E);
  p.kept_counts.assign(c.begin() + E, c.end());
  std::int64_t kept = 0;
  for (std::int64_t n : p.kept_counts) kept += n;
  p.slots = slots.rows(0, kept);
  p.slot_tokens = tokens.rows(0, kept);
  p.dropped = T * k - kept;
  return p;
}

ExchangePlan plan_exchange(const std::vector<std::int64_t>& kept_counts, int ep_size, int ep_rank,
                           const std::vector<std::int64_t>& recv_expert_counts) {
  const std::int64_t P = ep_size, E = static_cast<std::int64_t>(kept_counts.size());
  UPCYCLE_CHECK(P > 0 && E % P == 0 && ep_rank >= 0 && ep_rank < P, "plan_exchange: ", E, " experts over ", P,
                " ranks (rank ", ep_rank, ")");
  const std::int64_t L = E / P;
  UPCYCLE_CHECK(static_cast<std::int64_t>(recv_expert_counts.size()) == P * L, "plan_exchange: ",
                recv_expert_counts.size(), " received counts, expected ", P * L);
  ExchangePlan x;
  x.send_counts.assign(static_cast<std::size_t>(P), 0);
  for (std::int64_t e = 0; e < E; ++e) x.send_counts[static_cast<std::size_t>(e / L)] += kept_counts[static_cast<std::size_t>(e)];
  x.recv_counts.assign(static_cast<std::size_t>(P), 0);
  x.expert_rows.assign(static_cast<std::size_t>(L), 0);
  for (std::int64_t q = 0; q < P; ++q)
    for (std::int64_t i = 0; i < L; ++i) {
      const std::int64_t c = recv_expert_counts[static_cast<std::size_t>(q * L + i)];
      UPCYCLE_CHECK(c >= 0, "plan_exchange: negative count ", c, " from rank ", q);
      x.recv_counts[static_cast<std::size_t>(q)] += c;
      x.expert_rows[static_cast<std::size_t>(i)] += c;
    }
  // Offset of (source q, expert i) in the received (source-major) layout.
  std::vector<std::int64_t> src_offset(static_cast<std::size_t>(P * L), 0);
  std::int64_t o = 0;
  for (std::int64_t q = 0; q < P; ++q)
    for (std::int64_t i = 0; i < L; ++i) {
      src_offset[static_cast<std::size_t>(q * L + i)] = o;
      o += recv_expert_counts[static_cast<std::size_t>(q * L + i)];
    }
  x.to_expert_order.reserve(static_cast<std::size_t>(o));
  for (std::int64_t i = 0; i < L; ++i)
    for (std::int64_t q = 0; q < P; ++q) {
      const std::int64_t base = src_offset[static_cast<std::size_t>(q * L + i)];
      for (std::int64_t j = 0; j < recv_expert_counts[static_cast<std::size_t>(q * L + i)]; ++j)
        x.to_expert_order.push_back(base + j);
    }
  x.to_source_order.assign(x.to_expert_order.size(), 0);
  for (std::size_t j = 0; j < x.to_expert_order.size(); ++j)
    x.to_source_order[static_cast<std::size_t>(x.to_expert_order[j])] = static_cast<std::int64_t>(j);
  return x;
}

}  // namespace upcycle::moe
