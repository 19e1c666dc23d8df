#include "upcycle/data/sampler.hpp"

#include <algorithm>
#include <numeric>

#include "upcycle/core/error.hpp"
#include "upcycle/core/rng.hpp"

namespace upcycle {

ShardedSampler::ShardedSampler(std::int64_t num_examples, std::int64_t global_batch, int rank, int world,
                               std::uint64_t seed, bool shuffle)
    : num_examples_(num_examples), global_batch_(global_batch), rank_(rank), world_(world), seed_(seed),
      shuffle_(shuffle) {
  UPCYCLE_CHECK(world > 0 && rank >= 0 && rank < world, "bad rank ", rank, " of ", world);
  UPCYCLE_CHECK(global_batch > 0 && global_batch % world == 0, "the global batch (", global_batch,
                ") must be a positive multiple of the number of ranks (", world, ")");
  UPCYCLE_CHECK(num_examples >= global_batch, "the dataset has ", num_examples,
                " examples, fewer than one global batch of ", global_batch);
}

void ShardedSampler::shuffle_epoch() {
  permutation_.resize(static_cast<std::size_t>(num_examples_));
  std::iota(permutation_.begin(), permutation_.end(), 0);
  permuted_epoch_ = cursor_.epoch;
  if (!shuffle_) return;
  // Sort indices by Philox keys: a permutation that depends only on (seed, epoch).
  const std::uint64_t stream = seed_ * 0x9E3779B97F4A7C15ull + static_cast<std::uint64_t>(cursor_.epoch);
  std::vector<std::uint64_t> keys(static_cast<std::size_t>(num_examples_));
  for (std::int64_t i = 0; i < num_examples_; ++i) {
    std::uint32_t w[4];
    Philox4x32::generate(stream, static_cast<std::uint64_t>(i), w);
    keys[static_cast<std::size_t>(i)] = (std::uint64_t{w[0]} << 32) | w[1];
  }
  std::sort(permutation_.begin(), permutation_.end(), [&](std::int64_t a, std::int64_t b) {
    const auto ka = keys[static_cast<std::size_t>(a)], kb = keys[static_cast<std::size_t>(b)];
    return ka != kb ? ka < kb : a < b;
  });
}

std::vector<std::int64_t> ShardedSampler::next() {
  if (cursor_.position + global_batch_ > num_examples_) {
    ++cursor_.epoch;
    cursor_.position = 0;
  }
  if (permuted_epoch_ != cursor_.epoch) shuffle_epoch();
  const std::int64_t local = local_batch();
  const auto begin = permutation_.begin() + cursor_.position + rank_ * local;
  std::vector<std::int64_t> out(begin, begin + local);
  cursor_.position += global_batch_;
  return out;
}

void ShardedSampler::restore(const Cursor& c) {
  UPCYCLE_CHECK(c.epoch >= 0 && c.position >= 0 && c.position <= num_examples_, "bad sampler cursor (epoch ",
                c.epoch, ", position ", c.position, ") for ", num_examples_, " examples");
  cursor_ = c;
}

}  // namespace upcycle
