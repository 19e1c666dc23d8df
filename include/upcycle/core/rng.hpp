#pragma once
// Counter-based random numbers (Philox-4x32-10, Salmon et al. 2011). Element i of a stream with
// key `seed` and base `offset` depends only on (seed, offset + i), so any backend and any number
// of ranks that agree on the offsets draw the same numbers. Host/device qualified for CUDA reuse.
#include <cstdint>

#include "upcycle/core/host_device.hpp"

namespace upcycle {

struct Philox4x32 {
  static UPCYCLE_HD inline void round(std::uint32_t ctr[4], const std::uint32_t key[2]) {
    const std::uint64_t p0 = static_cast<std::uint64_t>(0xD2511F53u) * ctr[0];
    const std::uint64_t p1 = static_cast<std::uint64_t>(0xCD9E8D57u) * ctr[2];
    const std::uint32_t hi0 = static_cast<std::uint32_t>(p0 >> 32), lo0 = static_cast<std::uint32_t>(p0);
    const std::uint32_t hi1 = static_cast<std::uint32_t>(p1 >> 32), lo1 = static_cast<std::uint32_t>(p1);
    const std::uint32_t c0 = hi1 ^ ctr[1] ^ key[0];
    const std::uint32_t c2 = hi0 ^ ctr[3] ^ key[1];
    ctr[0] = c0;
    ctr[1] = lo1;
    ctr[2] = c2;
    ctr[3] = lo0;
  }
  // Four 32-bit words for counter `counter` under key `seed`.
  static UPCYCLE_HD inline void generate(std::uint64_t seed, std::uint64_t counter, std::uint32_t out[4]) {
    std::uint32_t key[2] = {static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)};
    std::uint32_t ctr[4] = {static_cast<std::uint32_t>(counter), static_cast<std::uint32_t>(counter >> 32), 0u, 0u};
    for (int r = 0; r < 10; ++r) {
      round(ctr, key);
      if (r < 9) {
        key[0] += 0x9E3779B9u;
        key[1] += 0xBB67AE85u;
      }
    }
    out[0] = ctr[0];
    out[1] = ctr[1];
    out[2] = ctr[2];
    out[3] = ctr[3];
  }
  // The i-th 32-bit word of stream `seed`.
  static UPCYCLE_HD inline std::uint32_t word(std::uint64_t seed, std::uint64_t i) {
    std::uint32_t out[4];
    generate(seed, i >> 2, out);
    return out[i & 3u];
  }
  // Uniform in [0, 1) with 24 bits, from word i.
  static UPCYCLE_HD inline float uniform(std::uint64_t seed, std::uint64_t i) {
    return static_cast<float>(word(seed, i) >> 8) * (1.0f / 16777216.0f);
  }
};

// A seeded stream with a running offset: each draw of n numbers advances the offset by n, so that
// saving (seed, offset) in a checkpoint restores the stream exactly.
class RngStream {
 public:
  RngStream() = default;
  explicit RngStream(std::uint64_t seed, std::uint64_t offset = 0) : seed_(seed), offset_(offset) {}
  std::uint64_t seed() const { return seed_; }
  std::uint64_t offset() const { return offset_; }
  // Reserve n numbers; returns the offset of the first.
  std::uint64_t advance(std::uint64_t n) {
    const std::uint64_t o = offset_;
    offset_ += n;
    return o;
  }

 private:
  std::uint64_t seed_ = 0;
  std::uint64_t offset_ = 0;
};

}  // namespace upcycle
