#pragma once
// Data-parallel gradient averaging. Gradients are packed into a few preallocated buckets of about
// `bucket_bytes` each, one all_reduce per bucket (not one per tensor), then scaled by 1/size and
// handed back to the parameters as views into the bucket. A parameter without a gradient on this
// rank contributes zeros, so every rank issues the same collectives.
//
// With overlap, the all-reduces run behind backward, as PyTorch's DDP does: arm() before the last
// backward of a step (the last micro-batch: earlier ones only accumulate), and each parameter's
// "gradient complete" hook (Node::on_grad_ready) counts it final; a bucket whose gradients are all
// final is packed and its all_reduce_async started at once (on the NCCL communicator's
// communication stream; MPI_Iallreduce on the host), while backward computes the rest. Buckets
// launch in a fixed order (grad_buckets.hpp), so a parameter that gets no gradient on some rank
// holds its bucket and the later ones back until reduce(), never reorders the collectives. reduce()
// launches what is left, waits, scales and hands the results back: the same numbers as without
// overlap (a bucket holds the same values either way; only MPI's summation order may differ, with
// 3 ranks or more).
#include <memory>
#include <vector>

#include "upcycle/autograd/var.hpp"
#include "upcycle/dist/communicator.hpp"
#include "upcycle/train/grad_buckets.hpp"

namespace upcycle {

// With a divisor (> 0) the reduced gradient is the SUM over the communicator's ranks divided by
// `divisor` instead of by the communicator's size: expert parameters are summed over the
// expert-data-parallel group and divided by the world size (moe_layer.hpp), since a rank's expert
// gradient already holds the tokens of its whole expert-parallel group.
class GradReducer {
 public:
  // Collective over `comm` when overlap is on and it has more than one rank: the reducer splits
  // off a communicator of its own, so that its collectives, whose start depends on when gradients
  // become final here, never interleave with the caller's other collectives in a different order
  // on different ranks. Installs the parameters' on_grad_ready hooks (each must have none).
  GradReducer(std::vector<Var> params, std::shared_ptr<Communicator> comm, std::size_t bucket_bytes,
              double divisor = 0.0, bool overlap = false);
  ~GradReducer();
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;

  // The next backward pass is the last before reduce(): launch buckets as their gradients become
  // final. Does nothing without overlap or with one rank.
  void arm();
  // Averages (or sums and divides) every parameter's gradient over the communicator's ranks
  // (collective): launches the buckets not yet launched, waits for all, scales them.
  void reduce();

  std::size_t num_buckets() const { return buckets_.size(); }
  bool overlaps() const { return overlap_; }
  // Buckets launched and not yet waited for (before reduce(): those backward launched).
  std::size_t buckets_in_flight() const { return overlap_ ? readiness_.taken() - waited_ : 0; }
  // Whether the hooks also call test() on the oldest collective in flight, the only way an MPI
  // without a progress thread advances a non-blocking collective before wait() (on by default;
  // off to measure what it gives).
  void set_progress_from_hooks(bool on) { progress_from_hooks_ = on; }

 private:
  struct Entry {
    std::size_t param;
    std::int64_t offset;  // in elements, within the bucket
  };
  struct Bucket {
    Tensor buffer;  // flat
    std::vector<Entry> entries;
  };
  void on_grad_ready(std::size_t param);
  void pack(Bucket& b);
  void launch(std::size_t bucket);
  void finish(Bucket& b);  // scale, and hand the views back to the parameters
  void progress();

  std::vector<Var> params_;
  std::shared_ptr<Communicator> comm_;
  double divisor_;
  bool overlap_;
  bool armed_ = false;
  bool progress_from_hooks_ = true;
  std::vector<Bucket> buckets_;
  BucketReadiness readiness_;
  std::vector<std::unique_ptr<CommRequest>> requests_;  // per bucket, while in flight
  std::size_t waited_ = 0;    // buckets of this pass already waited for (reduce)
  std::size_t finished_ = 0;  // buckets of this pass known finished (progress)
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
