// The profiling Backend decorator (see upcycle/backend/profiling.hpp). Every kernel call is timed
// with steady_clock around the wrapped backend's call and added, under one mutex, to a fixed slot
// per kernel; the detail breakdown and the regions use string-keyed maps. Backends other than the
// CPU one are synchronised before and after each call so asynchronous launches are timed whole.
#include "upcycle/backend/profiling.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>
#include <unordered_map>

#include "upcycle/backend/backend.hpp"

namespace upcycle::profile {

namespace {

using Clock = std::chrono::steady_clock;

#define UPCYCLE_PROFILE_KERNELS(X)                                                                          \
  X(allocate) X(deallocate) X(copy_bytes) X(synchronize) X(fill) X(cast) X(arange) X(uniform) X(normal)     \
  X(dropout_mask) X(gemm) X(unary) X(unary_backward) X(binary) X(affine) X(axpy) X(pow_scalar)              \
  X(masked_fill) X(reduce) X(expand_axis) X(sum_squares) X(permute) X(copy_axis) X(softmax)                 \
  X(softmax_backward) X(log_softmax) X(log_softmax_backward) X(causal_mask) X(cross_entropy)                \
  X(cross_entropy_backward) X(layernorm) X(layernorm_backward) X(rmsnorm) X(rmsnorm_backward)               \
  X(gather_rows) X(index_add_rows) X(gather_last) X(scatter_add_last) X(topk) X(argsort) X(adamw) X(ema)           \
  X(grouped_gemm) X(moe_dispatch) X(normalize_rows) X(cluster_sums) X(copy_bytes_async) X(synchronize_event)

enum Kernel : int {
#define UPCYCLE_X(name) k_##name,
  UPCYCLE_PROFILE_KERNELS(UPCYCLE_X)
#undef UPCYCLE_X
  kNumKernels
};

const char* const kKernelNames[kNumKernels] = {
#define UPCYCLE_X(name) #name,
    UPCYCLE_PROFILE_KERNELS(UPCYCLE_X)
#undef UPCYCLE_X
};

struct Stat {
  std::int64_t calls = 0;
  double seconds = 0.0;
  void add(double s) {
    ++calls;
    seconds += s;
  }
};

using KernelStats = std::array<Stat, kNumKernels>;

struct State {
  std::mutex mu;
  KernelStats kernels{};
  std::unordered_map<std::string, Stat> details;
  std::unordered_map<std::string, Stat> regions;
  // Kernel time inside each region, by region name (node-based: pointers to values stay valid).
  std::unordered_map<std::string, KernelStats> region_kernels;
  bool detail = false;
  bool on = false;
  Backend* wrapped[2] = {nullptr, nullptr};  // the plain backends while wrapped
  Backend* wrappers[2] = {nullptr, nullptr};
};

// Leaked on purpose: kernels may still run (tensors freed) during static destruction.
State& state() {
  static State* s = new State();
  return *s;
}

struct Frame {
  std::string name;       // "forward", "backward:linear"
  KernelStats* kernels;   // this region's per-kernel slots in State::region_kernels
  Clock::time_point start;
};
thread_local std::vector<Frame> t_regions;

const char* reduce_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return "sum";
    case ReduceOp::mean: return "mean";
    case ReduceOp::max: return "max";
  }
  return "?";
}

std::string shape_str(const Tensor& t) { return t.defined() ? t.shape().str() : std::string("-"); }

void record(Kernel k, double seconds, const std::string* detail_key) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  s.kernels[k].add(seconds);
  if (detail_key) s.details[*detail_key].add(seconds);
  if (!t_regions.empty()) (*t_regions.back().kernels)[k].add(seconds);
}

// Decorates `inner`: every call is forwarded and timed.
class ProfilingBackend final : public Backend {
 public:
  explicit ProfilingBackend(Backend& inner) : inner_(inner), sync_(inner.device() != Device::cpu) {}

  // Times f(); `detail` builds the detail key (called only in detail mode).
  template <class F, class D>
  void timed(Kernel k, F&& f, D&& detail) {
    if (sync_) inner_.synchronize();
    const auto t0 = Clock::now();
    f();
    if (sync_) inner_.synchronize();
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (state().detail) {
      const std::string key = detail();
      record(k, s, &key);
    } else {
      record(k, s, nullptr);
    }
  }
  template <class F>
  void timed(Kernel k, F&& f) {
    timed(k, std::forward<F>(f), [k] { return std::string(kKernelNames[k]); });
  }
  // A detail key "kernel[shape]" from the first tensor argument.
  template <class F>
  void timed_shape(Kernel k, const Tensor& t, F&& f) {
    timed(k, std::forward<F>(f), [k, &t] { return std::string(kKernelNames[k]) + " " + shape_str(t); });
  }

  Device device() const override { return inner_.device(); }

  void* allocate(std::size_t bytes) override {
    void* p = nullptr;
    timed(k_allocate, [&] { p = inner_.allocate(bytes); });
    return p;
  }
  void deallocate(void* ptr) override {
    timed(k_deallocate, [&] { inner_.deallocate(ptr); });
  }
  void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes) override {
    timed(k_copy_bytes, [&] { inner_.copy_bytes(dst, dst_device, src, src_device, bytes); });
  }
  void synchronize() override { timed(k_synchronize, [&] { inner_.synchronize(); }); }
  void fill(Tensor& out, double value) override {
    timed_shape(k_fill, out, [&] { inner_.fill(out, value); });
  }
  void cast(const Tensor& src, Tensor& dst) override {
    timed_shape(k_cast, src, [&] { inner_.cast(src, dst); });
  }
  void arange(Tensor& out, double start, double step) override {
    timed(k_arange, [&] { inner_.arange(out, start, step); });
  }
  void uniform(Tensor& out, std::uint64_t seed, std::uint64_t offset, double lo, double hi) override {
    timed_shape(k_uniform, out, [&] { inner_.uniform(out, seed, offset, lo, hi); });
  }
  void normal(Tensor& out, std::uint64_t seed, std::uint64_t offset, double mean, double std) override {
    timed_shape(k_normal, out, [&] { inner_.normal(out, seed, offset, mean, std); });
  }
  void dropout_mask(Tensor& mask, double p, std::uint64_t seed, std::uint64_t offset) override {
    timed_shape(k_dropout_mask, mask, [&] { inner_.dropout_mask(mask, p, seed, offset); });
  }
  void gemm(const GemmDesc& d, const Tensor& a, const Tensor& b, Tensor& c) override {
    timed(k_gemm, [&] { inner_.gemm(d, a, b, c); },
          [&d] {
            std::ostringstream o;
            o << "gemm ";
            if (d.batch != 1) o << d.batch << "x ";
            o << d.m << "x" << d.n << "x" << d.k << " " << (d.trans_a ? 'T' : 'N') << (d.trans_b ? 'T' : 'N');
            if (d.batch > 1 && (d.stride_a == 0 || d.stride_b == 0 || d.stride_c == 0)) o << " bcast";
            if (d.beta != 0.0) o << " beta";
            return o.str();
          });
  }
  void unary(UnaryOp op, const Tensor& x, Tensor& y) override {
    timed(k_unary, [&] { inner_.unary(op, x, y); },
          [&] { return std::string("unary ") + unary_op_name(op) + " " + shape_str(x); });
  }
  void unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& gy, Tensor& gx) override {
    timed(k_unary_backward, [&] { inner_.unary_backward(op, x, y, gy, gx); },
          [&] { return std::string("unary_backward ") + unary_op_name(op) + " " + shape_str(gy); });
  }
  void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) override {
    timed(k_binary, [&] { inner_.binary(op, a, b, out); },
          [&] { return std::string("binary ") + binary_op_name(op) + " " + shape_str(a) + " " + shape_str(b); });
  }
  void affine(const Tensor& x, Tensor& out, double alpha, double beta) override {
    timed_shape(k_affine, x, [&] { inner_.affine(x, out, alpha, beta); });
  }
  void axpy(double alpha, const Tensor& x, Tensor& y) override {
    timed_shape(k_axpy, x, [&] { inner_.axpy(alpha, x, y); });
  }
  void pow_scalar(const Tensor& x, Tensor& out, double p) override {
    timed_shape(k_pow_scalar, x, [&] { inner_.pow_scalar(x, out, p); });
  }
  void masked_fill(const Tensor& x, const Tensor& mask, double value, Tensor& out) override {
    timed_shape(k_masked_fill, x, [&] { inner_.masked_fill(x, mask, value, out); });
  }
  void reduce(ReduceOp op, const Tensor& x, Tensor& out, std::int64_t outer, std::int64_t axis,
              std::int64_t inner) override {
    timed(k_reduce, [&] { inner_.reduce(op, x, out, outer, axis, inner); },
          [&] {
            std::ostringstream o;
            o << "reduce " << reduce_name(op) << " [" << outer << ", " << axis << ", " << inner << "]";
            return o.str();
          });
  }
  void expand_axis(const Tensor& x, Tensor& out, std::int64_t outer, std::int64_t axis, std::int64_t inner,
                   double alpha) override {
    timed(k_expand_axis, [&] { inner_.expand_axis(x, out, outer, axis, inner, alpha); },
          [&] {
            std::ostringstream o;
            o << "expand_axis [" << outer << ", " << axis << ", " << inner << "]";
            return o.str();
          });
  }
  void sum_squares(const std::vector<Tensor>& xs, Tensor& out) override {
    timed(k_sum_squares, [&] { inner_.sum_squares(xs, out); },
          [&] { return "sum_squares x" + std::to_string(xs.size()); });
  }
  void permute(const Tensor& x, Tensor& out, const int* perm) override {
    timed(k_permute, [&] { inner_.permute(x, out, perm); },
          [&] {
            std::ostringstream o;
            o << "permute " << shape_str(x) << " (";
            for (int i = 0; i < x.ndim(); ++i) o << (i ? "," : "") << perm[i];
            o << ")";
            return o.str();
          });
  }
  void copy_axis(const Tensor& src, std::int64_t src_axis, std::int64_t src_off, Tensor& dst, std::int64_t dst_axis,
                 std::int64_t dst_off, std::int64_t outer, std::int64_t len, std::int64_t inner,
                 bool accumulate) override {
    timed(k_copy_axis,
          [&] { inner_.copy_axis(src, src_axis, src_off, dst, dst_axis, dst_off, outer, len, inner, accumulate); },
          [&] {
            std::ostringstream o;
            o << "copy_axis " << shape_str(src) << " -> " << shape_str(dst) << (accumulate ? " acc" : "");
            return o.str();
          });
  }
  void softmax(const Tensor& x, Tensor& y) override {
    timed_shape(k_softmax, x, [&] { inner_.softmax(x, y); });
  }
  void softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx) override {
    timed_shape(k_softmax_backward, y, [&] { inner_.softmax_backward(y, gy, gx); });
  }
  void log_softmax(const Tensor& x, Tensor& y) override {
    timed_shape(k_log_softmax, x, [&] { inner_.log_softmax(x, y); });
  }
  void log_softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx) override {
    timed_shape(k_log_softmax_backward, y, [&] { inner_.log_softmax_backward(y, gy, gx); });
  }
  void causal_mask(Tensor& scores, std::int64_t t, std::int64_t s) override {
    timed_shape(k_causal_mask, scores, [&] { inner_.causal_mask(scores, t, s); });
  }
  void cross_entropy(const Tensor& logits, const Tensor& targets, std::int64_t ignore_index, double smoothing,
                     Tensor& losses, Tensor& lse) override {
    timed_shape(k_cross_entropy, logits,
                [&] { inner_.cross_entropy(logits, targets, ignore_index, smoothing, losses, lse); });
  }
  void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                              std::int64_t ignore_index, double smoothing, double scale, Tensor& glogits) override {
    timed_shape(k_cross_entropy_backward, logits, [&] {
      inner_.cross_entropy_backward(logits, targets, lse, ignore_index, smoothing, scale, glogits);
    });
  }
  void layernorm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps, Tensor& y, Tensor& mean,
                 Tensor& rstd) override {
    timed_shape(k_layernorm, x, [&] { inner_.layernorm(x, gamma, beta, eps, y, mean, rstd); });
  }
  void layernorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& mean, const Tensor& rstd,
                          const Tensor& gy, Tensor& gx, Tensor& ggamma, Tensor& gbeta) override {
    timed_shape(k_layernorm_backward, x,
                [&] { inner_.layernorm_backward(x, gamma, mean, rstd, gy, gx, ggamma, gbeta); });
  }
  void rmsnorm(const Tensor& x, const Tensor& gamma, double eps, Tensor& y, Tensor& rstd) override {
    timed_shape(k_rmsnorm, x, [&] { inner_.rmsnorm(x, gamma, eps, y, rstd); });
  }
  void rmsnorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& rstd, const Tensor& gy, Tensor& gx,
                        Tensor& ggamma) override {
    timed_shape(k_rmsnorm_backward, x, [&] { inner_.rmsnorm_backward(x, gamma, rstd, gy, gx, ggamma); });
  }
  void gather_rows(const Tensor& table, const Tensor& idx, Tensor& out) override {
    timed_shape(k_gather_rows, out, [&] { inner_.gather_rows(table, idx, out); });
  }
  void index_add_rows(Tensor& out, const Tensor& idx, const Tensor& src) override {
    timed_shape(k_index_add_rows, src, [&] { inner_.index_add_rows(out, idx, src); });
  }
  void gather_last(const Tensor& x, const Tensor& idx, Tensor& out) override {
    timed_shape(k_gather_last, out, [&] { inner_.gather_last(x, idx, out); });
  }
  void scatter_add_last(Tensor& out, const Tensor& idx, const Tensor& src) override {
    timed_shape(k_scatter_add_last, src, [&] { inner_.scatter_add_last(out, idx, src); });
  }
  void topk(const Tensor& x, std::int64_t k, Tensor& values, Tensor& idx) override {
    timed_shape(k_topk, x, [&] { inner_.topk(x, k, values, idx); });
  }
  void argsort(const Tensor& x, bool descending, Tensor& idx) override {
    timed_shape(k_argsort, x, [&] { inner_.argsort(x, descending, idx); });
  }
  void adamw(const std::vector<AdamWTensor>& tensors, const AdamWStep& step) override {
    timed(k_adamw, [&] { inner_.adamw(tensors, step); },
          [&] { return "adamw x" + std::to_string(tensors.size()); });
  }
  void ema(const std::vector<EmaTensor>& tensors, double momentum) override {
    timed(k_ema, [&] { inner_.ema(tensors, momentum); }, [&] { return "ema x" + std::to_string(tensors.size()); });
  }
  void grouped_gemm(bool trans_a, bool trans_b, double alpha, double beta,
                    const std::vector<GemmGroup>& groups) override {
    timed(k_grouped_gemm, [&] { inner_.grouped_gemm(trans_a, trans_b, alpha, beta, groups); },
          [&] {
            std::ostringstream o;
            o << "grouped_gemm x" << groups.size() << " " << (trans_a ? 'T' : 'N') << (trans_b ? 'T' : 'N');
            return o.str();
          });
  }
  void set_allow_tf32(bool allow) override { inner_.set_allow_tf32(allow); }
  void moe_dispatch(const Tensor& indices, std::int64_t num_experts, std::int64_t capacity, Tensor& counts,
                    Tensor& kept_slots, Tensor& kept_tokens, Tensor& slot_dropped) override {
    timed_shape(k_moe_dispatch, indices, [&] {
      inner_.moe_dispatch(indices, num_experts, capacity, counts, kept_slots, kept_tokens, slot_dropped);
    });
  }
  void normalize_rows(const Tensor& x, Tensor& out, Tensor& norms) override {
    timed_shape(k_normalize_rows, x, [&] { inner_.normalize_rows(x, out, norms); });
  }
  void cluster_sums(const Tensor& points, const Tensor& score, const Tensor& assignment, const Tensor& previous,
                    std::int64_t clusters, std::int64_t chunk_rows, Tensor& out) override {
    timed_shape(k_cluster_sums, points,
                [&] { inner_.cluster_sums(points, score, assignment, previous, clusters, chunk_rows, out); });
  }
  // The execution context is forwarded; only the calls that move data or make the host wait are
  // timed (stream and event creation is bookkeeping).
  void* allocate_pinned(std::size_t bytes) override { return inner_.allocate_pinned(bytes); }
  void deallocate_pinned(void* ptr) override { inner_.deallocate_pinned(ptr); }
  AllocatorStats allocator_stats() const override { return inner_.allocator_stats(); }
  void reset_peak_bytes() override { inner_.reset_peak_bytes(); }
  StreamHandle compute_stream() override { return inner_.compute_stream(); }
  StreamHandle create_stream() override { return inner_.create_stream(); }
  void destroy_stream(StreamHandle stream) override { inner_.destroy_stream(stream); }
  EventHandle create_event() override { return inner_.create_event(); }
  void destroy_event(EventHandle event) override { inner_.destroy_event(event); }
  void record_event(EventHandle event, StreamHandle stream) override { inner_.record_event(event, stream); }
  void wait_event(StreamHandle stream, EventHandle event) override { inner_.wait_event(stream, event); }
  void synchronize_event(EventHandle event) override {
    timed(k_synchronize_event, [&] { inner_.synchronize_event(event); });
  }
  bool event_done(EventHandle event) override { return inner_.event_done(event); }
  void copy_bytes_async(void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes) override {
    timed(k_copy_bytes_async, [&] { inner_.copy_bytes_async(dst, dst_device, src, src_device, bytes); });
  }
  void* workspace(std::size_t bytes) override { return inner_.workspace(bytes); }

 private:
  Backend& inner_;
  bool sync_;
};

std::vector<Entry> sorted(std::vector<Entry> v) {
  std::stable_sort(v.begin(), v.end(), [](const Entry& a, const Entry& b) { return a.seconds > b.seconds; });
  return v;
}

std::vector<Entry> from_map(const std::unordered_map<std::string, Stat>& m) {
  std::vector<Entry> v;
  for (const auto& [name, st] : m)
    if (st.calls > 0) v.push_back({name, st.calls, st.seconds});
  return sorted(std::move(v));
}

void append_section(std::ostringstream& o, const char* title, const std::vector<Entry>& rows, std::size_t top,
                    double wall, double total) {
  if (rows.empty()) return;
  char line[512];
  std::snprintf(line, sizeof line, "%-56s %10s %12s %10s %7s %7s\n", title, "calls", "total ms", "us/call",
                "%sum", wall > 0 ? "%wall" : "");
  o << line;
  const std::size_t n = top == 0 ? rows.size() : std::min(top, rows.size());
  for (std::size_t i = 0; i < n; ++i) {
    const Entry& e = rows[i];
    char wall_pct[16] = "";
    if (wall > 0) std::snprintf(wall_pct, sizeof wall_pct, "%6.1f%%", 100.0 * e.seconds / wall);
    std::snprintf(line, sizeof line, "  %-54.54s %10lld %12.3f %10.2f %6.1f%% %7s\n", e.name.c_str(),
                  static_cast<long long>(e.calls), e.seconds * 1e3, e.calls ? e.seconds * 1e6 / double(e.calls) : 0.0,
                  total > 0 ? 100.0 * e.seconds / total : 0.0, wall_pct);
    o << line;
  }
  if (n < rows.size()) o << "  ... " << rows.size() - n << " more\n";
}

double total_of(const std::vector<Entry>& v) {
  double t = 0;
  for (const Entry& e : v) t += e.seconds;
  return t;
}

void print_at_exit() {
  if (!enabled() && state().kernels[k_gemm].calls == 0) return;
  std::string who;
  for (const char* var : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"})
    if (const char* v = std::getenv(var)) {
      who = std::string(" (rank ") + v + ")";
      break;
    }
  std::fprintf(stderr, "\n== upcycle profile%s ==\n", who.c_str());
  print(stderr, 40);
}

}  // namespace

namespace detail {

bool g_regions_on = false;

void push_region(const char* name, RegionKind kind) {
  std::string full = kind == RegionKind::backward_op ? std::string("backward:") + name : std::string(name);
  State& s = state();
  KernelStats* slots;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    slots = &s.region_kernels[full];
  }
  t_regions.push_back({std::move(full), slots, Clock::now()});
}

void pop_region() {
  if (t_regions.empty()) return;
  const double secs = std::chrono::duration<double>(Clock::now() - t_regions.back().start).count();
  State& s = state();
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.regions[t_regions.back().name].add(secs);
  }
  t_regions.pop_back();
}

}  // namespace detail

void enable(Device device, bool detail) {
  State& s = state();
  const auto i = static_cast<std::size_t>(device);
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.detail = s.detail || detail;
    s.on = true;
  }
  detail::g_regions_on = true;
  Backend& current = backend_for(device);
  if (s.wrappers[i] != nullptr && &current == s.wrappers[i]) return;  // already wrapped
  s.wrapped[i] = &current;
  // Never freed: tensors allocated through it may be released at any time, exit included.
  s.wrappers[i] = new ProfilingBackend(current);
  register_backend(device, s.wrappers[i]);
}

void disable(Device device) {
  State& s = state();
  const auto i = static_cast<std::size_t>(device);
  if (s.wrappers[i] != nullptr && &backend_for(device) == s.wrappers[i]) register_backend(device, s.wrapped[i]);
  // The wrapper stays alive (and forwarding): tensors may still hold it through Storage deleters.
  bool any = false;
  for (std::size_t d = 0; d < 2; ++d) {
    if (d == i || s.wrappers[d] == nullptr) continue;
    try {
      any = any || &backend_for(static_cast<Device>(d)) == s.wrappers[d];
    } catch (...) {
    }
  }
  std::lock_guard<std::mutex> lock(s.mu);
  s.on = any;
  detail::g_regions_on = any;
}

bool enabled() { return state().on; }

void reset() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  s.kernels = KernelStats{};
  for (auto& [k, v] : s.details) v = Stat{};
  for (auto& [k, v] : s.regions) v = Stat{};
  for (auto& [k, v] : s.region_kernels) v = KernelStats{};
}

std::vector<Entry> kernels() {
  State& s = state();
  std::vector<Entry> v;
  std::lock_guard<std::mutex> lock(s.mu);
  for (int k = 0; k < kNumKernels; ++k)
    if (s.kernels[k].calls > 0) v.push_back({kKernelNames[k], s.kernels[k].calls, s.kernels[k].seconds});
  return sorted(std::move(v));
}

std::vector<Entry> details() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  return from_map(s.details);
}

std::vector<Entry> regions() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  return from_map(s.regions);
}

std::vector<Entry> region_kernels() {
  State& s = state();
  std::vector<Entry> v;
  std::lock_guard<std::mutex> lock(s.mu);
  for (const auto& [region, slots] : s.region_kernels)
    for (int k = 0; k < kNumKernels; ++k)
      if (slots[k].calls > 0) v.push_back({region + " > " + kKernelNames[k], slots[k].calls, slots[k].seconds});
  return sorted(std::move(v));
}

std::string table(std::size_t top, double wall_seconds) {
  std::ostringstream o;
  const auto k = kernels();
  const double total = total_of(k);
  append_section(o, "kernel", k, top, wall_seconds, total);
  char line[128];
  std::snprintf(line, sizeof line, "  %-54s %10s %12.3f\n", "(all kernels)", "", total * 1e3);
  o << line;
  const auto r = regions();
  // Region rows are wall times of nested scopes: their %sum is relative to the kernel total.
  append_section(o, "region (wall, inclusive)", r, top, wall_seconds, total);
  append_section(o, "region > kernel", region_kernels(), top, wall_seconds, total);
  append_section(o, "kernel detail", details(), top, wall_seconds, total);
  return o.str();
}

void print(std::FILE* out, std::size_t top, double wall_seconds) {
  const std::string t = table(top, wall_seconds);
  std::fwrite(t.data(), 1, t.size(), out);
  std::fflush(out);
}

bool enable_from_env(bool print_at_exit_flag) {
  const char* v = std::getenv("UPCYCLE_PROFILE");
  if (v == nullptr || (std::strcmp(v, "1") != 0 && std::strcmp(v, "2") != 0)) return enabled();
  const bool was = enabled();
  enable(Device::cpu, std::strcmp(v, "2") == 0);
  static bool registered = false;
  if (print_at_exit_flag && !was && !registered) {
    registered = true;
    std::atexit(print_at_exit);
  }
  return true;
}

}  // namespace upcycle::profile

// Referenced by the library's link options (src/CMakeLists.txt: -Wl,--undefined=...) so that this
// object file, and with it the start-up check of UPCYCLE_PROFILE below, is linked into every program.
extern "C" {
int upcycle_profiling_anchor = 0;
}

namespace {
[[maybe_unused]] const bool g_profile_from_env = upcycle::profile::enable_from_env(true);
}  // namespace
