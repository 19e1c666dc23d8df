// The upcycling methods without calibration (sparse, drop, drop_svd, granular), the shared pieces
// and the registry. The cluster-aware method is in cluster_upcycling.cpp.
#include "upcycle/init/ffn_upcycling.hpp"

#include <cmath>
#include <cstring>
#include <numeric>

#include "upcycle/backend/backend.hpp"

namespace upcycle::init {

namespace {

float* expert_ptr(const Tensor& t, std::int64_t e) { return t.data<float>() + e * (t.numel() / t.dim(0)); }

// Draws `count` distinct indices of [0, n) by a partial Fisher-Yates shuffle over n
// words of the stream (the stream advances by n whatever `count` is).
std::vector<std::int64_t> choose_units(std::int64_t n, std::int64_t count, RngStream& rng) {
  const std::uint64_t off = rng.advance(static_cast<std::uint64_t>(n));
  std::vector<std::int64_t> idx(static_cast<std::size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  for (std::int64_t i = 0; i < count; ++i) {
    const std::uint32_t w = Philox4x32::word(rng.seed(), off + static_cast<std::uint64_t>(i));
    const std::int64_t j = i + static_cast<std::int64_t>(w % static_cast<std::uint32_t>(n - i));
    std::swap(idx[static_cast<std::size_t>(i)], idx[static_cast<std::size_t>(j)]);
  }
  idx.resize(static_cast<std::size_t>(count));
  return idx;
}

// Drop-Upcycling's re-draw of one slice: the `count` entries index(i) of `dst` become draws from
// N(mean, std^2), mean and (population) std of the same entries of the original matrix `src`. The
// stream advances by 2 max(count, 1) words whatever the slice.
template <class Index>
void redraw_slice(const float* src, float* dst, std::int64_t count, Index index, RngStream& rng) {
  double sum = 0, sum2 = 0;
  for (std::int64_t i = 0; i < count; ++i) {
    const double v = src[index(i)];
    sum += v;
    sum2 += v * v;
  }
  const double n = static_cast<double>(count);
  const double mean = count > 0 ? sum / n : 0.0;
  const double std = count > 0 ? std::sqrt(std::max(0.0, sum2 / n - mean * mean)) : 0.0;
  const Tensor z = normal_tensor({std::max<std::int64_t>(count, 1)}, 1.0, rng);
  const float* pz = z.data<float>();
  for (std::int64_t i = 0; i < count; ++i) dst[index(i)] = static_cast<float>(mean + std * pz[i]);
}

// Rows [first, first + rows) of a [*, cols] matrix, through drop_svd, written back in place.
void drop_svd_rows(float* m, std::int64_t rows, std::int64_t cols, double keep_frac, RngStream& rng) {
  Tensor part = Tensor::empty({rows, cols}, DType::f32, Device::cpu);
  std::memcpy(part.data<float>(), m, static_cast<std::size_t>(rows * cols) * sizeof(float));
  const DropSvdResult r = drop_svd(part, keep_frac, rng);
  std::memcpy(m, r.w.data<float>(), static_cast<std::size_t>(rows * cols) * sizeof(float));
}

}  // namespace

ExpertSet copies_with_random_router(const BlockContext& ctx, const DenseFfn& dense, RngStream& rng) {
  const Tensor router = normal_tensor({ctx.options.num_experts, dense.d_model()}, ctx.options.router_std, rng);
  ExpertSet s = replicate_dense(dense, ctx.options.num_experts);
  s.router = router;
  return s;
}

RngStream upcycle_stream(std::uint64_t seed, std::int64_t block) {
  // A fixed odd multiplier spreads (seed, block) over the key space; the stream is not the
  // training initialisation stream (which uses the seed itself).
  return RngStream(seed * 0x9E3779B97F4A7C15ull + 0x5550C7C1Eull + static_cast<std::uint64_t>(block) * 0x100000001B3ull);
}

Tensor normal_tensor(const Shape& shape, double std, RngStream& rng) {
  Tensor t = Tensor::empty(shape, DType::f32, Device::cpu);
  const std::uint64_t offset = rng.advance(2 * static_cast<std::uint64_t>(t.numel()));
  backend_of(t).normal(t, rng.seed(), offset, 0.0, std);
  return t;
}

ExpertSet replicate_dense(const DenseFfn& dense, std::int64_t experts) {
  auto stack = [&](const Tensor& t) {
    if (!t.defined()) return Tensor();
    std::vector<std::int64_t> dims{experts};
    for (int i = 0; i < t.ndim(); ++i) dims.push_back(t.dim(i));
    Tensor out = Tensor::empty(Shape(dims), DType::f32, Device::cpu);
    const std::size_t bytes = t.nbytes();
    for (std::int64_t e = 0; e < experts; ++e) std::memcpy(expert_ptr(out, e), t.data<float>(), bytes);
    return out;
  };
  ExpertSet s;
  s.w1 = stack(dense.w1);
  s.b1 = stack(dense.b1);
  s.w2 = stack(dense.w2);
  s.b2 = stack(dense.b2);
  return s;
}

ExpertSet upcycle_sparse(const BlockContext& ctx, const DenseFfn& dense, BlockReport&) {
  const auto& o = ctx.options;
  RngStream rng = upcycle_stream(o.seed, ctx.block);
  ExpertSet s = copies_with_random_router(ctx, dense, rng);
  if (o.noise_std > 0) {
    for (Tensor* w : {&s.w1, &s.w2}) {
      const Tensor noise = normal_tensor(w->shape(), o.noise_std, rng);
      float* pw = w->data<float>();
      const float* pn = noise.data<float>();
      for (std::int64_t i = 0; i < w->numel(); ++i) pw[i] += pn[i];
    }
  }
  return s;
}

ExpertSet upcycle_drop(const BlockContext& ctx, const DenseFfn& dense, BlockReport&) {
  const auto& o = ctx.options;
  RngStream rng = upcycle_stream(o.seed, ctx.block);
  const std::int64_t D = dense.d_model(), F = dense.d_ff(), R = dense.rows_per_unit;
  ExpertSet s = copies_with_random_router(ctx, dense, rng);
  const std::int64_t n = static_cast<std::int64_t>(std::floor(o.drop_ratio * static_cast<double>(F)));
  const float* w1 = dense.w1.data<float>();
  const float* w2 = dense.w2.data<float>();
  for (std::int64_t e = 0; e < o.num_experts; ++e) {
    // One set of hidden units per expert, re-drawn in every matrix that touches them (Drop-Upcycling):
    // their rows of W1 (gate and up separately for SwiGLU) and their columns of W2.
    const std::vector<std::int64_t> units = choose_units(F, n, rng);
    auto unit = [&](std::int64_t j) { return units[static_cast<std::size_t>(j)]; };
    for (std::int64_t q = 0; q < R; ++q)
      redraw_slice(w1, expert_ptr(s.w1, e), n * D, [&](std::int64_t i) { return (q * F + unit(i / D)) * D + i % D; }, rng);
    redraw_slice(w2, expert_ptr(s.w2, e), n * D, [&](std::int64_t i) { return (i / n) * F + unit(i % n); }, rng);
  }
  return s;
}

ExpertSet upcycle_drop_svd(const BlockContext& ctx, const DenseFfn& dense, BlockReport&) {
  const auto& o = ctx.options;
  RngStream rng = upcycle_stream(o.seed, ctx.block);
  const std::int64_t F = dense.d_ff(), D = dense.d_model(), R = dense.rows_per_unit;
  ExpertSet s = copies_with_random_router(ctx, dense, rng);
  // Each expert draws from its own range of the block's stream (2^40 words apart, far more than
  // one expert uses), so expert e is the same whichever rank computes it: expert e on world rank
  // e mod W, the others zeroed, then one all-reduce per matrix hands every rank all experts.
  constexpr std::uint64_t kExpertStride = std::uint64_t{1} << 40;
  const int rank = ctx.world ? ctx.world->rank() : 0, ranks = ctx.world ? ctx.world->size() : 1;
  for (std::int64_t e = 0; e < o.num_experts; ++e) {
    if (e % ranks != rank) {
      std::memset(expert_ptr(s.w1, e), 0, s.w1.nbytes() / static_cast<std::size_t>(o.num_experts));
      std::memset(expert_ptr(s.w2, e), 0, s.w2.nbytes() / static_cast<std::size_t>(o.num_experts));
      continue;
    }
    RngStream expert_rng(rng.seed(), rng.offset() + static_cast<std::uint64_t>(e + 1) * kExpertStride);
    // Per matrix: the gate and the up-projection of SwiGLU are separate matrices.
    for (std::int64_t q = 0; q < R; ++q)
      drop_svd_rows(expert_ptr(s.w1, e) + q * F * D, F, D, o.svd_keep_frac, expert_rng);
    drop_svd_rows(expert_ptr(s.w2, e), D, F, o.svd_keep_frac, expert_rng);
  }
  if (ctx.world && ranks > 1) {
    ctx.world->all_reduce(s.w1);
    ctx.world->all_reduce(s.w2);
  }
  return s;
}

ExpertSet upcycle_granular(const BlockContext& ctx, const DenseFfn& dense, BlockReport&) {
  const auto& o = ctx.options;
  const std::int64_t E = o.num_experts, G = o.granularity;
  const std::int64_t D = dense.d_model(), F = dense.d_ff(), R = dense.rows_per_unit;
  UPCYCLE_CHECK(G >= 1 && E % G == 0 && F % G == 0, "granular upcycling: upcycle.granularity = ", G,
                " must divide moe.num_experts = ", E, " and model.ffn_width = ", F);
  const std::int64_t Fe = F / G;
  RngStream rng = upcycle_stream(o.seed, ctx.block);
  // E/G random rows, each repeated G times: the G shards of one group always tie, so top-k with
  // k = G selects a whole dense FFN.
  const Tensor base = normal_tensor({E / G, D}, o.router_std, rng);
  ExpertSet s;
  s.router = Tensor::empty({E, D}, DType::f32, Device::cpu);
  for (std::int64_t e = 0; e < E; ++e)
    std::memcpy(s.router.data<float>() + e * D, base.data<float>() + (e / G) * D, static_cast<std::size_t>(D) * sizeof(float));
  s.w1 = Tensor::empty({E, R * Fe, D}, DType::f32, Device::cpu);
  s.w2 = Tensor::empty({E, D, Fe}, DType::f32, Device::cpu);
  if (dense.b1.defined()) s.b1 = Tensor::empty({E, R * Fe}, DType::f32, Device::cpu);
  if (dense.b2.defined()) s.b2 = Tensor::empty({E, D}, DType::f32, Device::cpu);
  // With the scaling, the G shards weighted by renormalised gates 1/G sum to the dense output.
  const float scale = o.granular_scale ? static_cast<float>(G) : 1.0f;
  const float* w1 = dense.w1.data<float>();
  const float* w2 = dense.w2.data<float>();
  for (std::int64_t e = 0; e < E; ++e) {
    const std::int64_t first = (e % G) * Fe;  // the shard's first hidden unit
    float* ew1 = expert_ptr(s.w1, e);
    for (std::int64_t q = 0; q < R; ++q)
      std::memcpy(ew1 + q * Fe * D, w1 + (q * F + first) * D, static_cast<std::size_t>(Fe * D) * sizeof(float));
    float* ew2 = expert_ptr(s.w2, e);
    for (std::int64_t r = 0; r < D; ++r)
      for (std::int64_t j = 0; j < Fe; ++j) ew2[r * Fe + j] = scale * w2[r * F + first + j];
    if (s.b1.defined())
      for (std::int64_t q = 0; q < R; ++q)
        std::memcpy(expert_ptr(s.b1, e) + q * Fe, dense.b1.data<float>() + q * F + first,
                    static_cast<std::size_t>(Fe) * sizeof(float));
    if (s.b2.defined()) std::memcpy(expert_ptr(s.b2, e), dense.b2.data<float>(), static_cast<std::size_t>(D) * sizeof(float));
  }
  return s;
}

const std::vector<UpcycleMethod>& upcycle_methods() {
  static const std::vector<UpcycleMethod> methods = {
      {"sparse", false, &upcycle_sparse},
      {"drop", false, &upcycle_drop},
      {"drop_svd", false, &upcycle_drop_svd},
      {"granular", false, &upcycle_granular},
      {"cluster", true, &upcycle_cluster},
  };
  return methods;
}

const UpcycleMethod& upcycle_method(const std::string& name) {
  std::string known;
  for (const auto& m : upcycle_methods()) {
    if (name == m.name) return m;
    known += (known.empty() ? "" : ", ") + std::string(m.name);
  }
  UPCYCLE_THROW("unknown upcycling method '", name, "' (known: ", known, ")");
}

}  // namespace upcycle::init
