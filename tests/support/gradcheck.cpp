#include "gradcheck.hpp"

#include <cmath>
#include <limits>
#include <sstream>

#include "upcycle/backend/backend.hpp"

namespace upcycle::testing {

namespace {
double project(const Tensor& y, const Tensor& r) {
  const Tensor y64 = y.to(DType::f64);
  const double* py = y64.data<double>();
  const double* pr = r.data<double>();
  double s = 0.0;
  for (std::int64_t i = 0; i < y64.numel(); ++i) s += py[i] * pr[i];
  return s;
}

bool contains(const std::vector<std::size_t>& v, std::size_t x) {
  for (auto e : v)
    if (e == x) return true;
  return false;
}
}  // namespace

Tensor random_tensor(const Shape& shape, std::uint64_t seed, double lo, double hi, DType dtype) {
  Tensor t = Tensor::empty(shape, dtype, Device::cpu);
  backend_for(Device::cpu).uniform(t, seed, 0, lo, hi);
  return t;
}

Tensor randn_tensor(const Shape& shape, std::uint64_t seed, double std, DType dtype) {
  Tensor t = Tensor::empty(shape, dtype, Device::cpu);
  backend_for(Device::cpu).normal(t, seed, 0, 0.0, std);
  return t;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape()) << describe(a) << " vs " << describe(b);
  if (a.shape() != b.shape()) return std::numeric_limits<double>::infinity();
  const Tensor a64 = a.to(Device::cpu).to(DType::f64), b64 = b.to(Device::cpu).to(DType::f64);
  double m = 0.0;
  for (std::int64_t i = 0; i < a64.numel(); ++i) {
    const double d = std::abs(a64.data<double>()[i] - b64.data<double>()[i]);
    // A NaN on either side (or inf - inf) is an infinite difference: std::max would drop it.
    if (std::isnan(d)) return std::numeric_limits<double>::infinity();
    m = std::max(m, d);
  }
  return m;
}

::testing::AssertionResult gradcheck(const OpFn& f, const std::vector<Tensor>& inputs,
                                     const GradcheckOptions& opt, const std::vector<std::size_t>& no_grad) {
  std::vector<Var> leaves;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (!contains(no_grad, i) && inputs[i].dtype() != DType::f64)
      return ::testing::AssertionFailure() << "input " << i << " must be f64, got " << describe(inputs[i]);
    leaves.emplace_back(inputs[i].clone(), !contains(no_grad, i));
  }
  Var y = f(leaves);
  const Tensor r = random_tensor(y.shape(), opt.seed, -1.0, 1.0, DType::f64);
  if (!y.requires_grad()) return ::testing::AssertionFailure() << "output does not require grad";
  y.backward(r.to(y.dtype()));

  std::ostringstream failures;
  int n_fail = 0;
  double worst = 0.0;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (contains(no_grad, i)) continue;
    const Tensor& g = leaves[i].grad();
    if (!g.defined()) return ::testing::AssertionFailure() << "input " << i << " received no gradient";
    if (g.shape() != inputs[i].shape())
      return ::testing::AssertionFailure() << "gradient of input " << i << " has shape " << g.shape().str()
                                           << ", input " << inputs[i].shape().str();
    const Tensor g64 = g.to(DType::f64);
    for (std::int64_t j = 0; j < inputs[i].numel(); ++j) {
      std::vector<Var> probe;
      for (std::size_t q = 0; q < inputs.size(); ++q) probe.emplace_back(inputs[q].clone(), false);
      double* p = probe[i].value().data<double>();
      const double x0 = p[j];
      double fp, fm;
      {
        NoGradGuard ng;
        p[j] = x0 + opt.eps;
        fp = project(f(probe).value(), r);
        p[j] = x0 - opt.eps;
        fm = project(f(probe).value(), r);
      }
      const double numeric = (fp - fm) / (2.0 * opt.eps);
      const double analytic = g64.data<double>()[j];
      const double err = std::abs(analytic - numeric);
      const double bound = opt.atol + opt.rtol * std::abs(numeric);
      // Written so that a NaN (analytic or numeric) fails: every comparison with NaN is false.
      const bool ok = err <= bound;
      worst = ok ? std::max(worst, err / bound) : std::numeric_limits<double>::infinity();
      if (!ok && n_fail++ < 5)
        failures << "\n  input " << i << " element " << j << ": analytic " << analytic << ", numeric " << numeric;
    }
  }
  if (n_fail)
    return ::testing::AssertionFailure() << n_fail << " gradient elements outside atol " << opt.atol << " + rtol "
                                         << opt.rtol << " |numeric|:" << failures.str();
  return ::testing::AssertionSuccess() << "worst error / bound = " << worst;
}

}  // namespace upcycle::testing
