#pragma once
// Which examples each rank sees at each step. Every epoch is a permutation of [0, N) drawn from
// (seed, epoch); consecutive global batches are consecutive slices of it (an epoch's last partial
// batch is dropped); rank r of W takes the r-th contiguous share of each global batch. The cursor
// (epoch, position) is all a checkpoint needs to resume with exactly the batches it would have seen,
// and a global batch is the same whatever W is.
#include <cstdint>
#include <vector>

namespace upcycle {

class ShardedSampler {
 public:
  struct Cursor {
    std::int64_t epoch = 0;
    std::int64_t position = 0;  // index into the epoch's permutation of the next global batch
  };

  // shuffle = false walks the examples in order every epoch.
  ShardedSampler(std::int64_t num_examples, std::int64_t global_batch, int rank, int world, std::uint64_t seed,
                 bool shuffle = true);

  // This rank's example indices of the next global batch; advances the cursor.
  std::vector<std::int64_t> next();
  const Cursor& cursor() const { return cursor_; }
  void restore(const Cursor& c);
  std::int64_t local_batch() const { return global_batch_ / world_; }
  std::int64_t batches_per_epoch() const { return num_examples_ / global_batch_; }

 private:
  void shuffle_epoch();

  std::int64_t num_examples_, global_batch_;
  int rank_, world_;
  std::uint64_t seed_;
  bool shuffle_;
  Cursor cursor_;
  std::int64_t permuted_epoch_ = -1;
  std::vector<std::int64_t> permutation_;
};

}  // namespace upcycle
