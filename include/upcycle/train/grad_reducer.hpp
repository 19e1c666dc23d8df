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

class GradReducer {
 public:
  GradReducer(std::vector<Var> params, std::shared_ptr<Communicator> comm, std::size_t bucket_bytes);
  // Averages every parameter's gradient over the communicator's ranks (collective).
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
  std::vector<Bucket> buckets_;
};

// Global L2 norm of the gradients (already reduced, hence equal on every rank).
double grad_norm(const std::vector<Var>& params);
// Scales every gradient by `scale` in place (clipping).
void scale_grads(const std::vector<Var>& params, double scale);
// Whether every gradient value is finite.
bool grads_finite(const std::vector<Var>& params);

}  // namespace upcycle
