// Load-balancing loss (Switch), router z-loss (ST-MoE) and per-expert loads. See
// include/upcycle/moe/router_losses.hpp for the formulas and the multi-rank conventions.
#include "upcycle/moe/router_losses.hpp"

#include <vector>

#include "router_losses_common.hpp"
#include "upcycle/backend/backend.hpp"
#include "upcycle/ops/device_scalar.hpp"

namespace upcycle::moe {

using detail::host_i64;

Tensor expert_load(const Tensor& indices, std::int64_t num_experts, Communicator* comm) {
  UPCYCLE_CHECK(num_experts >= 1, "expert_load: num_experts must be >= 1, got ", num_experts);
  std::vector<double> counts(static_cast<std::size_t>(num_experts), 0.0);
  for (std::int64_t e : host_i64(indices)) {
    UPCYCLE_CHECK(e >= 0 && e < num_experts, "expert_load: expert index ", e, " outside [0, ", num_experts, ")");
    counts[static_cast<std::size_t>(e)] += 1.0;
  }
  Tensor out = Tensor::from_vector(counts, {num_experts}, Device::cpu);
  if (comm) comm->all_reduce(out, CommReduce::sum);
  return out;
}

Var load_balancing_loss(const Var& probs, const Tensor& indices, double weight, Communicator* comm) {
  const Tensor& p = probs.value();
  detail::check_routing(p, indices, "load_balancing_loss");
  const std::int64_t E = p.dim(1);
  std::vector<double> counts(static_cast<std::size_t>(E), 0.0);
  for (std::int64_t e : host_i64(indices)) {
    UPCYCLE_CHECK(e >= 0 && e < E, "load_balancing_loss: expert index ", e, " outside [0, ", E, ")");
    counts[static_cast<std::size_t>(e)] += 1.0;
  }
  return load_balancing_loss(probs, counts, weight, comm);
}

Var load_balancing_loss(const Var& probs, const std::vector<double>& expert_counts, double weight,
                        Communicator* comm) {
  const Tensor& p = probs.value();
  UPCYCLE_CHECK(p.ndim() == 2 && (p.dtype() == DType::f32 || p.dtype() == DType::f64),
                "load_balancing_loss: probabilities must be [T, E] f32 or f64, got ", describe(p));
  const std::int64_t T = p.dim(0), E = p.dim(1);
  UPCYCLE_CHECK(E >= 1, "load_balancing_loss: no experts in ", describe(p));
  UPCYCLE_CHECK(static_cast<std::int64_t>(expert_counts.size()) == E, "load_balancing_loss: ",
                expert_counts.size(), " expert counts for ", E, " experts");
  Backend& be = backend_of(p);
  const Device dev = p.device();

  // Counts and T on the host ([c_0..c_{E-1}, T]); the probability sums on the device. Each is
  // summed over the ranks by one all_reduce.
  std::vector<double> host(expert_counts);
  host.push_back(static_cast<double>(T));
  Tensor psum = Tensor::zeros({E}, DType::f64, dev);
  if (T > 0) {
    Tensor ps = Tensor::empty({E}, p.dtype(), dev);
    be.reduce(ReduceOp::sum, p, ps, 1, T, E);
    be.cast(ps, psum);
  }
  if (comm) {
    Tensor b = Tensor::from_vector(host, {E + 1}, Device::cpu);
    comm->all_reduce(b, CommReduce::sum);
    host = b.to_vector<double>();
    comm->all_reduce(psum, CommReduce::sum);
  }
  const double t_all = host[static_cast<std::size_t>(E)];
  double slots = 0.0;  // T k over all ranks (the count of routed slots)
  for (std::int64_t e = 0; e < E; ++e) slots += host[static_cast<std::size_t>(e)];

  // f_e = c_e / slots, P_e = psum_e / T; L = a E sum_e f_e P_e = sum_e coef_e psum_e with
  // coef_e = a E f_e / T, which is also dL/dp_te.
  std::vector<double> coef(static_cast<std::size_t>(E), 0.0);
  if (t_all > 0 && slots > 0)
    for (std::int64_t e = 0; e < E; ++e)
      coef[static_cast<std::size_t>(e)] = weight * static_cast<double>(E) * (host[static_cast<std::size_t>(e)] / slots) / t_all;
  const Tensor coef64 = Tensor::from_vector(coef, {E}, dev);
  Tensor terms = Tensor::empty({E}, DType::f64, dev), loss64 = Tensor::empty({1}, DType::f64, dev);
  be.binary(BinaryOp::mul, coef64, psum, terms);
  be.reduce(ReduceOp::sum, terms, loss64, 1, E, 1);
  const Tensor out = loss64.to(p.dtype());
  const Tensor coef_t = coef64.to(p.dtype());
  return make_output("load_balancing_loss", out, {&probs}, [coef_t, T, E](const Tensor& gy, GradSink& sink) {
    Tensor gx = Tensor::empty({T, E}, coef_t.dtype(), coef_t.device());
    if (T > 0) backend_of(coef_t).expand_axis(coef_t, gx, 1, T, E, 1.0);
    sink.add(0, times_scalar(gx, gy));
  });
}

Var router_z_loss(const Var& logits, double weight) {
  const Tensor& x = logits.value();
  UPCYCLE_CHECK(x.ndim() == 2, "router_z_loss: logits must be [T, E], got ", describe(x));
  UPCYCLE_CHECK(x.dtype() == DType::f32 || x.dtype() == DType::f64, "router_z_loss: logits must be f32 or f64, got ",
                describe(x));
  const std::int64_t T = x.dim(0), E = x.dim(1);
  UPCYCLE_CHECK(E >= 1, "router_z_loss: no experts in ", describe(x));
  if (T == 0) {
    Tensor out = Tensor::zeros({1}, x.dtype(), x.device());
    return make_output("router_z_loss", out, {&logits}, [x](const Tensor&, GradSink& sink) {
      sink.add(0, Tensor::zeros_like(x));
    });
  }
  Backend& be = backend_of(x);
  // lse_t = m_t + log sum_e exp(z_te - m_t), m_t = max_e z_te.
  Tensor m = Tensor::empty({T}, x.dtype(), x.device());
  be.reduce(ReduceOp::max, x, m, T, E, 1);
  // (The backend interface promises aliasing only for affine, so every step has its own output.)
  Tensor m_wide = Tensor::empty_like(x), shifted = Tensor::empty_like(x), ex = Tensor::empty_like(x);
  be.expand_axis(m, m_wide, T, E, 1, 1.0);
  be.binary(BinaryOp::sub, x, m_wide, shifted);
  be.unary(UnaryOp::exp, shifted, ex);
  Tensor s = Tensor::empty({T}, x.dtype(), x.device()), log_s = Tensor::empty_like(s), lse = Tensor::empty_like(s);
  be.reduce(ReduceOp::sum, ex, s, T, E, 1);
  be.unary(UnaryOp::log, s, log_s);
  be.binary(BinaryOp::add, log_s, m, lse);
  Tensor sq = Tensor::empty_like(lse);
  be.unary(UnaryOp::square, lse, sq);
  Tensor out = Tensor::empty({1}, x.dtype(), x.device());
  be.reduce(ReduceOp::sum, sq, out, 1, T, 1);
  const double scale = weight / static_cast<double>(T);
  be.affine(out, out, scale, 0.0);

  // dL/dz_te = (2 b / T) lse_t softmax(z)_te, softmax(z)_te = exp(z_te - lse_t).
  return make_output("router_z_loss", out, {&logits}, [x, lse, T, E, scale](const Tensor& gy, GradSink& sink) {
    Backend& bk = backend_of(x);
    Tensor lse_wide = Tensor::empty_like(x);
    bk.expand_axis(lse, lse_wide, T, E, 1, 1.0);
    Tensor shifted = Tensor::empty_like(x), p = Tensor::empty_like(x), gx = Tensor::empty_like(x);
    bk.binary(BinaryOp::sub, x, lse_wide, shifted);
    bk.unary(UnaryOp::exp, shifted, p);
    bk.binary(BinaryOp::mul, p, lse_wide, gx);
    bk.affine(gx, gx, 2.0 * scale, 0.0);
    sink.add(0, times_scalar(gx, gy));
  });
}

}  // namespace upcycle::moe
