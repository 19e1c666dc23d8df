// GradReducer's bucket bookkeeping without communication: the bucket plan (parameters walked from
// the last to the first, packed up to the byte limit) and the readiness that launches buckets
// strictly in order as gradients become final.
#include <gtest/gtest.h>

#include <vector>

#include "upcycle/core/error.hpp"
#include "upcycle/train/grad_buckets.hpp"

namespace upcycle {
namespace {

using Plan = std::vector<std::vector<std::size_t>>;

TEST(GradBucketPlan, WalksParametersFromTheLastAndPacksUpToTheLimit) {
  // f32: 100 elements = 400 bytes; limit 1000 bytes.
  EXPECT_EQ(plan_grad_buckets({100, 100, 100, 100, 100}, 4, 1000), (Plan{{4, 3}, {2, 1}, {0}}));
  EXPECT_EQ(plan_grad_buckets({100, 100, 50}, 4, 1000), (Plan{{2, 1, 0}}));  // 1000 bytes exactly fit
  EXPECT_EQ(plan_grad_buckets({10, 1000, 10}, 4, 1000), (Plan{{2}, {1}, {0}}));  // too large: alone
  EXPECT_EQ(plan_grad_buckets({}, 4, 1000), Plan{});
  EXPECT_THROW(plan_grad_buckets({-1}, 4, 1000), Error);
  EXPECT_THROW(plan_grad_buckets({1}, 4, 0), Error);
}

// Buckets {4, 3}, {2, 1}, {0}.
BucketReadiness five_parameters() { return BucketReadiness(plan_grad_buckets({100, 100, 100, 100, 100}, 4, 1000), 5); }

TEST(BucketReadiness, LaunchesABucketOnceAllItsGradientsAreFinal) {
  BucketReadiness r = five_parameters();
  EXPECT_EQ(r.num_buckets(), 3u);
  EXPECT_EQ(r.bucket_of(4), 0u);
  EXPECT_EQ(r.bucket_of(1), 1u);
  EXPECT_EQ(r.bucket_of(0), 2u);
  EXPECT_FALSE(r.next_ready());
  EXPECT_TRUE(r.mark_ready(4));
  EXPECT_FALSE(r.next_ready());
  EXPECT_TRUE(r.mark_ready(3));
  ASSERT_TRUE(r.next_ready());
  EXPECT_EQ(r.take_next(), 0u);
  EXPECT_TRUE(r.launched(0));
  EXPECT_FALSE(r.launched(1));
  EXPECT_FALSE(r.next_ready());
  EXPECT_EQ(r.taken(), 1u);
}

TEST(BucketReadiness, AReadyBucketWaitsForTheOnesBeforeIt) {
  BucketReadiness r = five_parameters();
  // Bucket 1 ({2, 1}) complete first: it may not overtake bucket 0, whose parameter 4 is missing.
  r.mark_ready(2);
  r.mark_ready(1);
  r.mark_ready(3);
  EXPECT_FALSE(r.next_ready());
  r.mark_ready(4);
  ASSERT_TRUE(r.next_ready());
  EXPECT_EQ(r.take_next(), 0u);
  ASSERT_TRUE(r.next_ready());  // bucket 1 was complete already
  EXPECT_EQ(r.take_next(), 1u);
  EXPECT_FALSE(r.next_ready());
}

TEST(BucketReadiness, TheEndOfBackwardTakesBucketsThatNeverBecameReady) {
  BucketReadiness r = five_parameters();
  r.mark_ready(0);  // only the last bucket is complete; parameters 1..4 never get a gradient
  EXPECT_FALSE(r.next_ready());
  EXPECT_EQ(r.take_next(), 0u);
  EXPECT_EQ(r.take_next(), 1u);
  EXPECT_EQ(r.take_next(), 2u);
  EXPECT_THROW(r.take_next(), Error);
}

TEST(BucketReadiness, ASecondGradientIsReportedAndCountedOnce) {
  BucketReadiness r = five_parameters();
  EXPECT_TRUE(r.mark_ready(4));
  EXPECT_FALSE(r.mark_ready(4));  // not counted again: bucket 0 still waits for parameter 3
  EXPECT_FALSE(r.next_ready());
  EXPECT_TRUE(r.mark_ready(3));
  EXPECT_TRUE(r.next_ready());
  EXPECT_THROW(r.mark_ready(5), Error);
}

TEST(BucketReadiness, ResetStartsANewPass) {
  BucketReadiness r = five_parameters();
  for (std::size_t p = 0; p < 5; ++p) r.mark_ready(p);
  while (r.taken() < r.num_buckets()) r.take_next();
  r.reset();
  EXPECT_EQ(r.taken(), 0u);
  EXPECT_FALSE(r.launched(0));
  EXPECT_FALSE(r.next_ready());
  EXPECT_TRUE(r.mark_ready(4));  // ready again only after this pass marks it
  EXPECT_FALSE(r.next_ready());
}

TEST(BucketReadiness, RejectsAPlanThatDoesNotCoverEachParameterOnce) {
  EXPECT_THROW(BucketReadiness(Plan{{0, 1}, {1}}, 2), Error);  // parameter 1 twice
  EXPECT_THROW(BucketReadiness(Plan{{0}}, 2), Error);          // parameter 1 in none
  EXPECT_THROW(BucketReadiness(Plan{{0}, {}}, 1), Error);      // an empty bucket
  EXPECT_THROW(BucketReadiness(Plan{{2}}, 1), Error);          // no such parameter
}

}  // namespace
}  // namespace upcycle
