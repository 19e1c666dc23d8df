#pragma once
// The upcycling initialisers (docs/methods.md section 1): from the dense FFN of one block to the E
// experts and the router of its MoE replacement. One registry (upcycle_methods) maps each
// `[upcycle] method` to its function; the stage that reads a dense checkpoint and writes an MoE
// one (src/train/upcycle_stage.cpp) calls them block by block.
//
// Layouts follow nn::Mlp and moe::Experts: w1 [R F, D] (R = 2 for SwiGLU: rows 0..F-1 the gate,
// F..2F-1 the up-projection), b1 [R F], w2 [D, F], b2 [D]; the experts stack them by global id,
// w1 [E, R Fe, D], b1 [E, R Fe], w2 [E, D, Fe], b2 [E, D] (Fe = F, or F / G for granular).
//
// Random draws. Every method draws from one stream per block (upcycle_stream), in this order: the
// router first, then the experts one after another. So methods that agree on the router (sparse,
// drop, drop_svd) give the same router from the same seed, and drop with r = 0 gives exactly the
// sparse checkpoint.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "upcycle/core/rng.hpp"
#include "upcycle/core/tensor.hpp"
#include "upcycle/dist/communicator.hpp"
#include "upcycle/init/spherical_kmeans.hpp"
#include "upcycle/init/whitened_svd.hpp"

namespace upcycle::init {

// One block's dense FFN, host f32. Biases are undefined in a model without biases.
struct DenseFfn {
  Tensor w1, b1, w2, b2;
  std::int64_t rows_per_unit = 1;  // R
  std::int64_t d_model() const { return w1.dim(1); }
  std::int64_t d_ff() const { return w2.dim(1); }
};

// All E experts of a block by global expert id, and its router [E, D].
struct ExpertSet {
  Tensor w1, b1, w2, b2;
  Tensor router;
};

struct UpcycleOptions {
  std::string method = "cluster";
  std::int64_t num_experts = 8;
  std::int64_t top_k = 2;
  std::uint64_t seed = 1234;
  double router_std = 0.02;     // every method but cluster
  double noise_std = 0.0;       // sparse
  double drop_ratio = 0.5;      // drop
  double svd_keep_frac = 0.75;  // drop_svd
  std::int64_t granularity = 2;  // granular
  bool granular_scale = false;   // granular: w2 x G, so top-G renormalised gates give the dense FFN
  double router_scale = 1.0;     // cluster
  std::int64_t kmeans_iters = 25;
  std::int64_t kmeans_init_sample = 8192;
  WhitenedSvdOptions svd;        // cluster
  // cluster, the control upcycle.subspace = random: each expert keeps a random orthonormal
  // subspace of the rank the SVD rule chose (WhitenedSvdOptions::random_subspace), drawn from
  // upcycle_stream(seed, block) at offset (e + 1) 2^40 for expert e.
  bool random_subspace = false;
};

// This rank's calibration tokens of one block: the FFN inputs u = LN2(h), unnormalised.
struct CalibrationShard {
  Tensor points;      // [n, D] f32 on the model's device: cluster upcycling runs where they are
  Tensor global_ids;  // [n] i64 on the host, unique over all ranks
};

// What the initialisation of one block found, for the log, the report and the checkpoint.
struct BlockReport {
  std::vector<KMeansIteration> kmeans;         // cluster: one entry per Lloyd iteration
  std::vector<std::int64_t> cluster_sizes;     // cluster: tokens per expert (global)
  std::vector<std::int64_t> svd_ranks;         // cluster: rank kept per expert
  std::vector<double> energy_kept;             // cluster: whitened energy kept per expert
  std::vector<std::string> notes;              // e.g. a Cholesky fallback
  std::vector<std::pair<std::string, double>> seconds;  // phase -> wall seconds
};

struct BlockContext {
  const UpcycleOptions& options;
  std::int64_t block = 0;                          // the block's index in the model
  const CalibrationShard* calibration = nullptr;   // methods with needs_calibration
  Communicator* world = nullptr;                   // all ranks (collective methods)
};

using UpcycleFn = ExpertSet (*)(const BlockContext& ctx, const DenseFfn& dense, BlockReport& report);

// Every rank of ctx.world calls a method together with the same dense FFN (cluster and drop_svd
// spread their experts over the ranks and all-reduce them); each returns all E experts.
struct UpcycleMethod {
  const char* name;
  bool needs_calibration;  // runs the dense model over calibration data first
  UpcycleFn run;
};

// The one registry of methods, in the order of the config's allowed values.
const std::vector<UpcycleMethod>& upcycle_methods();
// Throws Error listing the known names when `name` is none of them.
const UpcycleMethod& upcycle_method(const std::string& name);

// The stream of block `block` (seed and block mixed, so blocks draw independently).
RngStream upcycle_stream(std::uint64_t seed, std::int64_t block);

// --- pieces shared by the methods (ffn_upcycling.cpp) ---
// [rows, cols] f32 of N(0, std) from the next 2 rows cols words of `rng`.
Tensor normal_tensor(const Shape& shape, double std, RngStream& rng);
// E copies of the dense FFN (biases copied too), the starting point of sparse, drop and cluster.
ExpertSet replicate_dense(const DenseFfn& dense, std::int64_t experts);
// The start of sparse, drop and drop_svd: the router N(0, router_std^2) as the first draws of `rng`,
// and E copies of the dense FFN.
ExpertSet copies_with_random_router(const BlockContext& ctx, const DenseFfn& dense, RngStream& rng);

// The methods, also callable directly (tests).
ExpertSet upcycle_sparse(const BlockContext& ctx, const DenseFfn& dense, BlockReport& report);
ExpertSet upcycle_drop(const BlockContext& ctx, const DenseFfn& dense, BlockReport& report);
ExpertSet upcycle_drop_svd(const BlockContext& ctx, const DenseFfn& dense, BlockReport& report);
ExpertSet upcycle_granular(const BlockContext& ctx, const DenseFfn& dense, BlockReport& report);
ExpertSet upcycle_cluster(const BlockContext& ctx, const DenseFfn& dense, BlockReport& report);

}  // namespace upcycle::init
