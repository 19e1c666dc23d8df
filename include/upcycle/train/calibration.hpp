#pragma once
// Calibration for cluster-aware upcycling (docs/methods.md section 2, step 1): the dense model runs
// without gradients over training batches, sharded over all ranks, and each future MoE block keeps
// its FFN inputs u = LN2(h). Memory stays bounded: of every batch only a share of the tokens is kept
// (upcycle.calib_token_frac), chosen by a hash of the token's global identity (sample id, position),
// so the kept set is the same whatever the number of ranks, and the pass stops once
// upcycle.calib_tokens tokens are kept over all ranks (or after one epoch of the training data).
// The kept tokens stay on the model's device (gathered there batch by batch), so in a CUDA run
// they never travel to the host.
#include <cstdint>
#include <vector>

#include "upcycle/dist/communicator.hpp"
#include "upcycle/init/ffn_upcycling.hpp"
#include "upcycle/train/task.hpp"

namespace upcycle {

struct CalibrationOptions {
  std::int64_t tokens = 65536;  // to keep over all ranks
  double token_frac = 0.25;     // share of each batch's tokens kept
  std::uint64_t seed = 1234;
};

struct Calibration {
  std::vector<init::CalibrationShard> blocks;  // one per requested block, this rank's tokens
  std::int64_t global_tokens = 0;              // kept per block over all ranks
  std::int64_t batches = 0;                    // global batches run
  std::int64_t bytes_local = 0;                // this rank's memory for the kept tokens (all blocks)
  std::int64_t bytes_max = 0;                  // the largest bytes_local over the ranks
  bool exhausted = false;                      // one epoch ended before `tokens` were kept
  double seconds = 0;
};

// Collective over `world`. `blocks`: the indices of the blocks to observe (task.blocks()).
Calibration calibrate(Task& task, const std::vector<std::int64_t>& blocks, const CalibrationOptions& options,
                      Communicator& world);

}  // namespace upcycle
