#pragma once
// The index math of the elementwise kernels (elementwise.cu): which element of each operand an
// output element reads. Plain C++ (no CUDA headers) so that tests/unit/test_cuda_elementwise_math.cpp
// checks it on the CPU; the kernels call these UPCYCLE_HD functions.
#include <cstdint>

#include "upcycle/core/host_device.hpp"

namespace upcycle::cuda {

// The broadcasting rule of Backend::binary as cpu_elementwise.cpp's map2 applies it: operands with
// equal element counts are read elementwise (whatever their shapes); otherwise the smaller one,
// whose shape is a suffix of the larger's, repeats over the leading dims, so that output element
// i reads its element i % period (period = its element count). The same rule, with the mask as
// the repeated operand, serves masked_fill.
enum class Repeat : int { none = 0, a = 1, b = 2 };

struct BinaryBroadcast {
  Repeat repeat = Repeat::none;
  std::int64_t period = 0;  // element count of the repeated operand (> 0 whenever out is non-empty)
};

UPCYCLE_HD inline BinaryBroadcast binary_broadcast(std::int64_t na, std::int64_t nb) {
  BinaryBroadcast r;
  if (na == nb) {
    r.period = na;
  } else if (na < nb) {
    r.repeat = Repeat::a;
    r.period = na;
  } else {
    r.repeat = Repeat::b;
    r.period = nb;
  }
  return r;
}

// The element of a repeated operand of `period` (> 0) elements that output element i reads.
UPCYCLE_HD inline std::int64_t repeat_index(std::int64_t i, std::int64_t period) { return i % period; }

// repeat_index along a grid-stride loop i = first, first + stride, first + 2 stride, ...: one
// division per thread instead of one per element (a 64-bit division costs dozens of instructions
// on the GPU, more than the element's memory traffic). j stays in [0, period): each step adds
// stride % period < period, so one subtraction brings it back. Needs first >= 0, stride > 0,
// period > 0.
struct RepeatCursor {
  std::int64_t period, step, j;
  UPCYCLE_HD RepeatCursor(std::int64_t first, std::int64_t stride, std::int64_t period_)
      : period(period_), step(stride % period_), j(first % period_) {}
  UPCYCLE_HD void advance() {
    j += step;
    if (j >= period) j -= period;
  }
};

}  // namespace upcycle::cuda
