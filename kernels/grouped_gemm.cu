// CudaBackend::grouped_gemm: the per-expert products of an MoE layer in one cuBLAS call.
// CPU twin: CpuBackend::grouped_gemm in src/backend/cpu/cpu_gemm.cpp (the groups one after the
// other through gemm()).
//
// Why this scheme: the experts' products differ in m (the tokens each expert received), so a
// strided batch would need every expert padded to the largest count (wasted flops and memory, and
// a copy into and out of the padded layout), and one cublasGemmEx per expert would cost a launch
// and a cuBLAS dispatch each. cublasGemmGroupedBatchedEx (f32) / cublasDgemmGroupedBatched (f64)
// take one problem per group with its own m, n, k: one call for all experts, no padding. The
// sizes are host arrays, which the host already has (the caller sized the row blocks from the
// counts moe_dispatch brought to the host). Only the operand pointer arrays must be in device
// memory: a tiny kernel writes them into workspace() from its launch arguments (the pointers
// travel by value), so there is no host-to-device copy, no pinned staging and no wait.
//
// As on the CPU: a group with m == 0 or n == 0 does nothing; one with k == 0 sets C = beta C
// (zeros when beta == 0, without reading C) and is not given to cuBLAS (which would leave C as it
// is). Scalars are host values of the compute type (f32 or f64, TF32 only when allow_tf32()).
#include <climits>
#include <type_traits>
#include <vector>

#include "backend/kernel_checks.hpp"
#include "cuda_common.cuh"
#include "gemm_math.hpp"

namespace upcycle {

namespace {

// Pointers per launch of write_pointer_arrays_kernel: 3 x 128 x 8 bytes of arguments, inside the
// classic 4 KB kernel-parameter limit.
constexpr int kPointerChunk = 128;

struct PointerChunk {
  const void* first[kPointerChunk];
  const void* second[kPointerChunk];
  void* c[kPointerChunk];
};

// No CPU twin (the CPU's BLAS takes host pointers): copies the operand pointers of up to
// kPointerChunk problems from the launch arguments into cuBLAS's device pointer arrays.
__global__ void write_pointer_arrays_kernel(const PointerChunk chunk, int count, const void** first,
                                            const void** second, void** c) {
  const int i = static_cast<int>(threadIdx.x);
  if (i < count) {
    first[i] = chunk.first[i];
    second[i] = chunk.second[i];
    c[i] = chunk.c[i];
  }
}

// Groups with k == 0 and beta != 0 per launch of scale_groups_kernel (64 x 16 bytes of arguments).
constexpr int kScaleChunk = 64;

template <class T>
struct ScaleChunk {
  T* c[kScaleChunk];
  std::int64_t n[kScaleChunk];
};

// CPU twin: CpuBackend::affine (cpu_elementwise.cpp), which the CPU's gemm() calls for k == 0:
// C = beta C + 0 with the same formula, so that -0 becomes +0 there as here. blockIdx.y picks the
// group.
template <class T>
__global__ void scale_groups_kernel(const ScaleChunk<T> chunk, int count, T beta) {
  const int g = static_cast<int>(blockIdx.y);
  if (g >= count) return;
  T* c = chunk.c[g];
  const std::int64_t n = chunk.n[g];
  const T zero = T(0);
  for (std::int64_t i = cuda::grid_first(); i < n; i += cuda::grid_stride()) c[i] = beta * c[i] + zero;
}

int as_int(std::int64_t v, const char* what) {
  UPCYCLE_CHECK(v <= INT_MAX, "grouped_gemm: ", what, " ", v, " exceeds the int range of cuBLAS");
  return static_cast<int>(v);
}

// One product of a group in cuBLAS's terms.
struct Problem {
  cuda::ColMajorGemm g;
  const void* first;
  const void* second;
  void* c;
};

}  // namespace

// CPU twin: CpuBackend::grouped_gemm in src/backend/cpu/cpu_gemm.cpp.
void CudaBackend::grouped_gemm(bool trans_a, bool trans_b, double alpha, double beta,
                               const std::vector<GemmGroup>& groups) {
  for (std::size_t i = 0; i < groups.size(); ++i) check_gemm_group(groups[i], i);

  // Everything is checked (dtypes, devices, int ranges) before anything is enqueued.
  std::vector<Problem> f32, f64;
  std::vector<std::size_t> zero_k;
  for (std::size_t i = 0; i < groups.size(); ++i) {
    const GemmGroup& gr = groups[i];
    if (gr.m == 0 || gr.n == 0) continue;
    if (gr.k == 0) {
      UPCYCLE_CHECK(gr.c.device() == Device::cuda, "grouped_gemm: group ", i, ": C ", describe(gr.c),
                    " is not a cuda tensor");
      // beta == 0 fills any dtype with zeros (as the CPU's fill does); scaling needs a float.
      if (beta != 0.0) dispatch_floating(gr.c.dtype(), "affine", [](auto) {});
      zero_k.push_back(i);
      continue;
    }
    Problem p;
    p.g = cuda::col_major_gemm(trans_a, trans_b, gr.m, gr.n, gr.k);
    for (std::int64_t v : {p.g.m, p.g.n, p.g.k, p.g.ld_first, p.g.ld_second, p.g.ldc}) as_int(v, "size");
    dispatch_floating(gr.c.dtype(), "gemm", [&](auto t) {
      using T = decltype(t);
      const T* a = cuda::device_ptr<T>(gr.a, "grouped_gemm A");
      const T* b = cuda::device_ptr<T>(gr.b, "grouped_gemm B");
      p.first = cuda::first_operand(a, b);
      p.second = cuda::second_operand(a, b);
      p.c = cuda::device_ptr<T>(gr.c, "grouped_gemm C");
    });
    (gr.c.dtype() == DType::f32 ? f32 : f64).push_back(p);
  }
  as_int(static_cast<std::int64_t>(f32.size() > f64.size() ? f32.size() : f64.size()), "group count");

  // k == 0: C = beta C.
  if (beta == 0.0) {
    for (std::size_t i : zero_k) {
      const GemmGroup& gr = groups[i];
      const std::size_t bytes = static_cast<std::size_t>(gr.m * gr.n) * dtype_size(gr.c.dtype());
      UPCYCLE_CUDA_CHECK(cudaMemsetAsync(gr.c.raw(), 0, bytes, stream_));
    }
  } else {
    auto scale = [&](auto t) {
      using T = decltype(t);
      ScaleChunk<T> chunk{};
      int count = 0;
      std::int64_t longest = 0;
      auto flush = [&] {
        if (count == 0) return;
        const dim3 grid(cuda::grid_blocks(longest), static_cast<unsigned>(count));
        scale_groups_kernel<T><<<grid, cuda::kBlockThreads, 0, stream_>>>(chunk, count, static_cast<T>(beta));
        UPCYCLE_CUDA_CHECK_LAUNCH();
        count = 0;
        longest = 0;
      };
      for (std::size_t i : zero_k) {
        const GemmGroup& gr = groups[i];
        if (gr.c.dtype() != dtype_of<T>::value) continue;
        chunk.c[count] = cuda::device_ptr<T>(gr.c, "grouped_gemm C");
        chunk.n[count] = gr.m * gr.n;
        if (chunk.n[count] > longest) longest = chunk.n[count];
        if (++count == kScaleChunk) flush();
      }
      flush();
    };
    scale(float{});
    scale(double{});
  }

  // The products of one dtype: pointer arrays into workspace(), then one cuBLAS call.
  auto run = [&](const std::vector<Problem>& problems, auto t) {
    using T = decltype(t);
    if (problems.empty()) return;
    const int count = static_cast<int>(problems.size());
    void** arrays = static_cast<void**>(workspace(3 * problems.size() * sizeof(void*)));
    const void** first = const_cast<const void**>(arrays);
    const void** second = const_cast<const void**>(arrays + count);
    void** c = arrays + 2 * count;
    for (int off = 0; off < count; off += kPointerChunk) {
      PointerChunk chunk{};
      const int n = count - off < kPointerChunk ? count - off : kPointerChunk;
      for (int i = 0; i < n; ++i) {
        const Problem& p = problems[static_cast<std::size_t>(off + i)];
        chunk.first[i] = p.first;
        chunk.second[i] = p.second;
        chunk.c[i] = p.c;
      }
      write_pointer_arrays_kernel<<<1, kPointerChunk, 0, stream_>>>(chunk, n, first + off, second + off, c + off);
      UPCYCLE_CUDA_CHECK_LAUNCH();
    }
    // Host arrays, one entry per group (each group is one problem). cuBLAS reads them, and the
    // scalars (host pointer mode), before the call returns.
    const auto n_groups = problems.size();
    std::vector<cublasOperation_t> op_first(n_groups, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N);
    std::vector<cublasOperation_t> op_second(n_groups, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N);
    std::vector<int> m(n_groups), n(n_groups), k(n_groups), ld_first(n_groups), ld_second(n_groups), ldc(n_groups);
    std::vector<int> group_size(n_groups, 1);
    for (std::size_t i = 0; i < n_groups; ++i) {
      const cuda::ColMajorGemm& g = problems[i].g;
      m[i] = static_cast<int>(g.m);
      n[i] = static_cast<int>(g.n);
      k[i] = static_cast<int>(g.k);
      ld_first[i] = static_cast<int>(g.ld_first);
      ld_second[i] = static_cast<int>(g.ld_second);
      ldc[i] = static_cast<int>(g.ldc);
    }
    const std::vector<T> alphas(n_groups, static_cast<T>(alpha)), betas(n_groups, static_cast<T>(beta));
    constexpr cudaDataType_t type = std::is_same_v<T, float> ? CUDA_R_32F : CUDA_R_64F;
    const cublasComputeType_t compute = std::is_same_v<T, double> ? CUBLAS_COMPUTE_64F
                                        : allow_tf32_                ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                                     : CUBLAS_COMPUTE_32F;
    cublasStatus_t status;
    if constexpr (std::is_same_v<T, float>) {
      status = cublasGemmGroupedBatchedEx(cublas_, op_first.data(), op_second.data(), m.data(), n.data(), k.data(),
                                          alphas.data(), first, type, ld_first.data(), second, type, ld_second.data(),
                                          betas.data(), c, type, ldc.data(), count, group_size.data(), compute);
    } else {
      status = cublasDgemmGroupedBatched(cublas_, op_first.data(), op_second.data(), m.data(), n.data(), k.data(),
                                         alphas.data(), reinterpret_cast<const double* const*>(first), ld_first.data(),
                                         reinterpret_cast<const double* const*>(second), ld_second.data(),
                                         betas.data(), reinterpret_cast<double* const*>(c), ldc.data(), count,
                                         group_size.data());
    }
    if (status != CUBLAS_STATUS_NOT_SUPPORTED) {
      UPCYCLE_CUBLAS_CHECK(status);
      return;
    }
    // A cuBLAS that refuses this grouped configuration (refused before anything is launched): the
    // same products one call each, with the same arguments.
    const T a_scalar = static_cast<T>(alpha), b_scalar = static_cast<T>(beta);
    for (std::size_t i = 0; i < n_groups; ++i) {
      const Problem& p = problems[i];
      UPCYCLE_CUBLAS_CHECK(cublasGemmEx(cublas_, op_first[i], op_second[i], m[i], n[i], k[i], &a_scalar, p.first, type,
                                        ld_first[i], p.second, type, ld_second[i], &b_scalar, p.c, type, ldc[i],
                                        compute, CUBLAS_GEMM_DEFAULT));
    }
  };
  run(f32, float{});
  run(f64, double{});
}

}  // namespace upcycle
