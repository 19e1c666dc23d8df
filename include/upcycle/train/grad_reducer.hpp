#pragma once
// Data-parallel gradient averaging. Gradients are packed into a few preallocated buckets of about
// `bucket_bytes` each, one all_reduce per bucket (not one per tensor), then scaled by 1/size and
// handed back to the parameters as views into the bucket. A parameter without a gradient on this
// rank contributes zeros, so every rank issues the same collectives.
#include <memory>
#include <vector>

#include "upcycle/autograd/var.hpp"
#include "upcycle/dist/communicator.hpp"

namespace upcycle {

// With a divisor (> 0) the reduced gradient is the SUM over the communicator's ranks divided by
// `divisor` instead of by the communicator's size: expert parameters are summed over the
// expert-data-parallel group and divided by the world size (moe_layer.hpp), since a rank's expert
// gradient already holds the tokens of its whole expert-parallel group.
class GradReducer {
 public:
  GradReducer(std::vector<Var> params, std::shared_ptr<Communicator> comm, std::size_t bucket_bytes,
              double divisor = 0.0);
  // Averages (or sums and divides) every parameter's gradient over the communicator's ranks
  // (collective).
  void reduce();
  std::size_t num_buckets() const { return buckets_.size(); }

 private:
  struct Entry {
    std::size_t param;
    std::int64_t offset;  // in elements, within the bucket
  };
  struct Bucket {
    Tensor buffer;  // flat
    std::vector<Entry> entries;
  };
  std::vector<Var> params_;
  std::shared_ptr<Communicator> comm_;
  double divisor_;
  std::vector<Bucket> buckets_;
};

// Global L2 norm of the gradients (already reduced, hence equal on every rank).
double grad_norm(const std::vector<Var>& params);
// Sum of squares of the gradients (no square root), to combine replicated and sharded groups.
double grad_sum_squares(const std::vector<Var>& params);
// The same as an f64 [1] tensor on the gradients' device, without waiting for it.
Tensor grad_sum_squares_on_device(const std::vector<Var>& params);
// Scales every gradient by `scale` in place (clipping).
void scale_grads(const std::vector<Var>& params, double scale);
// Whether every gradient value is finite.
bool grads_finite(const std::vector<Var>& params);

}  // namespace upcycle
