#include "upcycle/train/grad_buckets.hpp"

#include <algorithm>

#include "upcycle/core/error.hpp"

namespace upcycle {

std::vector<std::vector<std::size_t>> plan_grad_buckets(const std::vector<std::int64_t>& numels,
                                                        std::size_t element_bytes, std::size_t bucket_bytes) {
  UPCYCLE_CHECK(element_bytes > 0 && bucket_bytes > 0, "plan_grad_buckets: element and bucket sizes must be > 0");
  std::vector<std::vector<std::size_t>> buckets;
  std::vector<std::size_t> current;
  std::size_t filled = 0;  // bytes in `current`
  for (std::size_t i = numels.size(); i-- > 0;) {
    UPCYCLE_CHECK(numels[i] >= 0, "plan_grad_buckets: parameter ", i, " has ", numels[i], " elements");
    const std::size_t bytes = static_cast<std::size_t>(numels[i]) * element_bytes;
    if (!current.empty() && filled + bytes > bucket_bytes) {
      buckets.push_back(std::move(current));
      current.clear();
      filled = 0;
    }
    current.push_back(i);
    filled += bytes;
  }
  if (!current.empty()) buckets.push_back(std::move(current));
  return buckets;
}

BucketReadiness::BucketReadiness(const std::vector<std::vector<std::size_t>>& buckets, std::size_t num_params)
    : bucket_of_(num_params, buckets.size()), bucket_size_(buckets.size()), pending_(buckets.size()),
      ready_(num_params, 0) {
  for (std::size_t b = 0; b < buckets.size(); ++b) {
    UPCYCLE_CHECK(!buckets[b].empty(), "BucketReadiness: bucket ", b, " is empty");
    for (std::size_t p : buckets[b]) {
      UPCYCLE_CHECK(p < num_params, "BucketReadiness: bucket ", b, " names parameter ", p, " of ", num_params);
      UPCYCLE_CHECK(bucket_of_[p] == buckets.size(), "BucketReadiness: parameter ", p, " is in buckets ",
                    bucket_of_[p], " and ", b);
      bucket_of_[p] = b;
    }
    bucket_size_[b] = buckets[b].size();
  }
  for (std::size_t p = 0; p < num_params; ++p)
    UPCYCLE_CHECK(bucket_of_[p] < buckets.size(), "BucketReadiness: parameter ", p, " is in no bucket");
  reset();
}

void BucketReadiness::reset() {
  std::copy(bucket_size_.begin(), bucket_size_.end(), pending_.begin());
  std::fill(ready_.begin(), ready_.end(), 0);
  next_ = 0;
}

bool BucketReadiness::mark_ready(std::size_t p) {
  UPCYCLE_CHECK(p < ready_.size(), "BucketReadiness: parameter ", p, " of ", ready_.size());
  if (ready_[p]) return false;
  ready_[p] = 1;
  --pending_[bucket_of_[p]];
  return true;
}

bool BucketReadiness::next_ready() const { return next_ < pending_.size() && pending_[next_] == 0; }

std::size_t BucketReadiness::take_next() {
  UPCYCLE_CHECK(next_ < pending_.size(), "BucketReadiness: all ", pending_.size(), " buckets are taken");
  return next_++;
}

}  // namespace upcycle
