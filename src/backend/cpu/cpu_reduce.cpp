// Reductions over the middle axis of [outer, axis, inner]. Accumulation is in double for f32 so
// that sums over long axes (losses, gradient norms) keep their precision.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/checks_reduce.hpp"
#include "cpu_backend.hpp"
#include "cpu_parallel.hpp"

namespace upcycle {

namespace {
// Chunks of the axis for sums with few outer rows (see reduce_typed).
constexpr std::int64_t kAxisChunks = 16;

template <class T>
void reduce_typed(ReduceOp op, const Tensor& x, Tensor& out, std::int64_t outer, std::int64_t axis,
                  std::int64_t inner) {
  const T* px = x.data<T>();
  T* po = out.data<T>();
  const double scale = op == ReduceOp::mean && axis > 0 ? 1.0 / static_cast<double>(axis) : 1.0;
  if (inner == 1) {
    const std::int64_t grain = (16384 + axis - 1) / std::max<std::int64_t>(axis, 1);
    cpu::parallel_for(outer, grain, [&](std::int64_t o_begin, std::int64_t o_end) {
      for (std::int64_t o = o_begin; o < o_end; ++o) {
        const T* row = px + o * axis;
        if (op == ReduceOp::max) {
          T m = axis > 0 ? row[0] : -std::numeric_limits<T>::infinity();
          for (std::int64_t a = 1; a < axis; ++a) m = row[a] > m ? row[a] : m;
          po[o] = m;
        } else {
          double s = 0.0;
#pragma omp simd reduction(+ : s)
          for (std::int64_t a = 0; a < axis; ++a) s += static_cast<double>(row[a]);
          po[o] = static_cast<T>(s * scale);
        }
      }
    });
    return;
  }
  // Sums over a long axis with few outer rows (a bias gradient: [1, rows, out]): the axis is cut
  // into a fixed number of chunks (not one per thread, so the result does not depend on the thread
  // count), each summed into its own double row, and the rows are added in chunk order.
  if (op != ReduceOp::max && outer < kAxisChunks && axis >= 4 * kAxisChunks) {
    const std::int64_t chunks = kAxisChunks, tasks = outer * chunks;
    std::vector<double> acc(static_cast<std::size_t>(tasks * inner));
    const std::int64_t grain = std::max<std::int64_t>(1, 16384 * chunks / std::max<std::int64_t>(1, axis * inner));
    cpu::parallel_for(tasks, grain, [&](std::int64_t t_begin, std::int64_t t_end) {
      for (std::int64_t t = t_begin; t < t_end; ++t) {
        const std::int64_t o = t / chunks, c = t % chunks;
        double* a = acc.data() + t * inner;
        for (std::int64_t i = 0; i < inner; ++i) a[i] = 0.0;
        const T* base = px + o * axis * inner;
        for (std::int64_t r = c * axis / chunks; r < (c + 1) * axis / chunks; ++r) {
          const T* row = base + r * inner;
#pragma omp simd
          for (std::int64_t i = 0; i < inner; ++i) a[i] += static_cast<double>(row[i]);
        }
      }
    });
    for (std::int64_t o = 0; o < outer; ++o)
      for (std::int64_t i = 0; i < inner; ++i) {
        double sum = 0.0;
        for (std::int64_t c = 0; c < chunks; ++c) sum += acc[static_cast<std::size_t>((o * chunks + c) * inner + i)];
        po[o * inner + i] = static_cast<T>(sum * scale);
      }
    return;
  }
  cpu::parallel_for(outer, (16384 + axis * inner - 1) / std::max<std::int64_t>(1, axis * inner),
                    [&](std::int64_t o_begin, std::int64_t o_end) {
    std::vector<double> acc(static_cast<std::size_t>(inner));
    for (std::int64_t o = o_begin; o < o_end; ++o) {
      const T* base = px + o * axis * inner;
      T* dst = po + o * inner;
      if (op == ReduceOp::max) {
        for (std::int64_t i = 0; i < inner; ++i) dst[i] = -std::numeric_limits<T>::infinity();
        for (std::int64_t a = 0; a < axis; ++a)
          for (std::int64_t i = 0; i < inner; ++i) dst[i] = base[a * inner + i] > dst[i] ? base[a * inner + i] : dst[i];
        continue;
      }
      std::fill(acc.begin(), acc.end(), 0.0);
      for (std::int64_t a = 0; a < axis; ++a) {
        const T* r = base + a * inner;
#pragma omp simd
        for (std::int64_t i = 0; i < inner; ++i) acc[static_cast<std::size_t>(i)] += static_cast<double>(r[i]);
      }
      for (std::int64_t i = 0; i < inner; ++i) dst[i] = static_cast<T>(acc[static_cast<std::size_t>(i)] * scale);
    }
  });
}
}  // namespace

void CpuBackend::reduce(ReduceOp op, const Tensor& x, Tensor& out, std::int64_t outer, std::int64_t axis,
                        std::int64_t inner) {
  check_reduce_args(x, out, outer, axis, inner);
  dispatch_floating(x.dtype(), "reduce", [&](auto t) { reduce_typed<decltype(t)>(op, x, out, outer, axis, inner); });
}

void CpuBackend::expand_axis(const Tensor& x, Tensor& out, std::int64_t outer, std::int64_t axis,
                             std::int64_t inner, double alpha) {
  check_expand_axis_args(x, out, outer, axis, inner);
  dispatch_floating(x.dtype(), "expand_axis", [&](auto t) {
    using T = decltype(t);
    const T* px = x.data<T>();
    T* po = out.data<T>();
    const T a = static_cast<T>(alpha);
    // One task per output row (o, j).
    cpu::parallel_for(outer * axis, (16384 + inner - 1) / std::max<std::int64_t>(1, inner),
                      [&](std::int64_t t0, std::int64_t t1) {
      for (std::int64_t t = t0; t < t1; ++t) {
        const T* src = px + (t / axis) * inner;
        T* dst = po + t * inner;
#pragma omp simd
        for (std::int64_t i = 0; i < inner; ++i) dst[i] = a * src[i];
      }
    });
  });
}

void CpuBackend::sum_squares(const std::vector<Tensor>& xs, Tensor& out) {
  check_sum_squares_output(out);
  double total = 0.0;
  for (const Tensor& x : xs) {
    dispatch_floating(x.dtype(), "sum_squares", [&](auto t) {
      using T = decltype(t);
      const T* px = x.data<T>();
      const std::int64_t n = x.numel();
      // Fixed blocks of kBlock elements summed in block order: the result does not depend on the
      // thread count.
      constexpr std::int64_t kBlock = 16384;
      const std::int64_t blocks = (n + kBlock - 1) / kBlock;
      std::vector<double> partial(static_cast<std::size_t>(blocks));
      cpu::parallel_for(blocks, 2, [&](std::int64_t b0, std::int64_t b1) {
        for (std::int64_t b = b0; b < b1; ++b) {
          double s = 0.0;
          const std::int64_t e = std::min(n, (b + 1) * kBlock);
#pragma omp simd reduction(+ : s)
          for (std::int64_t i = b * kBlock; i < e; ++i) s += static_cast<double>(px[i]) * static_cast<double>(px[i]);
          partial[static_cast<std::size_t>(b)] = s;
        }
      });
      for (double v : partial) total += v;
    });
  }
  out.data<double>()[0] = total;
}

}  // namespace upcycle
