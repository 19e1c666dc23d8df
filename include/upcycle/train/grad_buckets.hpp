#pragma once
// The bookkeeping of GradReducer's buckets, apart from any communication: which parameters share a
// bucket, and which buckets may start their all-reduce as backward marks gradients final.
#include <cstddef>
#include <cstdint>
#include <vector>

namespace upcycle {

// Parameters packed into buckets of at most `bucket_bytes` (a parameter larger than that gets a
// bucket of its own), walking them from the last to the first: backward finishes the gradients of
// the layers that ran last in forward first, and parameters are listed in forward order, so bucket
// 0 is the first whose gradients can all be final. Each bucket lists its parameters' indices in
// that walking order. `numels` are element counts, `element_bytes` the bytes of one element.
std::vector<std::vector<std::size_t>> plan_grad_buckets(const std::vector<std::int64_t>& numels,
                                                        std::size_t element_bytes, std::size_t bucket_bytes);

// Which buckets may launch. Buckets launch strictly in order 0, 1, ...: every rank then starts
// the same collectives in the same order even when a parameter gets its gradient on some ranks
// and not on others (an unused expert or router): a bucket waiting for such a parameter holds back
// the buckets after it, until the end of backward launches them all.
class BucketReadiness {
 public:
  // `buckets` as plan_grad_buckets returns them, over parameters 0 .. num_params - 1 (each in
  // exactly one bucket).
  BucketReadiness(const std::vector<std::vector<std::size_t>>& buckets, std::size_t num_params);

  // A new pass: no gradient final, no bucket launched. Allocates nothing.
  void reset();
  // Parameter p's gradient is final. False when it already was in this pass (a second gradient
  // for it: harmless while its bucket has not launched, an error after).
  bool mark_ready(std::size_t p);
  // Whether the next bucket in order has all its gradients final and may launch.
  bool next_ready() const;
  // Takes the next bucket in order (ready or not: the end of backward launches the rest) and
  // returns its index; there must be one left.
  std::size_t take_next();

  std::size_t num_buckets() const { return bucket_size_.size(); }
  std::size_t bucket_of(std::size_t p) const { return bucket_of_[p]; }
  // Buckets taken in this pass (they are 0 .. taken() - 1).
  std::size_t taken() const { return next_; }
  bool launched(std::size_t bucket) const { return bucket < next_; }

 private:
  std::vector<std::size_t> bucket_of_;    // per parameter
  std::vector<std::size_t> bucket_size_;  // parameters per bucket
  std::vector<std::size_t> pending_;      // per bucket: parameters not yet final in this pass
  std::vector<char> ready_;               // per parameter, in this pass
  std::size_t next_ = 0;                  // the next bucket to launch
};

}  // namespace upcycle
