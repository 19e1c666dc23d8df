// Autograd on the GPU: every differentiable op of include/upcycle/ops (and the MoE router losses)
// builds the same small graph on the CPU and on CUDA from the same inputs (copied), runs backward
// from the same seeded output gradient, and the outputs and every input gradient must agree, in
// f64 and in f32. Exits with 77 (CTest: Skipped) when no CUDA device is usable, printing why.
//
// What is checked per graph and dtype: the output and every gradient live on the CUDA device (no
// silent host fallback), have the CPU's shapes and dtypes, and agree with the CPU's under
//   rel = max_i |cuda_i - cpu_i| / max(max_i |cpu_i|, 1e-6)      (tests/support/relative_error.hpp;
//                                                                  a NaN or inf anywhere fails)
//   f64: rel <= 1e-10. Each kernel agrees to ~1e-12 of its magnitude (the op suite's f64 tier);
//        a graph of a few kernels, with the cancellation of a backward pass, stays far below 1e-10.
//   f32: rel <= 1e-4. Each kernel agrees to ~1e-5 (the op suite's reduction tier); a graph of up
//        to ten kernels compounds to a few 1e-5, as in the PyTorch parity tests (test_golden_*),
//        which use the same 1e-4 for gradients.
// Any wrong formula, index or broadcast gives O(1) errors. TF32 is off (set_allow_tf32(false)).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "backend_compare.hpp"
#include "relative_error.hpp"
#include "upcycle/backend/backend.hpp"
#include "upcycle/backend/devices.hpp"
#include "upcycle/moe/router_losses.hpp"
#include "upcycle/ops/all.hpp"
#include "upcycle/ops/fused_attention.hpp"
#include "upcycle/ops/grouped_linear.hpp"
#include "upcycle/ops/scale_rows.hpp"

namespace upcycle {
namespace {

using testing::copy_to;
using testing::host_ints;
using testing::host_normal;
using testing::host_uniform;
using testing::host_values;
using testing::relative_error;

constexpr double kTolF64 = 1e-10;
constexpr double kTolF32 = 1e-4;

// One graph: its inputs (floating ones made in f64 and cast to the run's dtype; integer ones are
// index tensors, passed as constants on the run's device) and the function that builds it.
struct Graph {
  std::string name;
  std::function<std::vector<Tensor>()> inputs;
  std::function<Var(const std::vector<Var>&)> f;
  std::vector<std::size_t> constant;  // floating inputs that take no gradient
};

Tensor normal(const Shape& s, std::uint64_t seed, double std = 1.0) { return host_normal(s, DType::f64, seed, 0.0, std); }
Tensor uniform(const Shape& s, std::uint64_t seed, double lo, double hi) { return host_uniform(s, DType::f64, seed, lo, hi); }
Tensor ints(const Shape& s, std::uint64_t seed, std::int64_t lo, std::int64_t hi, DType dt = DType::i64) {
  return host_ints(s, dt, seed, lo, hi);
}

// Domain of each unary op's input (as in the op suite): positive for log / sqrt / rsqrt, away
// from 0 for reciprocal.
Tensor unary_input(UnaryOp op, const Shape& s, std::uint64_t seed) {
  if (op == UnaryOp::log || op == UnaryOp::sqrt || op == UnaryOp::rsqrt) return uniform(s, seed, 0.2, 3.0);
  if (op == UnaryOp::reciprocal) {
    std::vector<double> v = testing::values_of(uniform(s, seed, 0.5, 2.0));
    for (std::size_t i = 1; i < v.size(); i += 2) v[i] = -v[i];
    return host_values(v, s, DType::f64);
  }
  return normal(s, seed, 1.5);
}

std::vector<Graph> make_graphs() {
  std::vector<Graph> g;
  auto def = [&g](std::string name, std::function<std::vector<Tensor>()> in, std::function<Var(const std::vector<Var>&)> f,
                  std::vector<std::size_t> constant = {}) {
    g.push_back({std::move(name), std::move(in), std::move(f), std::move(constant)});
  };

  // --- linalg ---
  def("matmul", [] { return std::vector<Tensor>{normal({5, 7}, 1), normal({7, 3}, 2)}; },
      [](const std::vector<Var>& v) { return matmul(v[0], v[1]); });
  def("matmul_trans_a", [] { return std::vector<Tensor>{normal({7, 5}, 3), normal({7, 3}, 4)}; },
      [](const std::vector<Var>& v) { return matmul(v[0], v[1], true, false); });
  def("matmul_trans_b", [] { return std::vector<Tensor>{normal({5, 7}, 5), normal({3, 7}, 6)}; },
      [](const std::vector<Var>& v) { return matmul(v[0], v[1], false, true); });
  def("matmul_trans_both", [] { return std::vector<Tensor>{normal({7, 5}, 7), normal({3, 7}, 8)}; },
      [](const std::vector<Var>& v) { return matmul(v[0], v[1], true, true); });
  def("matmul_batched_shared_b", [] { return std::vector<Tensor>{normal({2, 3, 5, 7}, 9), normal({7, 4}, 10)}; },
      [](const std::vector<Var>& v) { return matmul(v[0], v[1]); });
  def("matmul_batched", [] { return std::vector<Tensor>{normal({3, 5, 7}, 11), normal({3, 7, 4}, 12)}; },
      [](const std::vector<Var>& v) { return matmul(v[0], v[1]); });
  def("matmul_batched_trans_a", [] { return std::vector<Tensor>{normal({3, 7, 5}, 13), normal({3, 7, 4}, 14)}; },
      [](const std::vector<Var>& v) { return matmul(v[0], v[1], true, false); });
  def("linear", [] { return std::vector<Tensor>{normal({2, 3, 8}, 15), normal({5, 8}, 16), normal({5}, 17)}; },
      [](const std::vector<Var>& v) { return linear(v[0], v[1], v[2]); });
  def("linear_no_bias", [] { return std::vector<Tensor>{normal({6, 8}, 18), normal({5, 8}, 19)}; },
      [](const std::vector<Var>& v) { return linear(v[0], v[1]); });

  // --- elementwise: binary ops same-shape and broadcast both ways, scalars, every unary op ---
  const std::vector<std::pair<std::string, Var (*)(const Var&, const Var&)>> binaries = {
      {"add", &upcycle::add}, {"sub", &upcycle::sub}, {"mul", &upcycle::mul}, {"div", &upcycle::div}};
  std::uint64_t seed = 100;
  for (const auto& [name, op] : binaries) {
    const auto fn = op;
    const bool is_div = name == "div";
    for (int form = 0; form < 3; ++form) {  // same shape, [4,6] (op) [6], [6] (op) [4,6]
      const Shape sa = form == 2 ? Shape{6} : Shape{4, 6}, sb = form == 1 ? Shape{6} : Shape{4, 6};
      const std::uint64_t s = seed += 2;
      const char* forms[3] = {"", "_broadcast_b", "_broadcast_a"};
      def(name + forms[form],
          [sa, sb, s, is_div] {
            return std::vector<Tensor>{normal(sa, s), is_div ? unary_input(UnaryOp::reciprocal, sb, s + 1) : normal(sb, s + 1)};
          },
          [fn](const std::vector<Var>& v) { return fn(v[0], v[1]); });
    }
  }
  def("affine", [] { return std::vector<Tensor>{normal({3, 5}, 20)}; },
      [](const std::vector<Var>& v) { return affine(v[0], 1.5, -0.5); });
  def("pow_scalar_fractional", [] { return std::vector<Tensor>{uniform({3, 5}, 21, 0.2, 3.0)}; },
      [](const std::vector<Var>& v) { return pow_scalar(v[0], 1.7); });
  def("pow_scalar_square", [] { return std::vector<Tensor>{normal({3, 5}, 22)}; },
      [](const std::vector<Var>& v) { return pow_scalar(v[0], 2.0); });
  for (UnaryOp op : {UnaryOp::neg, UnaryOp::exp, UnaryOp::log, UnaryOp::sqrt, UnaryOp::rsqrt, UnaryOp::square,
                     UnaryOp::abs, UnaryOp::tanh, UnaryOp::sigmoid, UnaryOp::reciprocal, UnaryOp::relu,
                     UnaryOp::gelu_tanh, UnaryOp::gelu_erf, UnaryOp::silu}) {
    const std::uint64_t s = seed += 2;
    def(std::string("unary_") + unary_op_name(op), [op, s] { return std::vector<Tensor>{unary_input(op, {4, 9}, s)}; },
        [op](const std::vector<Var>& v) { return unary(op, v[0]); });
  }

  // --- activations ---
  def("relu", [] { return std::vector<Tensor>{normal({4, 9}, 30)}; }, [](const std::vector<Var>& v) { return relu(v[0]); });
  def("gelu_tanh", [] { return std::vector<Tensor>{normal({4, 9}, 31)}; },
      [](const std::vector<Var>& v) { return gelu(v[0], GeluApprox::tanh); });
  def("gelu_erf", [] { return std::vector<Tensor>{normal({4, 9}, 32)}; },
      [](const std::vector<Var>& v) { return gelu(v[0], GeluApprox::erf); });
  def("silu", [] { return std::vector<Tensor>{normal({4, 9}, 33)}; }, [](const std::vector<Var>& v) { return silu(v[0]); });

  // --- reductions ---
  def("sum_axis0", [] { return std::vector<Tensor>{normal({4, 5, 3}, 40)}; },
      [](const std::vector<Var>& v) { return sum(v[0], 0); });
  def("sum_axis1_keepdim", [] { return std::vector<Tensor>{normal({4, 5, 3}, 41)}; },
      [](const std::vector<Var>& v) { return sum(v[0], 1, true); });
  def("mean_last", [] { return std::vector<Tensor>{normal({4, 5, 33}, 42)}; },
      [](const std::vector<Var>& v) { return mean(v[0], -1); });
  def("mean_axis1", [] { return std::vector<Tensor>{normal({4, 5, 3}, 43)}; },
      [](const std::vector<Var>& v) { return mean(v[0], 1); });
  def("sum_all", [] { return std::vector<Tensor>{normal({7, 33}, 44)}; }, [](const std::vector<Var>& v) { return sum_all(v[0]); });
  def("mean_all", [] { return std::vector<Tensor>{normal({7, 33}, 45)}; },
      [](const std::vector<Var>& v) { return mean_all(v[0]); });

  // --- shape ops (each followed by a multiplication so that the gradient is not just the seed) ---
  def("reshape", [] { return std::vector<Tensor>{normal({4, 6}, 50), normal({3, 8}, 51)}; },
      [](const std::vector<Var>& v) { return mul(reshape(v[0], {3, -1}), v[1]); });
  def("transpose", [] { return std::vector<Tensor>{normal({2, 3, 4}, 52), normal({4, 3, 2}, 53)}; },
      [](const std::vector<Var>& v) { return mul(transpose(v[0], 0, 2), v[1]); });
  def("permute", [] { return std::vector<Tensor>{normal({2, 3, 4, 5}, 54), normal({4, 2, 5, 3}, 55)}; },
      [](const std::vector<Var>& v) { return mul(permute(v[0], {2, 0, 3, 1}), v[1]); });
  def("concat", [] { return std::vector<Tensor>{normal({2, 3, 4}, 56), normal({2, 5, 4}, 57)}; },
      [](const std::vector<Var>& v) { return concat({v[0], mul_scalar(v[1], 2.0), v[0]}, 1); });
  def("split", [] { return std::vector<Tensor>{normal({3, 6, 2}, 58)}; },
      [](const std::vector<Var>& v) {
        const std::vector<Var> parts = split(v[0], {2, 3, 1}, 1);
        return concat({mul_scalar(parts[2], 3.0), parts[0], square(parts[1])}, 1);
      });
  def("slice", [] { return std::vector<Tensor>{normal({3, 7, 2}, 59)}; },
      [](const std::vector<Var>& v) { return square(slice(v[0], 1, 2, 5)); });

  // --- index ops (index tensors of both dtypes, with repeats) ---
  for (DType it : {DType::i32, DType::i64}) {
    const std::string sfx = it == DType::i32 ? "_i32" : "_i64";
    def("embedding" + sfx, [it] { return std::vector<Tensor>{normal({10, 6}, 60), ints({3, 5}, 61, 0, 10, it)}; },
        [](const std::vector<Var>& v) { return embedding(v[0], v[1].value()); });
    def("gather_rows" + sfx, [it] { return std::vector<Tensor>{normal({7, 5}, 62), ints({12}, 63, 0, 7, it)}; },
        [](const std::vector<Var>& v) { return gather_rows(v[0], v[1].value()); });
    def("index_add_rows" + sfx, [it] { return std::vector<Tensor>{normal({12, 5}, 64), ints({12}, 65, 0, 7, it)}; },
        [](const std::vector<Var>& v) { return index_add_rows(7, v[1].value(), v[0]); });
  }

  // --- softmax family and losses ---
  def("softmax", [] { return std::vector<Tensor>{normal({5, 33}, 70, 2.0)}; },
      [](const std::vector<Var>& v) { return softmax(v[0]); });
  def("log_softmax", [] { return std::vector<Tensor>{normal({5, 33}, 71, 2.0)}; },
      [](const std::vector<Var>& v) { return log_softmax(v[0]); });
  def("cross_entropy",
      [] {
        std::vector<double> t = testing::values_of(ints({6}, 72, 0, 11));
        t[2] = -100;  // an ignored row
        return std::vector<Tensor>{normal({6, 11}, 73, 2.0), host_values(t, {6}, DType::i64)};
      },
      [](const std::vector<Var>& v) { return cross_entropy(v[0], v[1].value()); });
  def("cross_entropy_smoothing_3d", [] { return std::vector<Tensor>{normal({2, 3, 11}, 74, 2.0), ints({2, 3}, 75, 0, 11)}; },
      [](const std::vector<Var>& v) { return cross_entropy(v[0], v[1].value(), -100, 0.1); });
  def("mse", [] { return std::vector<Tensor>{normal({4, 7}, 76), normal({4, 7}, 77)}; },
      [](const std::vector<Var>& v) { return mse(v[0], v[1]); });

  // --- norms ---
  def("layer_norm", [] { return std::vector<Tensor>{normal({3, 4, 33}, 80), uniform({33}, 81, 0.5, 1.5), normal({33}, 82)}; },
      [](const std::vector<Var>& v) { return layer_norm(v[0], v[1], v[2]); });
  def("layer_norm_no_affine", [] { return std::vector<Tensor>{normal({6, 33}, 83)}; },
      [](const std::vector<Var>& v) { return layer_norm(v[0], Var(), Var()); });
  def("rms_norm", [] { return std::vector<Tensor>{normal({3, 4, 33}, 84), uniform({33}, 85, 0.5, 1.5)}; },
      [](const std::vector<Var>& v) { return rms_norm(v[0], v[1]); });
  def("rms_norm_no_gamma", [] { return std::vector<Tensor>{normal({6, 33}, 86)}; },
      [](const std::vector<Var>& v) { return rms_norm(v[0], Var()); });

  // --- attention ---
  struct AttnDims {
    std::int64_t b, h, t, s, dh;
    bool causal;
    const char* name;
  };
  for (const AttnDims& d : {AttnDims{2, 2, 5, 5, 4, true, "sdpa_causal"}, AttnDims{2, 2, 3, 6, 4, false, "sdpa_t_lt_s"},
                            AttnDims{1, 2, 6, 3, 4, false, "sdpa_t_gt_s"}, AttnDims{2, 1, 3, 7, 8, true, "sdpa_causal_s_gt_t"}}) {
    def(d.name,
        [d] {
          return std::vector<Tensor>{normal({d.b, d.h, d.t, d.dh}, 90), normal({d.b, d.h, d.s, d.dh}, 91),
                                     normal({d.b, d.h, d.s, d.dh}, 92)};
        },
        [d](const std::vector<Var>& v) { return scaled_dot_product_attention(v[0], v[1], v[2], d.causal); });
  }
  for (bool causal : {true, false})
    def(causal ? "packed_qkv_attention_causal" : "packed_qkv_attention",
        [] { return std::vector<Tensor>{normal({2, 5, 3 * 8}, 93)}; },
        [causal](const std::vector<Var>& v) { return packed_qkv_attention(v[0], 2, causal); });

  // --- dropout with a fixed stream (the same Philox words on both devices) ---
  def("dropout", [] { return std::vector<Tensor>{normal({7, 33}, 100)}; },
      [](const std::vector<Var>& v) {
        RngStream rng(1234, 5);
        return dropout(v[0], 0.3, rng, true);
      });

  // --- MoE pieces ---
  for (bool bias : {true, false})
    def(bias ? "grouped_linear" : "grouped_linear_no_bias",
        [] { return std::vector<Tensor>{normal({10, 6}, 110), normal({4, 5, 6}, 111), normal({4, 5}, 112)}; },
        [bias](const std::vector<Var>& v) { return grouped_linear(v[0], v[1], bias ? v[2] : Var(), {3, 0, 5, 2}); },
        bias ? std::vector<std::size_t>{} : std::vector<std::size_t>{2});
  def("scale_rows", [] { return std::vector<Tensor>{normal({6, 5}, 113), normal({6}, 114)}; },
      [](const std::vector<Var>& v) { return scale_rows(v[0], v[1]); });
  def("topk_values", [] { return std::vector<Tensor>{normal({6, 9}, 115)}; },
      [](const std::vector<Var>& v) { return topk(v[0], 3).values; });
  def("gather_last", [] { return std::vector<Tensor>{normal({6, 9}, 116), ints({6, 4}, 117, 0, 9)}; },
      [](const std::vector<Var>& v) { return gather_last(v[0], v[1].value()); });
  def("router_losses",  // load balancing on softmax probabilities + z-loss on the logits
      [] { return std::vector<Tensor>{normal({12, 4}, 118)}; },
      [](const std::vector<Var>& v) {
        const Var probs = softmax(v[0]);
        const TopK sel = topk(probs, 2);
        return add(moe::load_balancing_loss(probs, sel.indices, 0.01), moe::router_z_loss(v[0], 0.001));
      });

  // --- a composite: a pre-LN MLP block with residual, reduced to a scalar ---
  def("mlp_block",
      [] {
        return std::vector<Tensor>{normal({2, 5, 16}, 120), normal({32, 16}, 121, 0.2), normal({32}, 122, 0.1),
                                   normal({16, 32}, 123, 0.2), normal({16}, 124, 0.1), uniform({16}, 125, 0.5, 1.5),
                                   normal({16}, 126, 0.1)};
      },
      [](const std::vector<Var>& v) {
        const Var h = layer_norm(v[0], v[5], v[6]);
        const Var y = add(v[0], linear(gelu(linear(h, v[1], v[2])), v[3], v[4]));
        return mean_all(square(y));
      });
  return g;
}

const std::vector<Graph>& graphs() {
  static const std::vector<Graph> g = make_graphs();
  return g;
}

// One run of a graph on a device: output and gradients back on the host, plus where they lived.
struct GraphRun {
  Tensor out;
  Device out_device = Device::cpu;
  std::vector<Tensor> grads;           // per input taking a gradient, in input order (undefined: none)
  std::vector<Device> grad_devices;
};

GraphRun run_graph(const Graph& g, const std::vector<Tensor>& inputs, DType dt, Device dev) {
  std::vector<Var> leaves;
  std::vector<std::size_t> with_grad;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const bool floating = is_floating(inputs[i].dtype());
    const bool grad = floating && std::find(g.constant.begin(), g.constant.end(), i) == g.constant.end();
    leaves.emplace_back(copy_to(floating ? inputs[i].to(dt) : inputs[i], dev), grad);
    if (grad) with_grad.push_back(i);
  }
  const Var y = g.f(leaves);
  // The same seed gradient on both devices: made on the host, copied.
  const Tensor seed = copy_to(host_normal(y.shape(), dt, 4242, 0.0, 1.0), dev);
  y.backward(seed);
  GraphRun r;
  r.out = copy_to(y.value(), Device::cpu);
  r.out_device = y.value().device();
  for (std::size_t i : with_grad) {
    const Tensor& gr = leaves[i].grad();
    r.grads.push_back(copy_to(gr, Device::cpu));
    r.grad_devices.push_back(gr.defined() ? gr.device() : Device::cpu);
  }
  return r;
}

void expect_close(const Tensor& got, const Tensor& ref, double tol, const std::string& what) {
  ASSERT_TRUE(got.defined()) << what << ": missing on CUDA";
  ASSERT_TRUE(ref.defined()) << what << ": missing on the CPU";
  EXPECT_EQ(got.shape(), ref.shape()) << what;
  EXPECT_EQ(got.dtype(), ref.dtype()) << what;
  const testing::RelError e = relative_error(got, ref);
  EXPECT_LE(e.rel, tol) << what << ": max|diff| " << e.max_diff << ", max|ref| " << e.max_ref;
}

class AutogradCuda : public ::testing::TestWithParam<std::size_t> {};

TEST_P(AutogradCuda, OutputAndGradientsMatchTheCpu) {
  backend_for(Device::cuda).set_allow_tf32(false);
  const Graph& g = graphs()[GetParam()];
  const std::vector<Tensor> inputs = g.inputs();
  for (DType dt : {DType::f64, DType::f32}) {
    const double tol = dt == DType::f64 ? kTolF64 : kTolF32;
    const std::string tag = g.name + " " + dtype_name(dt);
    const GraphRun ref = run_graph(g, inputs, dt, Device::cpu);
    const GraphRun got = run_graph(g, inputs, dt, Device::cuda);
    EXPECT_EQ(got.out_device, Device::cuda) << tag << ": the output left the GPU";
    expect_close(got.out, ref.out, tol, tag + " output");
    ASSERT_EQ(got.grads.size(), ref.grads.size()) << tag;
    ASSERT_FALSE(ref.grads.empty()) << tag << ": no input takes a gradient";
    for (std::size_t i = 0; i < ref.grads.size(); ++i) {
      EXPECT_EQ(got.grad_devices[i], Device::cuda) << tag << " gradient " << i << " is not on the GPU";
      expect_close(got.grads[i], ref.grads[i], tol, tag + " gradient of input " + std::to_string(i));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, AutogradCuda, ::testing::Range<std::size_t>(0, graphs().size()),
                         [](const ::testing::TestParamInfo<std::size_t>& info) { return graphs()[info.param].name; });

// topk's indices are not differentiable, so the graph above compares only its values: the
// selection itself must be identical (ties broken towards the lower index on both sides).
TEST(AutogradCudaTopk, IndicesMatchTheCpuIncludingTies) {
  for (DType dt : {DType::f64, DType::f32}) {
    const Tensor x = host_ints({7, 12}, DType::i64, 130, 0, 4).to(dt);  // many ties
    const TopK a = topk(Var(x), 5), b = topk(Var(copy_to(x, Device::cuda)), 5);
    EXPECT_EQ(b.indices.device(), Device::cuda);
    EXPECT_EQ(b.indices.to(Device::cpu).to_vector<std::int64_t>(), a.indices.to_vector<std::int64_t>()) << dtype_name(dt);
  }
}

// The dropout stream advances by the same amount on both devices (the next draw lines up).
TEST(AutogradCudaDropout, StreamsAdvanceAlike) {
  RngStream a(99), b(99);
  dropout(Var(host_normal({5, 7}, DType::f32, 1, 0, 1)), 0.5, a, true);
  dropout(Var(copy_to(host_normal({5, 7}, DType::f32, 1, 0, 1), Device::cuda)), 0.5, b, true);
  EXPECT_EQ(a.offset(), b.offset());
  EXPECT_EQ(a.offset(), 35u);
}

}  // namespace
}  // namespace upcycle
