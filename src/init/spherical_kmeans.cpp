// Distributed spherical k-means; the contract is in include/upcycle/init/spherical_kmeans.hpp.
//
// Collectives, in order (every rank runs the same sequence, so errors found on one rank are
// agreed on before anyone throws):
//   1. all_gather of each rank's input summary (error code, n, D, bad ids)
//   2. all_gather of each rank's sample candidates (hash, id), 3. all_reduce of the sample rows
//   per iteration: 4. all_reduce of sums + counts + objective + changed,
//   and only when a cluster is empty: 5. all_gather of farthest-token candidates, 6. all_reduce of
//   the chosen tokens' vectors.
//
// Where the work runs. The tokens stay on their device: normalising them, the score GEMM, the
// argmax (Backend::topk with k = 1) and the per-cluster sums (Backend::cluster_sums) are Backend
// kernels on the points' device, so the CPU and the CUDA backend run this same code. The host
// gets per iteration only the K D + K + 2 reduced sums (to update the centroids and decide on
// empty clusters), once the n norms (the input check), the sample's rows for the seeding, and,
// in an iteration with an empty cluster, the scores and assignments to pick tokens from.
//
// Reductions over tokens use fixed chunks whose boundaries depend on n, K and D only (never on the
// thread count or the device), and the chunk partials are added in chunk order: one rank gives the
// same bits with any number of threads, on the CPU and on a GPU alike (Backend::cluster_sums).
#include "upcycle/init/spherical_kmeans.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>

#include "backend/cpu/cpu_parallel.hpp"
#include "upcycle/backend/backend.hpp"
#include "upcycle/core/rng.hpp"

namespace upcycle::init {

namespace {

constexpr std::int64_t kNoId = std::numeric_limits<std::int64_t>::max();
// Keys of the two random streams derived from the seed: the sample hash and the k-means++ draws.
constexpr std::uint64_t kSampleSalt = 0x73616d706c65ULL;   // "sample"
constexpr std::uint64_t kSeedingSalt = 0x6b6d2b2bULL;      // "km++"

// 64-bit hash of a token: two Philox words of the counter block that belongs to the id (32 bits
// alone would collide among ~65k tokens; the id breaks the remaining ties).
std::uint64_t token_hash(std::uint64_t seed, std::int64_t id) {
  const std::uint64_t base = static_cast<std::uint64_t>(id) * 4u;
  return (static_cast<std::uint64_t>(Philox4x32::word(seed ^ kSampleSalt, base)) << 32) |
         Philox4x32::word(seed ^ kSampleSalt, base + 1);
}

// Uniform in [0, 1) with 53 bits, the j-th draw of the k-means++ stream.
double seeding_uniform(std::uint64_t seed, std::uint64_t j) {
  const std::uint64_t hi = Philox4x32::word(seed ^ kSeedingSalt, 2 * j) >> 5;  // 27 bits
  const std::uint64_t lo = Philox4x32::word(seed ^ kSeedingSalt, 2 * j + 1) >> 6;  // 26 bits
  return static_cast<double>((hi << 26) | lo) * (1.0 / 9007199254740992.0);
}

std::int64_t bits_of(double v) {
  std::int64_t b;
  std::memcpy(&b, &v, sizeof b);
  return b;
}
double double_of(std::int64_t b) {
  double v;
  std::memcpy(&v, &b, sizeof v);
  return v;
}

// ---- 1. input checks (local, then agreed on) ---------------------------------------------------

enum InputCode : std::int64_t { input_ok = 0, bad_points = 1, bad_ids = 2 };
// The summary each rank contributes: [code, n, D, smallest id of a zero-norm row, of a non-finite row].
constexpr std::int64_t kSummary = 5;

struct LocalInput {
  Tensor unit;                       // [n, D] f32 on the points' device, the rows divided by their norms
  Tensor id_storage;                 // the ids on the host (keeps `ids` valid)
  const std::int64_t* ids = nullptr;
  std::int64_t n = 0, d = 0;
  std::int64_t code = input_ok;
  std::string problem;               // this rank's own message when code != input_ok
  std::int64_t zero_id = kNoId, nonfinite_id = kNoId;
};

// Normalises the rows on their device (norms in double, partition-independent) and records the
// smallest ids of rows that cannot be normalised (only their norms come to the host).
void normalise_rows(const Tensor& x, LocalInput& in) {
  in.unit = Tensor::empty({in.n, in.d}, DType::f32, x.device());
  Tensor norms = Tensor::empty({in.n}, DType::f64, x.device());
  backend_of(x).normalize_rows(x, in.unit, norms);
  const std::vector<double> norm = norms.to_vector<double>();
  for (std::int64_t t = 0; t < in.n; ++t) {
    const double v = norm[static_cast<std::size_t>(t)];
    if (!std::isfinite(v)) in.nonfinite_id = std::min(in.nonfinite_id, in.ids[t]);
    else if (v == 0.0) in.zero_id = std::min(in.zero_id, in.ids[t]);
  }
}

LocalInput check_local(const Tensor& points, const Tensor& global_ids) {
  LocalInput in;
  if (!points.defined() || points.ndim() != 2 || points.dtype() != DType::f32) {
    in.code = bad_points;
    in.problem = "points must be a [n, D] f32 tensor, got " + (points.defined() ? describe(points) : "undefined");
    return in;
  }
  in.n = points.dim(0);
  in.d = points.dim(1);
  if (!global_ids.defined() || global_ids.ndim() != 1 || global_ids.dtype() != DType::i64 ||
      global_ids.dim(0) != in.n) {
    in.code = bad_ids;
    in.problem = "global_ids must be an i64 tensor [" + std::to_string(in.n) + "] (one id per row of points), got " +
                 (global_ids.defined() ? describe(global_ids) : "undefined");
    return in;
  }
  if (in.n == 0) {
    in.unit = Tensor::empty({0, in.d}, DType::f32, points.device());
    return in;
  }
  in.id_storage = global_ids.to(Device::cpu);
  in.ids = in.id_storage.data<std::int64_t>();
  normalise_rows(points, in);
  return in;
}

// Input summaries of all ranks; throws (on every rank alike) when any rank's input is invalid.
struct WorldInput {
  std::vector<std::int64_t> n;  // tokens per rank
  std::int64_t total = 0, d = 0;
};

WorldInput agree_on_input(const LocalInput& in, std::int64_t clusters, Communicator& comm) {
  const int P = comm.size();
  Tensor mine = Tensor::from_vector<std::int64_t>({in.code, in.n, in.d, in.zero_id, in.nonfinite_id}, {kSummary}, Device::cpu);
  Tensor all = Tensor::empty({P * kSummary}, DType::i64, Device::cpu);
  comm.all_gather(mine, all);
  const std::int64_t* s = all.data<std::int64_t>();
  for (int p = 0; p < P; ++p) {
    if (s[p * kSummary] == input_ok) continue;
    if (p == comm.rank()) UPCYCLE_THROW("spherical_kmeans: ", in.problem);
    UPCYCLE_THROW("spherical_kmeans: rank ", p, " passed invalid ",
                  s[p * kSummary] == bad_points ? "points" : "global_ids", " (its own error says how)");
  }
  WorldInput w;
  w.d = s[2];
  std::int64_t zero = kNoId, nonfinite = kNoId;
  for (int p = 0; p < P; ++p) {
    const std::int64_t* r = s + p * kSummary;
    if (r[2] != w.d)
      UPCYCLE_THROW("spherical_kmeans: dims differ between ranks: rank 0 has D = ", w.d, ", rank ", p, " has D = ", r[2]);
    w.n.push_back(r[1]);
    w.total += r[1];
    zero = std::min(zero, r[3]);
    nonfinite = std::min(nonfinite, r[4]);
  }
  if (nonfinite != kNoId)
    UPCYCLE_THROW("spherical_kmeans: the token with global id ", nonfinite, " has a non-finite value (norm is not finite)");
  if (zero != kNoId)
    UPCYCLE_THROW("spherical_kmeans: the token with global id ", zero, " has zero norm (its direction is undefined)");
  if (w.total < clusters)
    UPCYCLE_THROW("spherical_kmeans: K = ", clusters, " clusters need at least ", clusters,
                  " tokens, got ", w.total, " in total over ", P, " rank(s)");
  return w;
}

// ---- 2. deterministic sample and k-means++ ---------------------------------------------------

// The sample: the `size` tokens with the smallest (hash, id) over all ranks, in that order, as
// unit rows [size, D] on every rank.
Tensor gather_sample(const LocalInput& in, const WorldInput& w, std::int64_t size, std::uint64_t seed,
                     Communicator& comm) {
  const int P = comm.size(), me = comm.rank();
  // Only this rank's `size` smallest can be in the global sample.
  std::vector<std::int64_t> order(static_cast<std::size_t>(in.n));
  std::vector<std::uint64_t> hash(static_cast<std::size_t>(in.n));
  for (std::int64_t t = 0; t < in.n; ++t) hash[static_cast<std::size_t>(t)] = token_hash(seed, in.ids[t]);
  std::iota(order.begin(), order.end(), std::int64_t{0});
  const auto before = [&](std::int64_t a, std::int64_t b) {
    const auto ha = hash[static_cast<std::size_t>(a)], hb = hash[static_cast<std::size_t>(b)];
    return ha != hb ? ha < hb : in.ids[a] < in.ids[b];
  };
  const std::int64_t mine = std::min(size, in.n);
  std::partial_sort(order.begin(), order.begin() + mine, order.end(), before);

  std::int64_t width = 0;  // padded candidate count per rank (all_gather needs equal shapes)
  for (std::int64_t n : w.n) width = std::max(width, std::min(size, n));
  Tensor send = Tensor::zeros({width, 2}, DType::i64, Device::cpu);
  for (std::int64_t i = 0; i < mine; ++i) {
    const std::int64_t t = order[static_cast<std::size_t>(i)];
    send.data<std::int64_t>()[2 * i] = static_cast<std::int64_t>(hash[static_cast<std::size_t>(t)]);
    send.data<std::int64_t>()[2 * i + 1] = in.ids[t];
  }
  Tensor recv = Tensor::empty({P * width, 2}, DType::i64, Device::cpu);
  comm.all_gather(send, recv);

  struct Candidate {
    std::uint64_t hash;
    std::int64_t id;
    int rank;
    std::int64_t pos;  // index into the owner's `order`
  };
  std::vector<Candidate> all;
  const std::int64_t* r = recv.data<std::int64_t>();
  for (int p = 0; p < P; ++p)
    for (std::int64_t i = 0; i < std::min(size, w.n[static_cast<std::size_t>(p)]); ++i) {
      const std::int64_t* c = r + 2 * (p * width + i);
      all.push_back({static_cast<std::uint64_t>(c[0]), c[1], p, i});
    }
  std::sort(all.begin(), all.end(), [](const Candidate& a, const Candidate& b) {
    return a.hash != b.hash ? a.hash < b.hash : a.id < b.id;
  });
  for (std::size_t i = 1; i < all.size(); ++i)
    if (all[i].id == all[i - 1].id)
      UPCYCLE_THROW("spherical_kmeans: global id ", all[i].id, " is held by two tokens (ranks ", all[i - 1].rank,
                    " and ", all[i].rank, "); ids must be unique over all ranks");

  // Each sample row has exactly one owner: the others add zeros, so the sum is exact. The owner
  // gathers its rows on their device and copies them to the host.
  std::vector<std::int64_t> slots, rows;
  for (std::int64_t i = 0; i < size; ++i) {
    const Candidate& c = all[static_cast<std::size_t>(i)];
    if (c.rank != me) continue;
    slots.push_back(i);
    rows.push_back(order[static_cast<std::size_t>(c.pos)]);
  }
  Tensor sample = Tensor::zeros({size, w.d}, DType::f32, Device::cpu);
  if (!rows.empty()) {
    const std::int64_t m = static_cast<std::int64_t>(rows.size());
    Tensor picked = Tensor::empty({m, w.d}, DType::f32, in.unit.device());
    backend_of(in.unit).gather_rows(in.unit, Tensor::from_vector(rows, {m}, in.unit.device()), picked);
    const Tensor host = picked.to(Device::cpu);
    const float* src = host.data<float>();
    float* out = sample.data<float>();
    for (std::int64_t r = 0; r < m; ++r)
      std::copy(src + r * w.d, src + (r + 1) * w.d, out + slots[static_cast<std::size_t>(r)] * w.d);
  }
  comm.all_reduce(sample, CommReduce::sum);
  return sample;
}

// Index of the row where the running sum of the weights first exceeds `target` (rows of weight 0
// are never taken; rounding that leaves the sum <= target at the end takes the last positive one).
std::int64_t draw_weighted(const std::vector<double>& weight, double target) {
  double cum = 0;
  std::int64_t pick = -1;
  for (std::size_t i = 0; i < weight.size(); ++i) {
    if (weight[i] <= 0) continue;
    pick = static_cast<std::int64_t>(i);
    cum += weight[i];
    if (cum > target) break;
  }
  return pick;
}

// Candidates per greedy k-means++ step. On the noisy clusters of the unit test
// NoisyHighDimensionalClustersAreRecovered (K = 8, 100 seeds) plain k-means++ (1 candidate) merged
// two clusters in 61 runs, 4 candidates (scikit-learn's 2 + ln K) in 6, 8 in 2, 12 in none; so
// 4 + 4 ln K (12 for K = 8).
std::int64_t seeding_trials(std::int64_t K) { return 4 + static_cast<std::int64_t>(4.0 * std::log(static_cast<double>(K))); }

// Squared Euclidean distance of two rows in float: exactly 0 for identical rows (a GEMM's
// 2 - 2 cos is not), and ample precision to weigh the draws.
float squared_distance(const float* a, const float* b, std::int64_t d) {
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (std::int64_t j = 0; j < d; ++j) {
    const float diff = a[j] - b[j];
    s += diff * diff;
  }
  return s;
}

struct Seeding {
  Tensor centroids;        // [K, D]; rows >= placed are unset
  std::int64_t placed = 0;
};

// Greedy k-means++ on the sample (the same on every rank; Arthur & Vassilvitskii 2007, as in
// scikit-learn): the weight of a row is its squared distance to the nearest chosen centroid; each
// step draws seeding_trials(K) candidates with probability proportional to the weight and keeps
// the one that lowers the total weight most (ties: the first drawn). Plain k-means++ often puts
// two seeds into one cluster when the clusters are noisy (two tokens of one cluster are then not
// much closer than tokens of two clusters), and Lloyd does not undo that. When every weight is 0
// (the sample holds fewer distinct rows than K) the remaining centroids are left unplaced: they
// sit out the first assignment and are re-seeded from all tokens like any empty cluster. (A
// duplicate centroid instead would tie with its twin, and f32 rounding would settle the ties.)
Seeding kmeans_plus_plus(const Tensor& sample, std::int64_t K, std::uint64_t seed) {
  const std::int64_t S = sample.dim(0), D = sample.dim(1), trials = seeding_trials(K);
  const float* x = sample.data<float>();
  Seeding out;
  out.centroids = Tensor::zeros({K, D}, DType::f32, Device::cpu);
  float* c = out.centroids.data<float>();
  std::vector<double> weight(static_cast<std::size_t>(S), std::numeric_limits<double>::infinity());
  std::vector<double> trial_weight(static_cast<std::size_t>(trials * S)), totals(static_cast<std::size_t>(trials));
  std::vector<std::int64_t> picks;
  // trial_weight[l] = min(weight, distance to row picks[l]) and its total (summed in row order).
  // Rows in blocks: each row meets all candidates while it is in cache.
  const auto lowered = [&]() {
    const std::int64_t m = static_cast<std::int64_t>(picks.size());
    cpu::parallel_for(S, 64, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t i = b; i < e; ++i)
        for (std::int64_t l = 0; l < m; ++l)
          trial_weight[static_cast<std::size_t>(l * S + i)] = std::min<double>(
              weight[static_cast<std::size_t>(i)], squared_distance(x + i * D, x + picks[static_cast<std::size_t>(l)] * D, D));
    });
    for (std::int64_t l = 0; l < m; ++l) {
      double t = 0;
      for (std::int64_t i = 0; i < S; ++i) t += trial_weight[static_cast<std::size_t>(l * S + i)];
      totals[static_cast<std::size_t>(l)] = t;
    }
  };
  std::uint64_t draw = 0;
  picks.push_back(std::min<std::int64_t>(S - 1, static_cast<std::int64_t>(seeding_uniform(seed, draw++) * S)));
  for (std::int64_t j = 0; j < K; ++j) {
    if (j > 0) {
      double total = 0;
      for (double v : weight) total += v;
      if (!(total > 0)) break;  // every row sits on a centroid: leave the rest unplaced
      picks.clear();
      for (std::int64_t l = 0; l < trials; ++l) picks.push_back(draw_weighted(weight, seeding_uniform(seed, draw++) * total));
    }
    std::size_t best = 0;
    if (j + 1 < K || picks.size() > 1) {
      lowered();
      for (std::size_t l = 1; l < picks.size(); ++l)
        if (totals[l] < totals[best]) best = l;
      std::copy(trial_weight.begin() + static_cast<std::ptrdiff_t>(best) * S,
                trial_weight.begin() + static_cast<std::ptrdiff_t>(best + 1) * S, weight.begin());
    }
    const std::int64_t pick = picks[best];
    std::copy(x + pick * D, x + (pick + 1) * D, c + j * D);
    out.placed = j + 1;
  }
  return out;
}

// ---- 3. Lloyd iterations ---------------------------------------------------------------------

// Fixed chunks of tokens for the reductions: boundaries depend on n, K and D only. At most 64
// chunks, fewer when K * D is large (the partials take chunks * (K * D + K + 2) doubles: <= 32 MiB
// for K * D up to 2^20).
struct Chunks {
  std::int64_t count = 0, size = 0;
};
Chunks make_chunks(std::int64_t n, std::int64_t stride) {
  const std::int64_t cap = std::clamp<std::int64_t>((std::int64_t{1} << 22) / stride, 4, 64);
  Chunks c;
  c.size = std::max<std::int64_t>(1024, (n + cap - 1) / cap);
  c.count = (n + c.size - 1) / c.size;
  return c;
}

class Lloyd {
 public:
  Lloyd(const LocalInput& in, const WorldInput& w, std::int64_t K, Communicator& comm)
      : in_(in), w_(w), K_(K), D_(w.d), comm_(comm), device_(in.unit.device()), backend_(backend_for(device_)),
        stride_(K * w.d + K + 2), chunks_(make_chunks(in.n, stride_)) {
    scores_ = Tensor::empty({K, std::max<std::int64_t>(in.n, 1)}, DType::f32, device_);
    assignment_ = Tensor::full({in.n}, -1.0, DType::i64, device_);
    next_ = Tensor::empty({in.n}, DType::i64, device_);
    best_ = Tensor::empty({in.n}, DType::f32, device_);
    global_ = Tensor::zeros({stride_}, DType::f64, device_);
  }

  // One iteration: assignment, reduction, re-seeding of empty clusters, centroid update.
  // Only the first `active` centroids compete in the assignment step. `centroids` is on the host.
  KMeansIteration step(Tensor& centroids, std::int64_t iter, std::int64_t active) {
    assign(centroids, active);
    comm_.all_reduce(global_, CommReduce::sum);
    Tensor host = global_.to(Device::cpu);
    double* g = host.data<double>();
    KMeansIteration it;
    it.iter = iter;
    it.objective = g[K_ * D_ + K_] / static_cast<double>(w_.total);
    it.changed = static_cast<std::int64_t>(g[K_ * D_ + K_ + 1]);
    it.reseeded = reseed_empty(g);
    update_centroids(g, centroids);
    for (std::int64_t e = 0; e < K_; ++e) it.sizes.push_back(static_cast<std::int64_t>(g[K_ * D_ + e]));
    return it;
  }

  // This rank's assignment, on the points' device.
  const Tensor& assignment() const { return assignment_; }

 private:
  // scores^T = centroids x unit^T (one GEMM, [K, n]: with K small, this orientation packs the
  // large operand faster than unit x centroids^T), then the argmax of every token over the first
  // `active` rows (topk with k = 1 of the [n, active] transpose: ties go to the lowest index),
  // and the double sums of the tokens' unit rows, counts, objective and `changed` in fixed chunks
  // (cluster_sums).
  void assign(const Tensor& centroids, std::int64_t active) {
    const std::int64_t n = in_.n;
    if (n > 0) {
      GemmDesc g;
      g.m = K_;
      g.n = n;
      g.k = D_;
      g.trans_b = true;
      backend_.gemm(g, centroids.to(device_), in_.unit, scores_);
      Tensor by_token = Tensor::empty({n, active}, DType::f32, device_);
      const int transpose[2] = {1, 0};
      backend_.permute(scores_.rows(0, active), by_token, transpose);
      Tensor best = best_.reshape({n, 1}), arg = next_.reshape({n, 1});
      backend_.topk(by_token, 1, best, arg);
    }
    backend_.cluster_sums(in_.unit, best_, next_, assignment_, K_, chunks_.size, global_);
    std::swap(assignment_, next_);
  }

  // Empty clusters take the tokens farthest from their own centroids (lowest best score; ties:
  // lowest id). A token is only taken from a cluster that keeps at least one other token. Every
  // rank proposes its own min(n, m + K) farthest tokens: the global choice walks the tokens in
  // (score, id) order, takes m and skips at most one per cluster (its last token), so it never
  // looks past a rank's first m + K. Updates the global sums and counts and this rank's assignment.
  std::int64_t reseed_empty(double* g) {
    double* counts = g + K_ * D_;
    std::vector<std::int64_t> empty;
    for (std::int64_t e = 0; e < K_; ++e)
      if (counts[e] == 0) empty.push_back(e);
    if (empty.empty()) return 0;
    const std::int64_t m = static_cast<std::int64_t>(empty.size());
    const int P = comm_.size(), me = comm_.rank();
    const std::int64_t want = m + K_;
    // Rare (only with an empty cluster): the scores and the assignment come to the host.
    const std::vector<float> best = best_.to_vector<float>();
    const std::vector<std::int64_t> a = assignment_.to_vector<std::int64_t>();

    std::vector<std::int64_t> order(static_cast<std::size_t>(in_.n));
    std::iota(order.begin(), order.end(), std::int64_t{0});
    const std::int64_t mine = std::min(want, in_.n);
    std::partial_sort(order.begin(), order.begin() + mine, order.end(), [&](std::int64_t x, std::int64_t y) {
      const float sx = best[static_cast<std::size_t>(x)], sy = best[static_cast<std::size_t>(y)];
      return sx != sy ? sx < sy : in_.ids[x] < in_.ids[y];
    });
    std::int64_t width = 0;
    for (std::int64_t n : w_.n) width = std::max(width, std::min(want, n));
    // Per candidate: score (double bits), id, current cluster, index on its rank.
    Tensor send = Tensor::zeros({width, 4}, DType::i64, Device::cpu);
    for (std::int64_t i = 0; i < mine; ++i) {
      const std::int64_t t = order[static_cast<std::size_t>(i)];
      std::int64_t* row = send.data<std::int64_t>() + 4 * i;
      row[0] = bits_of(static_cast<double>(best[static_cast<std::size_t>(t)]));
      row[1] = in_.ids[t];
      row[2] = a[static_cast<std::size_t>(t)];
      row[3] = t;
    }
    Tensor recv = Tensor::empty({P * width, 4}, DType::i64, Device::cpu);
    comm_.all_gather(send, recv);

    struct Candidate {
      double score;
      std::int64_t id, cluster, index;
      int rank;
    };
    std::vector<Candidate> all;
    for (int p = 0; p < P; ++p)
      for (std::int64_t i = 0; i < std::min(want, w_.n[static_cast<std::size_t>(p)]); ++i) {
        const std::int64_t* row = recv.data<std::int64_t>() + 4 * (p * width + i);
        all.push_back({double_of(row[0]), row[1], row[2], row[3], p});
      }
    std::sort(all.begin(), all.end(), [](const Candidate& x, const Candidate& y) {
      return x.score != y.score ? x.score < y.score : x.id < y.id;
    });
    std::vector<double> left(counts, counts + K_);
    std::vector<Candidate> taken;
    for (const Candidate& c : all) {
      if (static_cast<std::int64_t>(taken.size()) == m) break;
      if (left[static_cast<std::size_t>(c.cluster)] <= 1) continue;
      left[static_cast<std::size_t>(c.cluster)] -= 1;
      taken.push_back(c);
    }
    UPCYCLE_CHECK(static_cast<std::int64_t>(taken.size()) == m, "spherical_kmeans: found ", taken.size(),
                  " tokens to re-seed ", m, " empty clusters with");

    // The owners contribute the taken tokens' unit rows; the others add zeros (exact).
    Tensor rows = Tensor::zeros({m, D_}, DType::f32, Device::cpu);
    for (std::int64_t i = 0; i < m; ++i) {
      const Candidate& c = taken[static_cast<std::size_t>(i)];
      if (c.rank != me) continue;
      rows.rows(i, i + 1).copy_from(in_.unit.rows(c.index, c.index + 1));
      assignment_.rows(c.index, c.index + 1)
          .copy_from(Tensor::from_vector<std::int64_t>({empty[static_cast<std::size_t>(i)]}, {1}, Device::cpu));
    }
    comm_.all_reduce(rows, CommReduce::sum);
    for (std::int64_t i = 0; i < m; ++i) {
      const std::int64_t from = taken[static_cast<std::size_t>(i)].cluster, to = empty[static_cast<std::size_t>(i)];
      const float* u = rows.data<float>() + i * D_;
      for (std::int64_t j = 0; j < D_; ++j) {
        g[from * D_ + j] -= u[j];
        g[to * D_ + j] = u[j];
      }
      counts[from] -= 1;
      counts[to] = 1;
    }
    return m;
  }

  // mu_e = sums_e / ||sums_e|| (in double). A sum of zero length (tokens that cancel exactly)
  // keeps the previous centroid.
  void update_centroids(const double* g, Tensor& centroids) {
    float* c = centroids.data<float>();
    for (std::int64_t e = 0; e < K_; ++e) {
      const double* s = g + e * D_;
      double sq = 0;
      for (std::int64_t j = 0; j < D_; ++j) sq += s[j] * s[j];
      if (!(sq > 0)) continue;
      const double inv = 1.0 / std::sqrt(sq);
      for (std::int64_t j = 0; j < D_; ++j) c[e * D_ + j] = static_cast<float>(s[j] * inv);
    }
  }

  const LocalInput& in_;
  const WorldInput& w_;
  const std::int64_t K_, D_;
  Communicator& comm_;
  const Device device_;        // the points' device: every tensor below lives there
  Backend& backend_;
  const std::int64_t stride_;  // K * D sums, K counts, objective, changed
  const Chunks chunks_;
  Tensor scores_;              // [K, n] f32
  Tensor assignment_;          // [n] i64: the current assignment (-1 before the first step)
  Tensor next_;                // [n] i64: the argmax of the step being taken
  Tensor best_;                // [n] f32: per token the cosine to its assigned centroid
  Tensor global_;              // [stride_] f64: the sums, all-reduced
};

}  // namespace

std::uint64_t kmeans_sample_hash(std::uint64_t seed, std::int64_t global_id) { return token_hash(seed, global_id); }

KMeansResult spherical_kmeans(const Tensor& points, const Tensor& global_ids, const KMeansOptions& options,
                              Communicator& comm) {
  // Options are the same on every rank, so throwing here leaves no rank behind in a collective.
  UPCYCLE_CHECK(options.clusters >= 1, "spherical_kmeans: K (clusters) must be >= 1, got ", options.clusters);
  UPCYCLE_CHECK(options.max_iters >= 1, "spherical_kmeans: max_iters must be >= 1, got ", options.max_iters);
  UPCYCLE_CHECK(options.init_sample >= 1, "spherical_kmeans: init_sample must be >= 1, got ", options.init_sample);
  const std::int64_t K = options.clusters;

  const LocalInput in = check_local(points, global_ids);
  const WorldInput w = agree_on_input(in, K, comm);
  // k-means++ needs K distinct rows to choose from at least: the sample is never smaller than K.
  const std::int64_t sample_size = std::min(w.total, std::max(options.init_sample, K));
  Seeding seeding = kmeans_plus_plus(gather_sample(in, w, sample_size, options.seed, comm), K, options.seed);
  Tensor centroids = seeding.centroids;

  KMeansResult result;
  Lloyd lloyd(in, w, K, comm);
  for (std::int64_t iter = 1; iter <= options.max_iters; ++iter) {
    // Unplaced centroids sit out the first assignment (they come out empty and are re-seeded).
    result.history.push_back(lloyd.step(centroids, iter, iter == 1 ? seeding.placed : K));
    const KMeansIteration& it = result.history.back();
    if (options.stop_when_stable && it.changed == 0 && it.reseeded == 0) {
      result.converged = true;
      break;
    }
  }
  result.centroids = centroids;
  result.assignment = lloyd.assignment();
  result.sizes = result.history.back().sizes;
  return result;
}

}  // namespace upcycle::init
