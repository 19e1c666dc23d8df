// Routing statistics for logging (no gradient): loads, their CoV and max/mean, routing entropy and
// the expert-level mean probability, optionally summed over the ranks of a communicator.
#include <algorithm>
#include <cmath>
#include <vector>

#include "router_losses_common.hpp"
#include "upcycle/moe/router_losses.hpp"

namespace upcycle::moe {

RoutingStats routing_stats(const Tensor& probs, const Tensor& indices, const Tensor& dropped, Communicator* comm) {
  const std::int64_t k = detail::check_routing(probs, indices, "routing_stats");
  const std::int64_t T = probs.dim(0), E = probs.dim(1);
  UPCYCLE_CHECK(E >= 1, "routing_stats: no experts in ", describe(probs));
  const std::vector<double> p = detail::host_doubles(probs);
  const std::vector<std::int64_t> idx = detail::host_i64(indices);
  std::vector<double> drop;
  bool per_token = false;
  if (dropped.defined()) {
    per_token = dropped.ndim() == 1;
    UPCYCLE_CHECK((per_token && dropped.dim(0) == T) || (dropped.ndim() == 2 && dropped.dim(0) == T && dropped.dim(1) == k),
                  "routing_stats: dropped must be [T] or [T, k] = [", T, ", ", k, "], got ", describe(dropped));
    drop = detail::host_doubles(dropped);
  }

  // One buffer for the single all_reduce:
  // [counts (E), sum of routed p per expert (E), entropy sum, tokens, slots].
  const std::size_t ue = static_cast<std::size_t>(E);
  std::vector<double> buf(2 * ue + 3, 0.0);
  for (std::int64_t t = 0; t < T; ++t) {
    const double* row = p.data() + t * E;
    double h = 0.0;
    for (std::int64_t e = 0; e < E; ++e)
      if (row[e] > 0.0) h -= row[e] * std::log(row[e]);
    buf[2 * ue] += h;
    for (std::int64_t j = 0; j < k; ++j) {
      const std::int64_t e = idx[static_cast<std::size_t>(t * k + j)];
      UPCYCLE_CHECK(e >= 0 && e < E, "routing_stats: expert index ", e, " outside [0, ", E, ")");
      if (!drop.empty() && drop[static_cast<std::size_t>(per_token ? t : t * k + j)] != 0.0) continue;
      buf[static_cast<std::size_t>(e)] += 1.0;
      buf[ue + static_cast<std::size_t>(e)] += row[e];
      buf[2 * ue + 2] += 1.0;
    }
  }
  buf[2 * ue + 1] = static_cast<double>(T);
  if (comm) {
    Tensor b = Tensor::from_vector(buf, {static_cast<std::int64_t>(buf.size())}, Device::cpu);
    comm->all_reduce(b, CommReduce::sum);
    buf = b.to_vector<double>();
  }

  RoutingStats s;
  s.num_tokens = static_cast<std::int64_t>(std::llround(buf[2 * ue + 1]));
  s.num_slots = static_cast<std::int64_t>(std::llround(buf[2 * ue + 2]));
  s.counts.assign(buf.begin(), buf.begin() + E);
  s.expert_mean_prob.assign(ue, 0.0);
  for (std::size_t e = 0; e < ue; ++e)
    if (s.counts[e] > 0) s.expert_mean_prob[e] = buf[ue + e] / s.counts[e];
  const double mean = static_cast<double>(s.num_slots) / static_cast<double>(E);
  if (mean > 0) {
    double var = 0.0, mx = 0.0;
    for (double c : s.counts) {
      var += (c - mean) * (c - mean);
      mx = std::max(mx, c);
    }
    var /= static_cast<double>(E);
    s.load_cov = std::sqrt(var) / mean;
    s.load_max_over_mean = mx / mean;
  }
  if (s.num_tokens > 0) s.mean_entropy = buf[2 * ue] / static_cast<double>(s.num_tokens);
  s.normalized_entropy = E > 1 ? s.mean_entropy / std::log(static_cast<double>(E)) : 0.0;
  return s;
}

}  // namespace upcycle::moe
