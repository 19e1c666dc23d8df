// Random kernels on the Philox stream: the same numbers as the CPU backend for the same
// (seed, offset). Element i reads the Philox words of (seed, offset + w i + t) exactly like
// cpu_random.cpp and applies the same formula (backend/random_math.hpp, shared with the CPU); only
// the fetching differs: each thread draws a whole Philox block (four words, philox_blocks_math.hpp)
// and serves every element whose first word lies in it, one Philox call per 4 / w elements.
//
// Bit-identity (see random_math.hpp): uniform and dropout_mask are identical to the CPU in f32 and
// f64. normal takes log and cos in double, where CUDA may differ from glibc by an ulp or two: f64
// normals may differ by a few ulp, f32 normals (the double rounded to float) are identical except
// for a double within those ulp of a float rounding boundary (about one element in 10^8).
#include "backend/checks_creation.hpp"
#include "backend/random_math.hpp"
#include "cuda_common.cuh"
#include "philox_blocks_math.hpp"
#include "upcycle/core/rng.hpp"

namespace upcycle {

namespace {

// CPU twin: CpuBackend::uniform in src/backend/cpu/cpu_random.cpp.
template <class T>
__global__ void uniform_kernel(T* out, cuda::PhiloxBlocks pb, std::uint64_t seed, double lo, double hi) {
  for (std::int64_t k = cuda::grid_first(); k < pb.blocks; k += cuda::grid_stride()) {
    std::uint32_t w[4];
    Philox4x32::generate(seed, cuda::philox_block_counter(pb, k), w);
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) {
      const std::int64_t i = cuda::philox_lane_element(pb, k, lane);
      if (i >= 0) out[i] = static_cast<T>(random_math::uniform_value(w[lane], lo, hi));
    }
  }
}

// CPU twin: CpuBackend::dropout_mask in src/backend/cpu/cpu_random.cpp.
template <class T>
__global__ void dropout_mask_kernel(T* mask, cuda::PhiloxBlocks pb, std::uint64_t seed, float p, T keep) {
  for (std::int64_t k = cuda::grid_first(); k < pb.blocks; k += cuda::grid_stride()) {
    std::uint32_t w[4];
    Philox4x32::generate(seed, cuda::philox_block_counter(pb, k), w);
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) {
      const std::int64_t i = cuda::philox_lane_element(pb, k, lane);
      if (i >= 0) mask[i] = random_math::dropout_keeps(w[lane], p) ? keep : T(0);
    }
  }
}

// CPU twin: CpuBackend::normal in src/backend/cpu/cpu_random.cpp. Two words per element: with an
// odd offset the second word of the block's last element is lane 0 of the next block, drawn only
// then.
template <class T>
__global__ void normal_kernel(T* out, cuda::PhiloxBlocks pb, std::uint64_t seed, double mean, double std) {
  for (std::int64_t k = cuda::grid_first(); k < pb.blocks; k += cuda::grid_stride()) {
    std::uint32_t w[4];
    Philox4x32::generate(seed, cuda::philox_block_counter(pb, k), w);
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) {
      const std::int64_t i = cuda::philox_lane_element(pb, k, lane);
      if (i < 0) continue;
      std::uint32_t second;
      if (lane < 3) {
        second = w[lane + 1];
      } else {
        std::uint32_t next[4];
        Philox4x32::generate(seed, cuda::philox_block_counter(pb, k + 1), next);
        second = next[0];
      }
      out[i] = static_cast<T>(random_math::normal_value(w[lane], second, mean, std));
    }
  }
}

}  // namespace

void CudaBackend::uniform(Tensor& out, std::uint64_t seed, std::uint64_t offset, double lo, double hi) {
  dispatch_floating(out.dtype(), "uniform", [&](auto t) {
    using T = decltype(t);
    T* p = cuda::device_ptr<T>(out, "uniform");
    const cuda::PhiloxBlocks pb = cuda::philox_blocks(offset, out.numel(), 1);
    if (pb.blocks == 0) return;
    uniform_kernel<T><<<cuda::grid_blocks(pb.blocks), cuda::kBlockThreads, 0, stream()>>>(p, pb, seed, lo, hi);
    UPCYCLE_CUDA_CHECK_LAUNCH();
  });
}

void CudaBackend::normal(Tensor& out, std::uint64_t seed, std::uint64_t offset, double mean, double std) {
  dispatch_floating(out.dtype(), "normal", [&](auto t) {
    using T = decltype(t);
    T* p = cuda::device_ptr<T>(out, "normal");
    const cuda::PhiloxBlocks pb = cuda::philox_blocks(offset, out.numel(), 2);
    if (pb.blocks == 0) return;
    normal_kernel<T><<<cuda::grid_blocks(pb.blocks), cuda::kBlockThreads, 0, stream()>>>(p, pb, seed, mean, std);
    UPCYCLE_CUDA_CHECK_LAUNCH();
  });
}

void CudaBackend::dropout_mask(Tensor& mask, double p, std::uint64_t seed, std::uint64_t offset) {
  check_dropout_probability(p);
  dispatch_floating(mask.dtype(), "dropout_mask", [&](auto t) {
    using T = decltype(t);
    T* m = cuda::device_ptr<T>(mask, "dropout_mask");
    // Computed on the host as on the CPU: the same keep value and the same float threshold.
    const T keep = static_cast<T>(1.0 / (1.0 - p));
    const float pf = static_cast<float>(p);
    const cuda::PhiloxBlocks pb = cuda::philox_blocks(offset, mask.numel(), 1);
    if (pb.blocks == 0) return;
    dropout_mask_kernel<T><<<cuda::grid_blocks(pb.blocks), cuda::kBlockThreads, 0, stream()>>>(m, pb, seed, pf, keep);
    UPCYCLE_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace upcycle
