#pragma once
// Distributed spherical k-means (docs/methods.md section 2, cluster-aware initialisation, step 2):
// the tokens u_t are clustered by direction, u_t / ||u_t||, into K unit centroids mu_e.
//
//   seeding: greedy k-means++ (2 + ln K candidates per step, the best one kept) on a sample of
//            max(init_sample, K) tokens (all of them when there are fewer). The sample is the
//            tokens with the smallest 64-bit Philox hash of (seed, global id) over ALL ranks,
//            gathered to every rank and ordered by (hash, id); every rank then runs the same
//            seeding on it, so the start does not depend on how the tokens are sharded.
//   Lloyd:   assign c(t) = argmax_e mu_e . u_t/||u_t|| (ties: lowest e), then
//            mu_e = normalise(sum_{t in C_e} u_t/||u_t||). Per iteration one GEMM for the scores
//            and one all_reduce for sums, counts, objective and changed assignments; sums in double.
//   empty:   a cluster left empty after the assignment step takes the token farthest from its own
//            centroid (lowest cosine, over all ranks, ties: lowest global id); several empty
//            clusters take distinct tokens. That token moves to the empty cluster in the same
//            iteration, so no size in the history or the result is 0.
//   stop:    after max_iters, or (stop_when_stable) after an iteration that changed no assignment
//            and re-seeded nothing.
// Sharding only changes the order of the double sums (and of the f32 score GEMM's blocks), so
// every rank count gives the same result up to that rounding.
//
// Devices: the tokens stay on the device of `points` (the calibration's GPU in a CUDA run). The
// Lloyd steps are Backend kernels there (the score GEMM, topk for the argmax, cluster_sums for the
// sums in double), the same code on the CPU and on a GPU: a GPU gives the CPU's sums bit for bit
// for the same assignments, and its scores (cuBLAS, f32, TF32 only with run.allow_tf32) differ
// from the CPU's by rounding, so only a token within rounding of a tie can be assigned otherwise.
// The k-means++ seeding runs on the host on the gathered sample (init_sample rows at most); the
// host also updates the K centroids from the reduced sums each iteration.
#include <cstdint>
#include <vector>

#include "upcycle/core/tensor.hpp"
#include "upcycle/dist/communicator.hpp"

namespace upcycle::init {

struct KMeansOptions {
  std::int64_t clusters = 8;          // K
  std::int64_t max_iters = 25;        // Lloyd iterations at most
  std::int64_t init_sample = 8192;    // tokens sampled (over all ranks) for k-means++
  std::uint64_t seed = 1234;
  bool stop_when_stable = true;       // stop early once no assignment changes (false: always max_iters; benchmarks)
};

struct KMeansIteration {
  std::int64_t iter = 0;              // 1-based
  double objective = 0;               // mean over all tokens of max_e mu_e . u_t/||u_t|| (cosine), after the assignment step
  std::vector<std::int64_t> sizes;    // global cluster sizes (after re-seeding moved tokens)
  std::int64_t changed = 0;           // assignments that changed (global; iteration 1: every token)
  std::int64_t reseeded = 0;          // empty clusters re-seeded in this iteration
};

struct KMeansResult {
  Tensor centroids;                   // [K, D] f32 on the host, unit rows, identical on every rank
  Tensor assignment;                  // [n_local] i64 on the points' device, this rank's tokens
  std::vector<std::int64_t> sizes;    // final global sizes
  std::vector<KMeansIteration> history;
  bool converged = false;             // stopped because no assignment changed
};

// points: this rank's tokens [n_local, D] f32 (unnormalised; normalised inside; n_local may be 0 on
// some ranks, as [0, D]); global_ids: [n_local] i64, a unique id of every token over all ranks (the
// caller's global token index). Collective over comm: every rank calls it with the same options.
// Throws upcycle::Error on every rank (the checks are agreed on collectively, so no rank is left
// waiting in a collective) when K < 1, max_iters < 1, init_sample < 1, the total number of tokens is
// < K, the dims differ between ranks, the ids do not match the points, or a row has zero or
// non-finite norm (the message names the smallest such global id). Ids that occur twice are
// reported when they come up among the sample's candidates (not an exhaustive check).
KMeansResult spherical_kmeans(const Tensor& points, const Tensor& global_ids, const KMeansOptions& options,
                              Communicator& comm);

// The hash that orders tokens for the k-means++ sample: 64 bits of Philox (Philox4x32::word) of
// (seed, global_id). The sample is the tokens with the smallest (hash, id). Exposed so callers and
// tests can tell which tokens the seeding saw.
std::uint64_t kmeans_sample_hash(std::uint64_t seed, std::int64_t global_id);

}  // namespace upcycle::init
