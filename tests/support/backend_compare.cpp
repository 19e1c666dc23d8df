#include "backend_compare.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

#include "upcycle/backend/backend.hpp"
#include "upcycle/core/rng.hpp"

namespace upcycle::testing {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

std::string format_value(double v, DType dtype) {
  char buf[64];
  if (!is_floating(dtype)) std::snprintf(buf, sizeof buf, "%.0f", v);
  else std::snprintf(buf, sizeof buf, dtype == DType::f32 ? "%.9g" : "%.17g", v);
  return buf;
}

std::string format_number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

// Integer tensors as int64 (exact for every i32 / i64 value).
std::vector<std::int64_t> int_values(const Tensor& t) {
  const Tensor h = copy_to(t, Device::cpu);
  if (h.dtype() == DType::i64) return h.to_vector<std::int64_t>();
  const std::vector<std::int32_t> v = h.to_vector<std::int32_t>();
  return std::vector<std::int64_t>(v.begin(), v.end());
}

}  // namespace

double eps_of(DType dtype) {
  switch (dtype) {
    case DType::f32: return 1.1920928955078125e-07;  // 2^-23
    case DType::f64: return 2.220446049250313e-16;   // 2^-52
    default: UPCYCLE_THROW("eps_of: ", dtype_name(dtype), " is not a floating dtype the backends compute in");
  }
}

Tensor host_uniform(const Shape& shape, DType dtype, std::uint64_t seed, double lo, double hi) {
  if (is_floating(dtype)) {
    Tensor t = Tensor::empty(shape, dtype, Device::cpu);
    backend_for(Device::cpu).uniform(t, seed, 0, lo, hi);
    return t;
  }
  Tensor d = host_uniform(shape, DType::f64, seed, lo, hi);
  double* p = d.data<double>();
  for (std::int64_t i = 0; i < d.numel(); ++i) p[i] = std::floor(p[i]);
  return d.to(dtype);
}

Tensor host_normal(const Shape& shape, DType dtype, std::uint64_t seed, double mean, double std) {
  Tensor t = Tensor::empty(shape, dtype, Device::cpu);
  backend_for(Device::cpu).normal(t, seed, 0, mean, std);
  return t;
}

Tensor host_ints(const Shape& shape, DType dtype, std::uint64_t seed, std::int64_t lo, std::int64_t hi) {
  UPCYCLE_CHECK(hi > lo, "host_ints: empty range [", lo, ", ", hi, ")");
  const auto range = static_cast<std::uint64_t>(hi) - static_cast<std::uint64_t>(lo);
  std::vector<std::int64_t> v(static_cast<std::size_t>(shape.numel()));
  for (std::size_t i = 0; i < v.size(); ++i) {
    const std::uint64_t w = (static_cast<std::uint64_t>(Philox4x32::word(seed, 2 * i)) << 32) |
                            Philox4x32::word(seed, 2 * i + 1);
    v[i] = static_cast<std::int64_t>(static_cast<std::uint64_t>(lo) + w % range);
  }
  if (dtype == DType::i64) return Tensor::from_vector(v, shape, Device::cpu);
  std::vector<double> d(v.begin(), v.end());
  return host_values(d, shape, dtype);
}

Tensor host_values(const std::vector<double>& values, const Shape& shape, DType dtype) {
  switch (dtype) {
    case DType::f64: return Tensor::from_vector(values, shape, Device::cpu);
    case DType::f32: return Tensor::from_vector(std::vector<float>(values.begin(), values.end()), shape, Device::cpu);
    case DType::i32: {
      std::vector<std::int32_t> v;
      for (double x : values) v.push_back(static_cast<std::int32_t>(x));
      return Tensor::from_vector(v, shape, Device::cpu);
    }
    case DType::i64: {
      std::vector<std::int64_t> v;
      for (double x : values) v.push_back(static_cast<std::int64_t>(x));
      return Tensor::from_vector(v, shape, Device::cpu);
    }
    default: UPCYCLE_THROW("host_values: unsupported dtype ", dtype_name(dtype));
  }
}

Tensor host_sentinel(const Shape& shape, DType dtype) {
  const double v = is_floating(dtype) ? std::numeric_limits<double>::quiet_NaN() : -777.0;
  return host_values(std::vector<double>(static_cast<std::size_t>(shape.numel()), v), shape, dtype);
}

Tensor copy_to(const Tensor& t, Device device) {
  if (!t.defined()) return Tensor();
  Tensor out = Tensor::empty(t.shape(), t.dtype(), device);
  out.copy_from(t);
  return out;
}

std::vector<double> values_of(const Tensor& t) {
  const Tensor h = copy_to(t, Device::cpu);
  switch (h.dtype()) {
    case DType::f64: return h.to_vector<double>();
    case DType::f32: {
      const std::vector<float> v = h.to_vector<float>();
      return std::vector<double>(v.begin(), v.end());
    }
    default: {
      const std::vector<std::int64_t> v = int_values(h);
      return std::vector<double>(v.begin(), v.end());
    }
  }
}

Tolerance exact_match() {
  Tolerance t;
  t.exact = true;
  return t;
}

Tolerance rounded_tol(DType dtype) {
  Tolerance t;
  t.rtol = t.mtol = 2.0 * eps_of(dtype);
  return t;
}

double transcendental_rel(DType dtype) { return dtype == DType::f32 ? 4e-6 : 1e-14; }

Tolerance transcendental_tol(DType dtype) {
  Tolerance t;
  t.atol = t.rtol = t.mtol = transcendental_rel(dtype);
  return t;
}

double reduction_rel(DType dtype) { return dtype == DType::f32 ? 1e-5 : 1e-12; }

Tolerance reduction_tol(DType dtype) {
  Tolerance t;
  t.rtol = t.mtol = reduction_rel(dtype);
  return t;
}

Tolerance gemm_tol(DType dtype, std::int64_t k) {
  Tolerance t;
  t.rtol = 2.0 * eps_of(dtype);
  t.mtol = (2.0 * std::sqrt(static_cast<double>(std::max<std::int64_t>(k, 0))) + 4.0) * eps_of(dtype);
  return t;
}

std::string index_string(const Shape& shape, std::int64_t i) {
  if (shape.ndim() == 0) return "[" + std::to_string(i) + "]";
  std::vector<std::int64_t> c(static_cast<std::size_t>(shape.ndim()));
  for (int d = shape.ndim() - 1; d >= 0; --d) {
    const std::int64_t n = std::max<std::int64_t>(shape[d], 1);
    c[static_cast<std::size_t>(d)] = i % n;
    i /= n;
  }
  std::string s = "[";
  for (std::size_t d = 0; d < c.size(); ++d) s += (d ? ", " : "") + std::to_string(c[d]);
  return s + "]";
}

Comparison compare_tensors(const Tensor& got, const Tensor& ref, const Tolerance& tol, const Tensor& magnitude,
                           std::int64_t count) {
  Comparison c;
  auto fail = [&c](const std::string& why) {
    c.ok = false;
    c.message = why;
    return c;
  };
  if (!got.defined() || !ref.defined())
    return fail(std::string(got.defined() ? "" : "result undefined") + (ref.defined() ? "" : " reference undefined"));
  if (got.shape() != ref.shape()) return fail("shape " + got.shape().str() + ", expected " + ref.shape().str());
  if (got.dtype() != ref.dtype())
    return fail(std::string("dtype ") + dtype_name(got.dtype()) + ", expected " + dtype_name(ref.dtype()));
  if (magnitude.defined() && magnitude.numel() != ref.numel())
    return fail("harness error: magnitude " + describe(magnitude) + " for " + describe(ref));
  const std::int64_t n = count < 0 ? ref.numel() : std::min(count, ref.numel());
  c.compared = n;
  const DType dt = ref.dtype();

  if (!is_floating(dt)) {
    const std::vector<std::int64_t> a = int_values(got), b = int_values(ref);
    for (std::int64_t i = 0; i < n; ++i) {
      const auto k = static_cast<std::size_t>(i);
      if (a[k] == b[k]) continue;
      if (c.bad++ == 0) {
        c.worst = i;
        c.got = static_cast<double>(a[k]);
        c.ref = static_cast<double>(b[k]);
      }
    }
    if (c.bad == 0) return c;
    std::ostringstream m;
    m << c.bad << " of " << n << " elements differ (exact match required); first at "
      << index_string(ref.shape(), c.worst) << ": got " << a[static_cast<std::size_t>(c.worst)] << ", expected "
      << b[static_cast<std::size_t>(c.worst)];
    return fail(m.str());
  }

  const std::vector<double> a = values_of(got), b = values_of(ref);
  const std::vector<double> mag = magnitude.defined() ? values_of(magnitude) : std::vector<double>();
  double worst_excess = -1.0;
  for (std::int64_t i = 0; i < n; ++i) {
    const auto k = static_cast<std::size_t>(i);
    const double x = a[k], y = b[k];
    bool ok;
    double bound = 0.0, excess = kInf;
    if (std::isnan(x) || std::isnan(y)) {
      ok = std::isnan(x) && std::isnan(y) && tol.nan_ok;
    } else if (std::isinf(x) || std::isinf(y)) {
      ok = x == y;
    } else if (tol.exact) {
      ok = x == y && std::signbit(x) == std::signbit(y);
    } else {
      bound = tol.atol + tol.rtol * std::abs(y) + (mag.empty() ? 0.0 : tol.mtol * mag[k]);
      if (!std::isfinite(bound)) bound = 0.0;  // never let an overflowed bound pass anything
      const double d = std::abs(x - y);
      ok = d <= bound;
      if (bound > 0.0) excess = d / bound;
    }
    if (ok) continue;
    ++c.bad;
    if (excess > worst_excess) {
      worst_excess = excess;
      c.worst = i;
      c.got = x;
      c.ref = y;
      c.bound = bound;
    }
  }
  if (c.bad == 0) return c;
  std::ostringstream m;
  m << c.bad << " of " << n << " elements outside ";
  if (tol.exact) m << "exact match";
  else
    m << "|got - ref| <= " << format_number(tol.atol) << " + " << format_number(tol.rtol) << " |ref|"
      << (mag.empty() ? "" : " + " + format_number(tol.mtol) + " mag");
  m << "; worst at " << index_string(ref.shape(), c.worst) << " (flat " << c.worst << "): got "
    << format_value(c.got, dt) << ", ref " << format_value(c.ref, dt);
  if (std::isfinite(c.got) && std::isfinite(c.ref) && !tol.exact)
    m << ", |diff| " << format_number(std::abs(c.got - c.ref)) << " > bound " << format_number(c.bound);
  return fail(m.str());
}

}  // namespace upcycle::testing
