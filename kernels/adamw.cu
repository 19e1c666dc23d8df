// Multi-tensor AdamW and EMA: one launch updates up to kAdamWMaxSegments tensor ranges (rows_math.hpp:
// plan_adamw), so a model's hundreds of parameter tensors cost a handful of launches, not one
// each. The launch's pointers, sizes and weight decays travel by value in the kernel parameters
// (no host-to-device copy, so nothing to keep alive until the kernel has run), and each block
// finds its segment in a small block table there.
#include <cstdint>
#include <type_traits>
#include <vector>

#include "backend/kernel_checks.hpp"
#include "cuda_common.cuh"
#include "rows_math.hpp"

namespace upcycle {

namespace {

template <class T>
struct AdamWSegment {
  T* p;
  const T* g;
  T* m;
  T* v;
  std::int64_t n;
  T decay;  // 1 - lr * weight_decay of the segment's tensor
};

template <class T>
struct AdamWLaunch {
  AdamWSegment<T> seg[cuda::kAdamWMaxSegments];
  std::int64_t block_start[cuda::kAdamWMaxSegments + 1];
  int count;
  T b1, b2, step_size, inv_sqrt_c2, eps;
};
// CUDA passes at most 4 KB of kernel parameters (newer toolkits allow more; we do not rely on it).
static_assert(sizeof(AdamWLaunch<double>) <= 4000, "AdamW launch table exceeds the kernel parameter space");
static_assert(sizeof(AdamWLaunch<float>) <= 4000, "AdamW launch table exceeds the kernel parameter space");

// CPU twin: adamw_tensor in src/backend/cpu/cpu_optim.cpp (the same expressions in T, so the same
// rounding up to contraction into FMAs). __grid_constant__: the table is indexed by a runtime
// segment number, which would otherwise copy the whole struct into local memory per thread.
template <class T>
__global__ void __launch_bounds__(cuda::kAdamWThreads) adamw_segments(const __grid_constant__ AdamWLaunch<T> L) {
  const std::int64_t block = blockIdx.x;
  const int s = cuda::find_segment(L.block_start, L.count, block);
  const AdamWSegment<T>& seg = L.seg[s];
  const cuda::ElementRange range = cuda::segment_slice(block, L.block_start[s], seg.n, cuda::kAdamWBlockElems);
  T* p = seg.p;
  const T* g = seg.g;
  T* pm = seg.m;
  T* pv = seg.v;
  const T b1 = L.b1, b2 = L.b2, step_size = L.step_size, inv_sqrt_c2 = L.inv_sqrt_c2, e = L.eps, decay = seg.decay;
  for (std::int64_t i = range.begin + threadIdx.x; i < range.end; i += blockDim.x) {
    const T gi = g[i];
    const T mi = b1 * pm[i] + (T(1) - b1) * gi;
    const T vi = b2 * pv[i] + (T(1) - b2) * gi * gi;
    pm[i] = mi;
    pv[i] = vi;
    p[i] = p[i] * decay - step_size * mi / (sqrt(vi) * inv_sqrt_c2 + e);
  }
}

// Launches the update of the tensors `which` (all of dtype T) of `tensors`.
template <class T>
void launch_adamw(cudaStream_t stream, const std::vector<AdamWTensor>& tensors, const std::vector<std::size_t>& which,
                  const AdamWStep& step) {
  if (which.empty()) return;
  std::vector<std::int64_t> sizes;
  sizes.reserve(which.size());
  for (std::size_t i : which) sizes.push_back(tensors[i].param.numel());
  const cuda::AdamWScalars sc = cuda::adamw_scalars(step.lr, step.beta1, step.beta2, step.step);
  for (const cuda::AdamWLaunchPlan& plan : cuda::plan_adamw(sizes)) {
    AdamWLaunch<T> L{};
    L.count = static_cast<int>(plan.segments.size());
    L.b1 = static_cast<T>(step.beta1);
    L.b2 = static_cast<T>(step.beta2);
    L.step_size = static_cast<T>(sc.step_size);
    L.inv_sqrt_c2 = static_cast<T>(sc.inv_sqrt_c2);
    L.eps = static_cast<T>(step.eps);
    for (int s = 0; s < L.count; ++s) {
      const cuda::AdamWSegmentPlan& sp = plan.segments[static_cast<std::size_t>(s)];
      const AdamWTensor& a = tensors[which[sp.tensor]];
      L.seg[s].p = cuda::device_ptr<T>(a.param, "adamw param") + sp.begin;
      L.seg[s].g = cuda::device_ptr<T>(a.grad, "adamw grad") + sp.begin;
      L.seg[s].m = cuda::device_ptr<T>(a.m, "adamw m") + sp.begin;
      L.seg[s].v = cuda::device_ptr<T>(a.v, "adamw v") + sp.begin;
      L.seg[s].n = sp.size;
      L.seg[s].decay = static_cast<T>(cuda::adamw_decay(step.lr, a.weight_decay));
    }
    for (int s = 0; s <= L.count; ++s) L.block_start[s] = plan.block_start[static_cast<std::size_t>(s)];
    adamw_segments<T><<<static_cast<unsigned>(plan.blocks()), cuda::kAdamWThreads, 0, stream>>>(L);
    UPCYCLE_CUDA_CHECK_LAUNCH();
  }
}

// Multi-tensor EMA, planned like AdamW (the same segment table, two pointers per segment).
template <class T>
struct EmaSegment {
  T* avg;
  const T* val;
  std::int64_t n;
};

template <class T>
struct EmaLaunch {
  EmaSegment<T> seg[cuda::kAdamWMaxSegments];
  std::int64_t block_start[cuda::kAdamWMaxSegments + 1];
  int count;
  T m, rest;  // momentum and 1 - momentum, each rounded once from double as on the CPU
};
static_assert(sizeof(EmaLaunch<double>) <= 4000, "EMA launch table exceeds the kernel parameter space");

// CPU twin: ema_tensor in src/backend/cpu/cpu_optim.cpp.
template <class T>
__global__ void __launch_bounds__(cuda::kAdamWThreads) ema_segments(const __grid_constant__ EmaLaunch<T> L) {
  const std::int64_t block = blockIdx.x;
  const int s = cuda::find_segment(L.block_start, L.count, block);
  const EmaSegment<T>& seg = L.seg[s];
  const cuda::ElementRange range = cuda::segment_slice(block, L.block_start[s], seg.n, cuda::kAdamWBlockElems);
  for (std::int64_t i = range.begin + threadIdx.x; i < range.end; i += blockDim.x)
    seg.avg[i] = L.m * seg.avg[i] + L.rest * seg.val[i];
}

template <class T>
void launch_ema(cudaStream_t stream, const std::vector<EmaTensor>& tensors, const std::vector<std::size_t>& which,
                double momentum) {
  if (which.empty()) return;
  std::vector<std::int64_t> sizes;
  sizes.reserve(which.size());
  for (std::size_t i : which) sizes.push_back(tensors[i].average.numel());
  for (const cuda::AdamWLaunchPlan& plan : cuda::plan_adamw(sizes)) {
    EmaLaunch<T> L{};
    L.count = static_cast<int>(plan.segments.size());
    L.m = static_cast<T>(momentum);
    L.rest = static_cast<T>(1.0 - momentum);
    for (int s = 0; s < L.count; ++s) {
      const cuda::AdamWSegmentPlan& sp = plan.segments[static_cast<std::size_t>(s)];
      const EmaTensor& a = tensors[which[sp.tensor]];
      L.seg[s].avg = cuda::device_ptr<T>(a.average, "ema average") + sp.begin;
      L.seg[s].val = cuda::device_ptr<T>(a.value, "ema value") + sp.begin;
      L.seg[s].n = sp.size;
    }
    for (int s = 0; s <= L.count; ++s) L.block_start[s] = plan.block_start[static_cast<std::size_t>(s)];
    ema_segments<T><<<static_cast<unsigned>(plan.blocks()), cuda::kAdamWThreads, 0, stream>>>(L);
    UPCYCLE_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace

// CPU twin: CpuBackend::ema in src/backend/cpu/cpu_optim.cpp.
void CudaBackend::ema(const std::vector<EmaTensor>& tensors, double momentum) {
  std::vector<std::size_t> f32, f64;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const EmaTensor& a = tensors[i];
    check_ema_tensor(a, momentum);
    dispatch_floating(a.average.dtype(), "ema", [&](auto t) {
      using T = decltype(t);
      for (const Tensor* x : {&a.average, &a.value}) cuda::device_ptr<T>(*x, "ema");
      (std::is_same_v<T, float> ? f32 : f64).push_back(i);
    });
  }
  launch_ema<float>(stream(), tensors, f32, momentum);
  launch_ema<double>(stream(), tensors, f64, momentum);
}

// CPU twin: CpuBackend::adamw in src/backend/cpu/cpu_optim.cpp. Every tensor is checked before
// anything is enqueued; f32 and f64 tensors go to separate launches.
void CudaBackend::adamw(const std::vector<AdamWTensor>& tensors, const AdamWStep& step) {
  UPCYCLE_CHECK(step.step >= 1, "adamw: step counts from 1, got ", step.step);
  std::vector<std::size_t> f32, f64;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const AdamWTensor& a = tensors[i];
    check_adamw_tensor(a);
    dispatch_floating(a.param.dtype(), "adamw", [&](auto t) {
      using T = decltype(t);
      for (const Tensor* x : {&a.param, &a.grad, &a.m, &a.v}) cuda::device_ptr<T>(*x, "adamw");
      (std::is_same_v<T, float> ? f32 : f64).push_back(i);
    });
  }
  launch_adamw<float>(stream(), tensors, f32, step);
  launch_adamw<double>(stream(), tensors, f64, step);
}

}  // namespace upcycle
