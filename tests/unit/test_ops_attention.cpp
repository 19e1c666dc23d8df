// scaled_dot_product_attention against a plain-loop attention, with gradients by finite
// differences, for causal and non-causal masks and T != S.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "gradcheck.hpp"
#include "upcycle/ops/attention.hpp"

namespace upcycle {
namespace {

using testing::gradcheck;
using testing::max_abs_diff;
using testing::randn_tensor;

struct Dims {
  std::int64_t b, h, t, s, dh;
  bool causal;
};

// out[b, h, i] = sum_j softmax_j(q_i . k_j / sqrt(Dh), keys j > i + S - T removed) v_j, in double.
Tensor naive_attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal) {
  const std::vector<double> qv = q.to(DType::f64).to_vector<double>(), kv = k.to(DType::f64).to_vector<double>(),
                            vv = v.to(DType::f64).to_vector<double>();
  const std::int64_t heads = q.dim(0) * q.dim(1), t = q.dim(2), s = k.dim(2), dh = q.dim(3);
  std::vector<double> out(qv.size(), 0.0), w(s);
  for (std::int64_t n = 0; n < heads; ++n)
    for (std::int64_t i = 0; i < t; ++i) {
      const std::int64_t last = causal ? i + s - t : s - 1;  // last visible key
      double m = -1e300, z = 0.0;
      for (std::int64_t j = 0; j <= last; ++j) {
        double dot = 0.0;
        for (std::int64_t d = 0; d < dh; ++d) dot += qv[(n * t + i) * dh + d] * kv[(n * s + j) * dh + d];
        w[j] = dot / std::sqrt(static_cast<double>(dh));
        m = std::max(m, w[j]);
      }
      for (std::int64_t j = 0; j <= last; ++j) z += w[j] = std::exp(w[j] - m);
      for (std::int64_t j = 0; j <= last; ++j)
        for (std::int64_t d = 0; d < dh; ++d) out[(n * t + i) * dh + d] += w[j] / z * vv[(n * s + j) * dh + d];
    }
  return Tensor::from_vector(out, q.shape(), Device::cpu);
}

// Non-causal with T < S and T > S, causal with T == S and with S > T (queries aligned to the last
// keys, as in decoding with a cache).
const std::vector<Dims> kCases = {
    {2, 2, 3, 5, 4, false}, {1, 2, 5, 3, 4, false}, {2, 2, 4, 4, 4, true}, {2, 1, 3, 5, 4, true}};

std::string name(const Dims& d) {
  return "T " + std::to_string(d.t) + " S " + std::to_string(d.s) + (d.causal ? " causal" : "");
}

std::vector<Tensor> inputs(const Dims& d, std::uint64_t seed) {
  return {randn_tensor({d.b, d.h, d.t, d.dh}, seed), randn_tensor({d.b, d.h, d.s, d.dh}, seed + 1),
          randn_tensor({d.b, d.h, d.s, d.dh}, seed + 2)};
}

TEST(Attention, ForwardMatchesNaiveLoops) {
  std::uint64_t seed = 1;
  for (const Dims& d : kCases) {
    const std::vector<Tensor> in = inputs(d, seed += 3);
    const Tensor out = scaled_dot_product_attention(Var(in[0]), Var(in[1]), Var(in[2]), d.causal).value();
    EXPECT_EQ(out.shape(), in[0].shape()) << name(d);
    EXPECT_LT(max_abs_diff(out, naive_attention(in[0], in[1], in[2], d.causal)), 1e-13) << name(d);
  }
}

TEST(Attention, CausalFirstQueryOfSquareAttentionCopiesFirstValue) {
  const std::vector<Tensor> in = inputs({1, 1, 3, 3, 2, true}, 40);
  const std::vector<double> out =
      scaled_dot_product_attention(Var(in[0]), Var(in[1]), Var(in[2]), true).value().to_vector<double>();
  const std::vector<double> v = in[2].to_vector<double>();
  EXPECT_DOUBLE_EQ(out[0], v[0]);
  EXPECT_DOUBLE_EQ(out[1], v[1]);
}

TEST(Attention, Gradcheck) {
  std::uint64_t seed = 100;
  for (const Dims& d : kCases) {
    const bool causal = d.causal;
    EXPECT_TRUE(gradcheck(
        [causal](const std::vector<Var>& in) { return scaled_dot_product_attention(in[0], in[1], in[2], causal); },
        inputs(d, seed += 3)))
        << name(d);
  }
}

// Only some inputs need gradients: the op keeps and computes just what those read.
TEST(Attention, GradcheckWithConstantInputs) {
  const Dims d{1, 2, 3, 4, 3, true};
  for (std::size_t constant = 0; constant < 3; ++constant) {
    EXPECT_TRUE(gradcheck(
        [](const std::vector<Var>& in) { return scaled_dot_product_attention(in[0], in[1], in[2], true); },
        inputs(d, 200 + constant), {}, {constant}))
        << "constant input " << constant;
  }
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Var>& in) { return scaled_dot_product_attention(in[0], in[1], in[2], false); },
      inputs(d, 210), {}, {0, 1}))
      << "only v";
}

// Same float inputs in both paths: outputs are convex combinations of O(1) values and gradients
// O(1) sums over Dh = 16 and S = 12 terms; float rounding (ulp 1e-7) stays below 2e-6.
TEST(Attention, Float32AgreesWithFloat64) {
  const Dims d{2, 2, 8, 12, 16, true};
  std::vector<Tensor> in32;
  for (const Tensor& t : inputs(d, 300)) in32.push_back(t.to(DType::f32));
  const Tensor seed = randn_tensor({d.b, d.h, d.t, d.dh}, 310);
  std::vector<Var> a, b;
  for (const Tensor& t : in32) {
    a.emplace_back(t.to(DType::f64), true);
    b.emplace_back(t, true);
  }
  Var ya = scaled_dot_product_attention(a[0], a[1], a[2], true);
  Var yb = scaled_dot_product_attention(b[0], b[1], b[2], true);
  EXPECT_EQ(yb.dtype(), DType::f32);
  EXPECT_LT(max_abs_diff(ya.value(), yb.value()), 2e-6);
  ya.backward(seed);
  yb.backward(seed.to(DType::f32));
  for (int i = 0; i < 3; ++i) EXPECT_LT(max_abs_diff(a[i].grad(), b[i].grad()), 2e-6) << "input " << i;
}

TEST(Attention, RejectsBadShapes) {
  const Var q(randn_tensor({1, 2, 5, 4}, 1)), k(randn_tensor({1, 2, 3, 4}, 2)), v(randn_tensor({1, 2, 3, 4}, 3));
  EXPECT_THROW(scaled_dot_product_attention(q, k, v, true), Error);  // causal with S < T
  EXPECT_THROW(scaled_dot_product_attention(q, k, Var(randn_tensor({1, 2, 4, 4}, 4)), false), Error);
  EXPECT_THROW(scaled_dot_product_attention(q, Var(randn_tensor({1, 2, 3, 5}, 5)), Var(randn_tensor({1, 2, 3, 5}, 6)), false),
               Error);
  EXPECT_THROW(scaled_dot_product_attention(Var(randn_tensor({2, 5, 4}, 7)), k, v, false), Error);
}

}  // namespace
}  // namespace upcycle
