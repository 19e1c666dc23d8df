#include "upcycle/train/grad_reducer.hpp"

#include <cmath>

#include "upcycle/backend/backend.hpp"

namespace upcycle {

GradReducer::GradReducer(std::vector<Var> params, std::shared_ptr<Communicator> comm, std::size_t bucket_bytes,
                         double divisor)
    : params_(std::move(params)), comm_(std::move(comm)), divisor_(divisor) {
  UPCYCLE_CHECK(comm_ != nullptr, "GradReducer needs a communicator");
  UPCYCLE_CHECK(divisor_ >= 0.0, "GradReducer: divisor must be >= 0 (0 = the communicator's size)");
  if (divisor_ == 0.0) divisor_ = static_cast<double>(comm_->size());
  if (comm_->size() == 1) return;  // nothing to exchange
  Bucket current;
  std::int64_t filled = 0;
  auto close_bucket = [&] {
    if (current.entries.empty()) return;
    current.buffer = Tensor::empty({filled}, DType::f32, params_[current.entries[0].param].device());
    buckets_.push_back(std::move(current));
    current = Bucket();
    filled = 0;
  };
  for (std::size_t i = 0; i < params_.size(); ++i) {
    check_dtype(params_[i].value(), DType::f32, "data-parallel gradient");
    const std::int64_t n = params_[i].value().numel();
    if (filled > 0 && static_cast<std::size_t>(filled + n) * 4 > bucket_bytes) close_bucket();
    current.entries.push_back({i, filled});
    filled += n;
  }
  close_bucket();
}

void GradReducer::reduce() {
  const double inv = 1.0 / divisor_;
  if (comm_->size() == 1) {
    if (divisor_ != 1.0) scale_grads(params_, inv);
    return;
  }
  for (Bucket& b : buckets_) {
    Backend& be = backend_of(b.buffer);
    for (const Entry& e : b.entries) {
      const Var& p = params_[e.param];
      Tensor slot = b.buffer.rows(e.offset, e.offset + p.value().numel());
      if (p.grad().defined())
        slot.copy_from(p.grad());
      else
        be.fill(slot, 0.0);
    }
    comm_->all_reduce(b.buffer);
    be.affine(b.buffer, b.buffer, inv, 0.0);
    for (const Entry& e : b.entries) {
      Var p = params_[e.param];
      p.set_grad(b.buffer.rows(e.offset, e.offset + p.value().numel()).reshape(p.shape()));
    }
  }
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
