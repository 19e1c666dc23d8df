#include "upcycle/train/grad_reducer.hpp"

#include <cmath>

#include "upcycle/backend/backend.hpp"

namespace upcycle {

namespace {
constexpr std::size_t kGradBytes = 4;  // data-parallel gradients are f32
}  // namespace

GradReducer::GradReducer(std::vector<Var> params, std::shared_ptr<Communicator> comm, std::size_t bucket_bytes,
                         double divisor, bool overlap)
    : params_(std::move(params)), comm_(std::move(comm)), divisor_(divisor), overlap_(overlap),
      readiness_({}, 0) {
  UPCYCLE_CHECK(comm_ != nullptr, "GradReducer needs a communicator");
  UPCYCLE_CHECK(divisor_ >= 0.0, "GradReducer: divisor must be >= 0 (0 = the communicator's size)");
  if (divisor_ == 0.0) divisor_ = static_cast<double>(comm_->size());
  if (comm_->size() == 1) {  // nothing to exchange
    overlap_ = false;
    return;
  }
  std::vector<std::int64_t> numels;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    check_dtype(params_[i].value(), DType::f32, "data-parallel gradient");
    UPCYCLE_CHECK(params_[i].requires_grad(), "GradReducer: parameter ", i, " (", describe(params_[i].value()),
                  ") requires no gradient; reduce only trained parameters");
    numels.push_back(params_[i].value().numel());
  }
  const auto plan = plan_grad_buckets(numels, kGradBytes, bucket_bytes);
  for (const auto& members : plan) {
    Bucket b;
    std::int64_t filled = 0;
    for (std::size_t p : members) {
      b.entries.push_back({p, filled});
      filled += numels[p];
    }
    b.buffer = Tensor::empty({filled}, DType::f32, params_[members.front()].device());
    buckets_.push_back(std::move(b));
  }
  if (!overlap_) return;
  readiness_ = BucketReadiness(plan, params_.size());
  requests_.resize(buckets_.size());
  comm_ = comm_->split(0, comm_->rank());
  // Every node checked before any hook is set: a constructor that throws must leave none behind.
  for (std::size_t i = 0; i < params_.size(); ++i) {
    UPCYCLE_CHECK(!params_[i].node()->on_grad_ready, "GradReducer: parameter ", i, " (",
                  describe(params_[i].value()), ") already has a gradient hook; is it in two reducers?");
    for (std::size_t j = 0; j < i; ++j)
      UPCYCLE_CHECK(params_[j].node() != params_[i].node(), "GradReducer: parameters ", j, " and ", i,
                    " are the same tensor; list each parameter once");
  }
  for (std::size_t i = 0; i < params_.size(); ++i) params_[i].node()->on_grad_ready = [this, i] { on_grad_ready(i); };
}

GradReducer::~GradReducer() {
  if (!overlap_) return;
  for (Var& p : params_) p.node()->on_grad_ready = nullptr;
  // requests_ still in flight (an exception between arm() and reduce()) wait or are abandoned as
  // CommRequest says, before the buckets they write go.
  requests_.clear();
}

void GradReducer::arm() {
  if (!overlap_) return;
  UPCYCLE_CHECK(readiness_.taken() == 0, "GradReducer::arm: ", readiness_.taken(),
                " buckets of the previous arm() are still in flight; call reduce() first");
  readiness_.reset();
  waited_ = finished_ = 0;
  armed_ = true;
}

void GradReducer::on_grad_ready(std::size_t param) {
  if (!armed_) return;  // an earlier micro-batch: gradients still accumulate
  if (!readiness_.mark_ready(param)) {
    UPCYCLE_CHECK(!readiness_.launched(readiness_.bucket_of(param)), "GradReducer: the gradient of parameter ",
                  param, " (", describe(params_[param].value()),
                  ") changed after its bucket's all-reduce started: more than one backward after arm()");
    return;
  }
  while (readiness_.next_ready()) launch(readiness_.take_next());
  if (progress_from_hooks_) progress();
}

void GradReducer::pack(Bucket& b) {
  Backend& be = backend_of(b.buffer);
  for (const Entry& e : b.entries) {
    const Var& p = params_[e.param];
    Tensor slot = b.buffer.rows(e.offset, e.offset + p.value().numel());
    if (p.grad().defined())
      slot.copy_from(p.grad());
    else
      be.fill(slot, 0.0);
  }
}

void GradReducer::launch(std::size_t bucket) {
  Bucket& b = buckets_[bucket];
  pack(b);
  requests_[bucket] = comm_->all_reduce_async(b.buffer);
}

void GradReducer::finish(Bucket& b) {
  backend_of(b.buffer).affine(b.buffer, b.buffer, 1.0 / divisor_, 0.0);
  for (const Entry& e : b.entries) {
    Var p = params_[e.param];
    p.set_grad(b.buffer.rows(e.offset, e.offset + p.value().numel()).reshape(p.shape()));
  }
}

void GradReducer::progress() {
  while (finished_ < readiness_.taken() && requests_[finished_]->test()) ++finished_;
}

void GradReducer::reduce() {
  if (comm_->size() == 1) {
    if (divisor_ != 1.0) scale_grads(params_, 1.0 / divisor_);
    return;
  }
  if (!overlap_) {
    for (Bucket& b : buckets_) {
      pack(b);
      comm_->all_reduce(b.buffer);
      finish(b);
    }
    return;
  }
  armed_ = false;
  // What backward did not launch: buckets held back by a gradient that never came on this rank
  // (zeros), or everything when arm() was not called.
  while (readiness_.taken() < buckets_.size()) launch(readiness_.take_next());
  for (std::size_t i = 0; i < buckets_.size(); ++i) {
    requests_[i]->wait();
    requests_[i].reset();
    ++waited_;
    finish(buckets_[i]);
  }
  readiness_.reset();
  waited_ = finished_ = 0;
}

double grad_norm(const std::vector<Var>& params) { return std::sqrt(grad_sum_squares(params)); }

Tensor grad_sum_squares_on_device(const std::vector<Var>& params) {
  std::vector<Tensor> grads;
  grads.reserve(params.size());
  for (const Var& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  const Device device = grads.empty() ? Device::cpu : grads.front().device();
  Tensor s = Tensor::empty({1}, DType::f64, device);
  backend_for(device).sum_squares(grads, s);  // one multi-tensor kernel, no host round trip
  return s;
}

double grad_sum_squares(const std::vector<Var>& params) {
  return grad_sum_squares_on_device(params).item<double>();
}

void scale_grads(const std::vector<Var>& params, double scale) {
  for (const Var& p : params) {
    if (!p.grad().defined()) continue;
    Var q = p;
    // The gradient may be shared (a bucket view or a tensor an op still holds): scale a copy.
    Tensor g = Tensor::empty_like(p.grad());
    backend_of(g).affine(p.grad(), g, scale, 0.0);
    q.set_grad(g);
  }
}

bool grads_finite(const std::vector<Var>& params) {
  // A sum of squares is finite exactly when every element is.
  return std::isfinite(grad_norm(params));
}

}  // namespace upcycle
