// Dirichlet-Prior Shaping Loss (DPSL). See include/upcycle/moe/router_losses.hpp for the formula,
// the group-conditioned priors and the two scopes. Everything is computed on the host in double:
// the rows (gathered from all ranks under DpslScope::global) are sorted column by column within
// each group, the Beta CDF gives the loss and the (clipped) Beta pdf the gradient of this rank's
// rows, which is fixed in forward; backward only scales it by the incoming seed.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include <boost/math/special_functions/beta.hpp>

#include "router_losses_common.hpp"
#include "upcycle/backend/backend.hpp"
#include "upcycle/ops/device_scalar.hpp"
#include "upcycle/moe/router_losses.hpp"

namespace upcycle::moe {

namespace {

// Double precision without promotion to long double (about 3x faster, still ~1e-15 relative),
// and no exception on overflow (the pdf may be +inf; it is clipped).
using BetaPolicy = boost::math::policies::policy<
    boost::math::policies::promote_double<false>,
    boost::math::policies::overflow_error<boost::math::policies::ignore_error>>;

constexpr double kInf = std::numeric_limits<double>::infinity();

}  // namespace

double beta_cdf(double a, double b, double x) {
  if (!(x > 0.0)) return 0.0;  // also x = -0 and values below 0
  if (x >= 1.0) return 1.0;
  return boost::math::ibeta(a, b, x, BetaPolicy());
}

double beta_pdf(double a, double b, double x) {
  if (x < 0.0 || x > 1.0) return 0.0;
  if (x == 0.0) return a < 1.0 ? kInf : (a == 1.0 ? b : 0.0);  // x^(a-1) (1-x)^(b-1) / B(a, b)
  if (x == 1.0) return b < 1.0 ? kInf : (b == 1.0 ? a : 0.0);
  return boost::math::ibeta_derivative(a, b, x, BetaPolicy());
}

// --- priors ---

void DirichletPrior::validate() const {
  UPCYCLE_CHECK(!alpha.empty(), "DirichletPrior: no concentration vector");
  const std::size_t E = alpha[0].size();
  UPCYCLE_CHECK(E >= 2, "DirichletPrior: needs at least 2 experts, got ", E);
  for (std::size_t g = 0; g < alpha.size(); ++g) {
    UPCYCLE_CHECK(alpha[g].size() == E, "DirichletPrior: group ", g, " has ", alpha[g].size(),
                  " concentrations, group 0 has ", E);
    for (std::size_t e = 0; e < E; ++e)
      UPCYCLE_CHECK(alpha[g][e] > 0.0 && std::isfinite(alpha[g][e]), "DirichletPrior: alpha[", g, "][", e,
                    "] = ", alpha[g][e], " must be a finite value > 0");
  }
}

DirichletPrior DirichletPrior::symmetric(std::int64_t num_experts, double alpha) {
  DirichletPrior p;
  p.alpha.assign(1, std::vector<double>(static_cast<std::size_t>(std::max<std::int64_t>(num_experts, 0)), alpha));
  p.validate();
  return p;
}

DirichletPrior DirichletPrior::asymmetric(std::vector<double> alpha) {
  DirichletPrior p;
  p.alpha.push_back(std::move(alpha));
  p.validate();
  return p;
}

DirichletPrior DirichletPrior::group_conditioned(std::int64_t num_groups, std::int64_t num_experts, double alpha_b,
                                                 double alpha_s) {
  UPCYCLE_CHECK(num_groups >= 1, "DirichletPrior::group_conditioned: num_groups must be >= 1, got ", num_groups);
  UPCYCLE_CHECK(num_experts >= 2, "DirichletPrior::group_conditioned: num_experts must be >= 2, got ", num_experts);
  const std::int64_t G = num_groups, E = num_experts;
  DirichletPrior p;
  p.alpha.assign(static_cast<std::size_t>(G), std::vector<double>(static_cast<std::size_t>(E), alpha_b));
  for (std::int64_t m = 0; m < G; ++m)
    for (std::int64_t e = 0; e < E; ++e) {
      const bool owned = G <= E ? (e * G) / E == m : e == (m * E) / G;
      if (owned) p.alpha[static_cast<std::size_t>(m)][static_cast<std::size_t>(e)] += alpha_s;
    }
  p.validate();
  return p;
}

// --- the loss ---

Var dpsl_loss(const Var& probs, const DirichletPrior& prior, const DpslOptions& options, const Tensor& groups) {
  const Tensor& pv = probs.value();
  UPCYCLE_CHECK(pv.ndim() == 2, "dpsl_loss: probabilities must be [B, E], got ", describe(pv));
  UPCYCLE_CHECK(pv.dtype() == DType::f32 || pv.dtype() == DType::f64, "dpsl_loss: probabilities must be f32 or f64, got ",
                describe(pv));
  prior.validate();
  const std::int64_t B_local = pv.dim(0), E = pv.dim(1), G = prior.num_groups();
  UPCYCLE_CHECK(E == prior.num_experts(), "dpsl_loss: the prior has ", prior.num_experts(),
                " experts, the probabilities ", describe(pv));
  UPCYCLE_CHECK(options.pdf_clip > 0.0, "dpsl_loss: pdf_clip must be > 0, got ", options.pdf_clip);

  // This rank's rows and group ids on the host.
  std::vector<double> local_p = detail::host_doubles(pv);
  std::vector<std::int64_t> local_g(static_cast<std::size_t>(B_local), 0);
  if (groups.defined()) {
    UPCYCLE_CHECK(groups.ndim() == 1 && groups.dim(0) == B_local, "dpsl_loss: groups must be i64 [", B_local,
                  "], got ", describe(groups));
    local_g = detail::host_i64(groups);
    for (std::int64_t g : local_g)
      UPCYCLE_CHECK(g < G, "dpsl_loss: group id ", g, " but the prior has ", G, " group(s)");
  } else {
    UPCYCLE_CHECK(G == 1, "dpsl_loss: the prior has ", G, " groups, so every row needs a group id (groups [B])");
  }

  // All rows of the batch (global scope: every rank's, in rank order) and where ours start.
  std::vector<double> all_p;
  std::vector<std::int64_t> all_g;
  std::int64_t offset = 0;
  Communicator* comm = options.scope == DpslScope::global ? options.comm : nullptr;
  if (comm && comm->size() > 1) {
    const int W = comm->size();
    Tensor mine = Tensor::full({1}, static_cast<double>(B_local), DType::i64, Device::cpu);
    Tensor counts_t = Tensor::empty({W}, DType::i64, Device::cpu);
    comm->all_gather(mine, counts_t);
    const std::vector<std::int64_t> counts = counts_t.to_vector<std::int64_t>();
    const std::int64_t max_rows = *std::max_element(counts.begin(), counts.end());
    for (int r = 0; r < comm->rank(); ++r) offset += counts[static_cast<std::size_t>(r)];
    if (max_rows > 0) {
      // Rows padded to the largest count, the group id as an extra column (exact in double).
      const std::int64_t C = E + 1;
      Tensor pack = Tensor::zeros({max_rows, C}, DType::f64, Device::cpu);
      double* pk = pack.data<double>();
      for (std::int64_t t = 0; t < B_local; ++t) {
        std::copy_n(local_p.data() + t * E, E, pk + t * C);
        pk[t * C + E] = static_cast<double>(local_g[static_cast<std::size_t>(t)]);
      }
      Tensor gathered = Tensor::empty({W * max_rows, C}, DType::f64, Device::cpu);
      comm->all_gather(pack, gathered);
      const double* ga = gathered.data<double>();
      for (int r = 0; r < W; ++r)
        for (std::int64_t t = 0; t < counts[static_cast<std::size_t>(r)]; ++t) {
          const double* row = ga + (r * max_rows + t) * C;
          all_p.insert(all_p.end(), row, row + E);
          all_g.push_back(static_cast<std::int64_t>(row[E]));
        }
    }
  } else {
    all_p = std::move(local_p);
    all_g = local_g;
  }
  const std::int64_t B_all = static_cast<std::int64_t>(all_g.size());

  const bool want_grad = grad_enabled() && probs.requires_grad();
  std::vector<double> grad(want_grad ? static_cast<std::size_t>(B_local * E) : 0, 0.0);
  const double lambda = options.weight, clip = options.pdf_clip;

  bool any_nan = false;
  for (double v : all_p) any_nan = any_nan || std::isnan(v);
  double loss = 0.0;
  if (any_nan) {
    // A NaN has no place in the sort: report NaN (the trainer's finiteness check catches it).
    loss = std::numeric_limits<double>::quiet_NaN();
    std::fill(grad.begin(), grad.end(), loss);
  } else {
    // Rows of each group, in ascending (global) row order.
    std::vector<std::vector<std::int64_t>> members(static_cast<std::size_t>(G));
    for (std::int64_t t = 0; t < B_all; ++t)
      if (all_g[static_cast<std::size_t>(t)] >= 0) members[static_cast<std::size_t>(all_g[static_cast<std::size_t>(t)])].push_back(t);
    // One task per (group, expert column); each writes its own partial loss and its own gradient
    // entries, and the partial losses are summed in a fixed order (deterministic in the threads).
    const std::int64_t tasks = G * E;
    std::vector<double> partial(static_cast<std::size_t>(tasks), 0.0);
    const std::int64_t hi = offset + B_local;
#pragma omp parallel for schedule(dynamic, 1) if (B_all * E > 4096)
    for (std::int64_t task = 0; task < tasks; ++task) {
      const std::int64_t m = task / E, k = task % E;
      const std::vector<std::int64_t>& rows = members[static_cast<std::size_t>(m)];
      const std::int64_t Bm = static_cast<std::int64_t>(rows.size());
      if (Bm == 0) continue;
      const std::vector<double>& am = prior.alpha[static_cast<std::size_t>(m)];
      const double a = am[static_cast<std::size_t>(k)];
      const double A = std::accumulate(am.begin(), am.end(), 0.0);
      const double b = A - a;
      // Values clamped into [0, 1]; ties keep the row order (stable sort of row-ordered values).
      std::vector<double> v(static_cast<std::size_t>(Bm));
      for (std::int64_t i = 0; i < Bm; ++i)
        v[static_cast<std::size_t>(i)] = std::clamp(all_p[static_cast<std::size_t>(rows[static_cast<std::size_t>(i)] * E + k)], 0.0, 1.0);
      std::vector<std::int64_t> order(static_cast<std::size_t>(Bm));
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&v](std::int64_t x, std::int64_t y) {
        return v[static_cast<std::size_t>(x)] < v[static_cast<std::size_t>(y)];
      });
      const double inv_b = 1.0 / static_cast<double>(Bm);
      double s = 0.0;
      for (std::int64_t j = 1; j <= Bm; ++j) {
        const std::int64_t i = order[static_cast<std::size_t>(j - 1)];
        const double x = v[static_cast<std::size_t>(i)];
        const double F = beta_cdf(a, b, x);
        const double d = static_cast<double>(j) * inv_b - F;  // empirical minus Beta CDF
        s += d * d;
        const std::int64_t row = rows[static_cast<std::size_t>(i)];
        if (want_grad && row >= offset && row < hi) {
          const double f = std::min(beta_pdf(a, b, x), clip);
          // dL/dp_(j) = (2 lambda / B) (F - j/B) f
          grad[static_cast<std::size_t>((row - offset) * E + k)] = 2.0 * lambda * inv_b * (-d) * f;
        }
      }
      partial[static_cast<std::size_t>(task)] = s * inv_b;
    }
    for (double s : partial) loss += s;
    loss *= lambda;
  }

  Tensor out = Tensor::full({1}, loss, pv.dtype(), pv.device());
  Tensor g;
  if (want_grad) g = Tensor::from_vector(grad, {B_local, E}, Device::cpu).to(pv.dtype()).to(pv.device());
  return make_output("dpsl_loss", out, {&probs}, [g](const Tensor& gy, GradSink& sink) {
    UPCYCLE_CHECK(g.defined(), "dpsl_loss: backward reached a loss computed without gradient recording");
    Tensor gx = Tensor::empty_like(g);
    if (g.numel() > 0) gx = times_scalar(g, gy);
    sink.add(0, gx);
  });
}

}  // namespace upcycle::moe
