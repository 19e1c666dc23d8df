// Expert specialisation measures (include/upcycle/moe/specialisation.hpp), in double on the host.
#include "upcycle/moe/specialisation.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "upcycle/autograd/var.hpp"
#include "upcycle/core/error.hpp"

namespace upcycle::moe {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::vector<double> host_doubles(const Tensor& t, const char* what) {
  UPCYCLE_CHECK(t.defined(), what, ": undefined tensor");
  UPCYCLE_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::f64, what, ": expected f32 or f64, got ", describe(t));
  return t.to(Device::cpu).to(DType::f64).to_vector<double>();
}

// cos of the vectors a, b of length n (0 when either is zero: a zero vector has no direction).
double cosine(const double* a, const double* b, std::int64_t n) {
  double ab = 0.0, aa = 0.0, bb = 0.0;
  for (std::int64_t i = 0; i < n; ++i) {
    ab += a[i] * b[i];
    aa += a[i] * a[i];
    bb += b[i] * b[i];
  }
  return aa > 0.0 && bb > 0.0 ? ab / std::sqrt(aa * bb) : 0.0;
}

// Mean pairwise cosine of the E vectors v[e * n .. (e + 1) * n).
double pairwise_mean(const double* v, std::int64_t E, std::int64_t n) {
  if (E < 2) return kNaN;
  double s = 0.0;
  for (std::int64_t i = 0; i < E; ++i)
    for (std::int64_t j = i + 1; j < E; ++j) s += cosine(v + i * n, v + j * n, n);
  return s / static_cast<double>(E * (E - 1) / 2);
}

// all_gather along dim 0 over `comm` of a host copy of t (the communicator stages device tensors
// through the host anyway; the measures read the result on the host).
Tensor gather_dim0(Communicator& comm, const Tensor& t) {
  const Tensor local = t.to(Device::cpu);
  Tensor out = Tensor::empty(gathered_shape(local.shape(), comm.size()), local.dtype(), Device::cpu);
  comm.all_gather(local, out);
  return out;
}

}  // namespace

double mean_pairwise_cosine(const Tensor& rows) {
  UPCYCLE_CHECK(rows.defined() && rows.ndim() == 2, "mean_pairwise_cosine: expected [E, n], got ", describe(rows));
  const std::vector<double> v = host_doubles(rows, "mean_pairwise_cosine");
  return pairwise_mean(v.data(), rows.dim(0), rows.dim(1));
}

double expert_weight_cosine(const Tensor& w1, const Tensor& w2) {
  UPCYCLE_CHECK(w1.defined() && w2.defined() && w1.ndim() == 3 && w2.ndim() == 3 && w1.dim(0) == w2.dim(0),
                "expert_weight_cosine: expected w1 [E, F r, D] and w2 [E, D, F], got ", describe(w1), " and ",
                describe(w2));
  const std::int64_t E = w1.dim(0), n1 = w1.numel() / std::max<std::int64_t>(E, 1),
                     n2 = w2.numel() / std::max<std::int64_t>(E, 1);
  const std::vector<double> a = host_doubles(w1, "expert_weight_cosine w1"), b = host_doubles(w2, "expert_weight_cosine w2");
  // Expert e's vector is [w1_e flattened, w2_e flattened].
  std::vector<double> v(static_cast<std::size_t>(E * (n1 + n2)));
  for (std::int64_t e = 0; e < E; ++e) {
    std::copy(a.begin() + e * n1, a.begin() + (e + 1) * n1, v.begin() + e * (n1 + n2));
    std::copy(b.begin() + e * n2, b.begin() + (e + 1) * n2, v.begin() + e * (n1 + n2) + n1);
  }
  return pairwise_mean(v.data(), E, n1 + n2);
}

double expert_output_cosine_sum(const Tensor& outputs) {
  UPCYCLE_CHECK(outputs.defined() && outputs.ndim() == 3, "expert_output_cosine: expected [E, N, D], got ",
                describe(outputs));
  const std::int64_t E = outputs.dim(0), N = outputs.dim(1), D = outputs.dim(2);
  if (E < 2) return kNaN;
  const std::vector<double> o = host_doubles(outputs, "expert_output_cosine");
  std::vector<double> token(static_cast<std::size_t>(E * D));
  double s = 0.0;
  for (std::int64_t n = 0; n < N; ++n) {
    for (std::int64_t e = 0; e < E; ++e)
      std::copy(o.begin() + (e * N + n) * D, o.begin() + (e * N + n + 1) * D, token.begin() + e * D);
    s += pairwise_mean(token.data(), E, D);
  }
  return s;
}

double expert_output_cosine(const Tensor& outputs) {
  UPCYCLE_CHECK(outputs.defined() && outputs.ndim() == 3, "expert_output_cosine: expected [E, N, D], got ",
                describe(outputs));
  if (outputs.dim(1) == 0) return kNaN;
  return expert_output_cosine_sum(outputs) / static_cast<double>(outputs.dim(1));
}

std::pair<Tensor, Tensor> gather_expert_weights(const MoeLayer& layer) {
  Communicator& ep = *layer.ep_communicator();
  return {gather_dim0(ep, layer.experts.w1.value()), gather_dim0(ep, layer.experts.w2.value())};
}

Tensor all_expert_outputs(const MoeLayer& layer, const Tensor& x) {
  UPCYCLE_CHECK(x.defined() && x.ndim() == 2 && x.dim(1) == layer.config().d_model,
                "all_expert_outputs: expected rows [N, ", layer.config().d_model, "], got ", describe(x));
  NoGradGuard no_grad;
  const Var local = layer.local_expert_outputs(Var(x.to(layer.device())));  // [L, N, D]
  return gather_dim0(*layer.ep_communicator(), local.value());
}

CompactnessStats::CompactnessStats(std::int64_t num_experts, std::int64_t dim)
    : experts_(num_experts),
      dim_(dim),
      counts_(static_cast<std::size_t>(num_experts), 0.0),
      sums_(static_cast<std::size_t>(num_experts * dim), 0.0),
      squares_(static_cast<std::size_t>(num_experts), 0.0) {
  UPCYCLE_CHECK(num_experts >= 1 && dim >= 1, "CompactnessStats: ", num_experts, " experts of dimension ", dim);
}

void CompactnessStats::add(const Tensor& outputs, const Tensor& top1) {
  UPCYCLE_CHECK(outputs.defined() && outputs.ndim() == 2 && outputs.dim(1) == dim_,
                "CompactnessStats::add: outputs must be [T, ", dim_, "], got ", describe(outputs));
  const std::int64_t T = outputs.dim(0);
  UPCYCLE_CHECK(top1.defined() && top1.dtype() == DType::i64 && top1.dim(0) == T && (top1.ndim() == 1 || top1.ndim() == 2),
                "CompactnessStats::add: top1 must be i64 [", T, "] or [", T, ", k], got ", describe(top1));
  const std::int64_t stride = top1.ndim() == 2 ? top1.dim(1) : 1;
  const std::vector<std::int64_t> idx = top1.to(Device::cpu).to_vector<std::int64_t>();
  const std::vector<double> y = host_doubles(outputs, "CompactnessStats::add");
  for (std::int64_t t = 0; t < T; ++t) {
    const std::int64_t e = idx[static_cast<std::size_t>(t * stride)];
    UPCYCLE_CHECK(e >= 0 && e < experts_, "CompactnessStats::add: expert ", e, " outside [0, ", experts_, ")");
    const double* row = y.data() + t * dim_;
    double q = 0.0;
    double* s = sums_.data() + e * dim_;
    for (std::int64_t d = 0; d < dim_; ++d) {
      s[d] += row[d];
      q += row[d] * row[d];
    }
    counts_[static_cast<std::size_t>(e)] += 1.0;
    squares_[static_cast<std::size_t>(e)] += q;
  }
}

void CompactnessStats::all_reduce(Communicator& comm) {
  std::vector<double> buf;
  buf.reserve(counts_.size() + sums_.size() + squares_.size());
  buf.insert(buf.end(), counts_.begin(), counts_.end());
  buf.insert(buf.end(), sums_.begin(), sums_.end());
  buf.insert(buf.end(), squares_.begin(), squares_.end());
  Tensor t = Tensor::from_vector(buf, {static_cast<std::int64_t>(buf.size())}, Device::cpu);
  comm.all_reduce(t, CommReduce::sum);
  buf = t.to_vector<double>();
  auto it = buf.begin();
  std::copy(it, it + experts_, counts_.begin());
  it += experts_;
  std::copy(it, it + experts_ * dim_, sums_.begin());
  it += experts_ * dim_;
  std::copy(it, it + experts_, squares_.begin());
}

double CompactnessStats::relative_compactness() const {
  std::vector<std::int64_t> kept;
  for (std::int64_t e = 0; e < experts_; ++e)
    if (counts_[static_cast<std::size_t>(e)] >= 2.0) kept.push_back(e);
  if (kept.size() < 2) return kNaN;
  const double a = static_cast<double>(kept.size());
  std::vector<double> mean_of_means(static_cast<std::size_t>(dim_), 0.0);
  double within = 0.0;
  std::vector<std::vector<double>> mus;
  for (std::int64_t e : kept) {
    const double n = counts_[static_cast<std::size_t>(e)];
    std::vector<double> mu(static_cast<std::size_t>(dim_));
    double mu2 = 0.0;
    for (std::int64_t d = 0; d < dim_; ++d) {
      mu[static_cast<std::size_t>(d)] = sums_[static_cast<std::size_t>(e * dim_ + d)] / n;
      mu2 += mu[static_cast<std::size_t>(d)] * mu[static_cast<std::size_t>(d)];
      mean_of_means[static_cast<std::size_t>(d)] += mu[static_cast<std::size_t>(d)] / a;
    }
    // q/n - |mu|^2 can round just below 0 for a tight cluster.
    within += std::max(0.0, squares_[static_cast<std::size_t>(e)] / n - mu2) / a;
    mus.push_back(std::move(mu));
  }
  double between = 0.0;
  for (const auto& mu : mus)
    for (std::int64_t d = 0; d < dim_; ++d) {
      const double diff = mu[static_cast<std::size_t>(d)] - mean_of_means[static_cast<std::size_t>(d)];
      between += diff * diff / a;
    }
  return between > 0.0 ? within / between : kNaN;
}

}  // namespace upcycle::moe
