#include "tensor_stats.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "upcycle/core/error.hpp"

namespace upcycle::inspect {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Calls f(const T* values, std::size_t count) with the tensor's elements in their stored type.
template <class F>
void with_values(const Tensor& t, F&& f) {
  const auto n = static_cast<std::size_t>(t.numel());
  switch (t.dtype()) {
    case DType::f32: f(t.data<float>(), n); return;
    case DType::f64: f(t.data<double>(), n); return;
    case DType::i32: f(t.data<std::int32_t>(), n); return;
    case DType::i64: f(t.data<std::int64_t>(), n); return;
    default: UPCYCLE_THROW("upcycle_inspect: cannot read elements of dtype ", dtype_name(t.dtype()));
  }
}

std::size_t row_length(const Tensor& t, std::size_t rows) {
  UPCYCLE_CHECK(t.ndim() >= 1 && static_cast<std::size_t>(t.dim(0)) == rows, "expected ", rows,
                " rows in dim 0, got ", describe(t));
  return rows == 0 ? 0 : static_cast<std::size_t>(t.numel()) / rows;
}

}  // namespace

double TensorStats::norm() const { return std::sqrt(sum_sq); }

TensorStats tensor_stats(const Tensor& t) {
  TensorStats s;
  s.numel = t.numel();
  with_values(t, [&](const auto* v, std::size_t n) {
    double sum = 0.0, lo = std::numeric_limits<double>::infinity(), hi = -lo;
    std::int64_t finite = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const double x = static_cast<double>(v[i]);
      if (std::isnan(x)) {
        ++s.nan;
      } else if (std::isinf(x)) {
        ++s.inf;
      } else {
        ++finite;
        sum += x;
        s.sum_sq += x * x;
        lo = std::min(lo, x);
        hi = std::max(hi, x);
      }
    }
    if (finite == 0) {
      s.mean = s.std = s.min = s.max = kNaN;
      return;
    }
    s.mean = sum / static_cast<double>(finite);
    s.min = lo;
    s.max = hi;
    // Second pass about the mean: no cancellation for tensors whose spread is small next to their
    // mean (layer-norm gains near 1).
    double dev = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
      const double x = static_cast<double>(v[i]);
      if (std::isfinite(x)) dev += (x - s.mean) * (x - s.mean);
    }
    s.std = std::sqrt(dev / static_cast<double>(finite));
  });
  return s;
}

void add_row_sum_sq(const Tensor& t, std::vector<double>& sum_sq) {
  const std::size_t rows = sum_sq.size(), len = row_length(t, rows);
  with_values(t, [&](const auto* v, std::size_t) {
    for (std::size_t r = 0; r < rows; ++r) {
      double s = 0.0;
      for (std::size_t i = 0; i < len; ++i) {
        const double x = static_cast<double>(v[r * len + i]);
        s += x * x;
      }
      sum_sq[r] += s;
    }
  });
}

void add_row_gram(const Tensor& t, std::vector<double>& gram) {
  const auto rows = static_cast<std::size_t>(std::llround(std::sqrt(static_cast<double>(gram.size()))));
  UPCYCLE_CHECK(rows * rows == gram.size(), "add_row_gram: the Gram matrix has ", gram.size(), " entries");
  const std::size_t len = row_length(t, rows);
  with_values(t, [&](const auto* v, std::size_t) {
    for (std::size_t i = 0; i < rows; ++i)
      for (std::size_t j = i; j < rows; ++j) {
        double s = 0.0;
        for (std::size_t k = 0; k < len; ++k)
          s += static_cast<double>(v[i * len + k]) * static_cast<double>(v[j * len + k]);
        gram[i * rows + j] += s;
        if (j != i) gram[j * rows + i] += s;
      }
  });
}

DiffStats diff_stats(const Tensor& a, const Tensor& b, std::vector<double>* row_diff_sq,
                     std::vector<double>* row_b_sq) {
  UPCYCLE_CHECK(a.shape() == b.shape(), "diff_stats: shapes differ: ", describe(a), " and ", describe(b));
  DiffStats d;
  d.numel = a.numel();
  const std::size_t rows = row_diff_sq ? row_diff_sq->size() : 1;
  const std::size_t len = row_diff_sq ? row_length(a, rows) : static_cast<std::size_t>(a.numel());
  UPCYCLE_CHECK(!row_b_sq || row_b_sq->size() == rows, "diff_stats: row sums of different sizes");
  with_values(a, [&](const auto* va, std::size_t) {
    with_values(b, [&](const auto* vb, std::size_t) {
      for (std::size_t r = 0; r < rows; ++r) {
        double dsq = 0.0, bsq = 0.0;
        for (std::size_t i = r * len; i < (r + 1) * len; ++i) {
          const double x = static_cast<double>(va[i]), y = static_cast<double>(vb[i]);
          if (!std::isfinite(x) || !std::isfinite(y)) {
            ++d.nonfinite;
            continue;
          }
          const double diff = x - y;
          d.max_abs = std::max(d.max_abs, std::abs(diff));
          dsq += diff * diff;
          bsq += y * y;
        }
        d.diff_sq += dsq;
        d.b_sq += bsq;
        if (row_diff_sq) (*row_diff_sq)[r] += dsq;
        if (row_b_sq) (*row_b_sq)[r] += bsq;
      }
    });
  });
  return d;
}

double relative_norm(double diff_sq, double b_sq) {
  if (diff_sq == 0.0) return 0.0;
  if (b_sq == 0.0) return std::numeric_limits<double>::infinity();
  return std::sqrt(diff_sq / b_sq);
}

std::vector<double> to_doubles(const Tensor& t) {
  std::vector<double> out;
  with_values(t, [&](const auto* v, std::size_t n) {
    out.reserve(n);
    for (std::size_t i = 0; i < n; ++i) out.push_back(static_cast<double>(v[i]));
  });
  return out;
}

}  // namespace upcycle::inspect
