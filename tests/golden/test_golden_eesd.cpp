// Parity with PyTorch for Expert-Ensemble Self-Distillation: the teacher's dense expert ensemble,
// the (uniform or entropy-weighted) distillation loss, the student's gradients (of the loss alone
// and with a task term), and the teacher's EMA update after a student step, against the file
// tests/golden/gen_eesd.py wrote from a live torch (its docstring has the layout).
// Usage: test_golden_eesd FILE.h5 [gtest flags].
//
// Error measure as test_golden_moe: rel = max_i |a_i - ref_i| / max_i |ref_i|. Forward values
// agree to 1e-5 and gradients to 1e-4 (f32 in different orders; the dense ensemble sums E expert
// outputs where torch does too, but the sparse student output is dispatched). The EMA update is two
// products and a sum per element with the same f32 coefficients on both sides: 1e-6.
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>
#include <string>

#include "relative_error.hpp"
#include "upcycle/backend/backend.hpp"
#include "upcycle/io/hdf5.hpp"
#include "upcycle/moe/dense_ensemble.hpp"
#include "upcycle/nn/parameter_io.hpp"
#include "upcycle/ops/elementwise.hpp"
#include "upcycle/ops/reduce.hpp"
#include "upcycle/ops/shape.hpp"

namespace upcycle {
namespace {

std::string g_file;

constexpr double kForwardTol = 1e-5;
constexpr double kGradTol = 1e-4;
constexpr double kEmaTol = 1e-6;

using testing::RelError;
using testing::relative_error;

std::unique_ptr<moe::MoeLayer> layer_from(const h5::File& f, const std::string& group) {
  moe::MoeConfig cfg;
  cfg.d_model = h5::read_int_attribute(f, "/", "D");
  cfg.d_ff = h5::read_int_attribute(f, "/", "F");
  cfg.num_experts = h5::read_int_attribute(f, "/", "E");
  cfg.top_k = h5::read_int_attribute(f, "/", "k");
  cfg.renormalize = true;
  cfg.shared_expert = h5::read_int_attribute(f, "/", "shared") != 0;
  cfg.shared_d_ff = h5::read_int_attribute(f, "/", "shared_F");
  cfg.activation = nn::MlpActivation::gelu_tanh;
  RngStream rng(0);  // overwritten by the file's weights
  auto layer = std::make_unique<moe::MoeLayer>(cfg, nullptr, rng);
  for (const auto& [name, p] : layer->named_parameters())
    nn::assign_parameter(*layer, name, h5::read_tensor(f, group + "/" + name));
  return layer;
}

void expect_close(const h5::File& f, const std::string& what, const Tensor& got, const std::string& dataset,
                  double tol) {
  const Tensor ref = h5::read_tensor(f, dataset);
  ASSERT_EQ(got.numel(), ref.numel()) << what;
  const RelError e = relative_error(got.reshape(ref.shape()), ref);
  std::printf("  %-34s rel %.3e  (max|diff| %.3e, max|ref| %.3e, bound %.0e)\n", what.c_str(), e.rel, e.max_diff,
              e.max_ref, tol);
  EXPECT_LE(e.rel, tol) << what << " differs from PyTorch (" << dataset << ")";
}

struct EesdRun {
  std::unique_ptr<moe::MoeLayer> student, teacher;
  Var x, eesd, loss;
};

// The student's forward and the distillation loss as the trainer computes them (train/eesd.cpp).
EesdRun run_eesd(const h5::File& f, bool with_task_term) {
  EesdRun r;
  r.student = layer_from(f, "student");
  r.teacher = layer_from(f, "teacher");
  r.x = Var(h5::read_tensor(f, "x", DType::f32), true);
  const Var y = r.student->forward(r.x);
  const moe::MoeRouting& routing = r.student->last_routing();
  const Tensor target = moe::dense_ensemble(*r.teacher, routing.input.value());
  const bool entropy = h5::read_int_attribute(f, "/", "entropy") != 0;
  r.eesd = moe::distillation_loss(routing.output, target, entropy ? moe::entropy_weights(routing.logits.value()) : Tensor());
  const double lambda = h5::read_double_attribute(f, "/", "lambda");
  r.loss = with_task_term ? sum_all(mul(y, Var(h5::read_tensor(f, "proj", DType::f32)))) + mul_scalar(r.eesd, lambda)
                          : r.eesd;
  r.loss.backward();
  return r;
}

class GoldenEesd : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_FALSE(g_file.empty()) << "usage: test_golden_eesd FILE.h5 (written by tests/golden/gen_eesd.py)";
    file_ = std::make_unique<h5::File>(h5::File::open(g_file));
    std::printf("golden file %s (torch %s): entropy weights %lld, shared expert %lld\n", g_file.c_str(),
                h5::read_string_attribute(*file_, "/", "torch_version").c_str(),
                static_cast<long long>(h5::read_int_attribute(*file_, "/", "entropy")),
                static_cast<long long>(h5::read_int_attribute(*file_, "/", "shared")));
  }
  static void TearDownTestSuite() { file_.reset(); }
  static std::unique_ptr<h5::File> file_;
};
std::unique_ptr<h5::File> GoldenEesd::file_;

TEST_F(GoldenEesd, TeacherEnsembleAndLoss) {
  EesdRun r = run_eesd(*file_, true);
  EXPECT_EQ(r.student->last_routing().indices.to_vector<std::int64_t>(),
            h5::read_tensor(*file_, "indices", DType::i64).to_vector<std::int64_t>());
  expect_close(*file_, "student output y_S", r.student->last_routing().output.value(), "y", kForwardTol);
  expect_close(*file_, "teacher dense ensemble y_T",
               moe::dense_ensemble(*r.teacher, r.student->last_routing().input.value()), "y_teacher", kForwardTol);
  expect_close(*file_, "eesd", r.eesd.value(), "eesd", kForwardTol);
  expect_close(*file_, "loss", r.loss.value(), "loss", kForwardTol);
}

TEST_F(GoldenEesd, StudentGradientsOfTheDistillationLoss) {
  EesdRun r = run_eesd(*file_, false);
  expect_close(*file_, "d eesd / d x", r.x.grad(), "grad_eesd/x", kGradTol);
  for (const auto& [name, p] : r.student->named_parameters()) {
    ASSERT_TRUE(p.grad().defined()) << name;
    expect_close(*file_, "d eesd / d " + name, p.grad(), "grad_eesd/student/" + name, kGradTol);
  }
  // The teacher takes no gradient.
  for (const auto& [name, p] : r.teacher->named_parameters()) EXPECT_FALSE(p.grad().defined()) << name;
}

TEST_F(GoldenEesd, StudentGradientsWithATaskTerm) {
  EesdRun r = run_eesd(*file_, true);
  expect_close(*file_, "d loss / d x", r.x.grad(), "grad/x", kGradTol);
  for (const auto& [name, p] : r.student->named_parameters())
    expect_close(*file_, "d loss / d " + name, p.grad(), "grad/student/" + name, kGradTol);
}

TEST_F(GoldenEesd, TeacherEmaUpdate) {
  auto teacher = layer_from(*file_, "teacher");
  auto student_next = layer_from(*file_, "student_next");
  std::vector<EmaTensor> pairs;
  const auto t = teacher->named_parameters(), s = student_next->named_parameters();
  for (std::size_t i = 0; i < t.size(); ++i) pairs.push_back({t[i].second.value(), s[i].second.value()});
  backend_for(Device::cpu).ema(pairs, h5::read_double_attribute(*file_, "/", "momentum"));
  for (const auto& [name, p] : teacher->named_parameters())
    expect_close(*file_, "teacher_next " + name, p.value(), "teacher_next/" + name, kEmaTol);
}

}  // namespace
}  // namespace upcycle

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (argc >= 2) upcycle::g_file = argv[1];
  return RUN_ALL_TESTS();
}
