// log.level: the least severe console message shown (io/log.hpp), on stdout or stderr by severity,
// and through the progress display the trainer uses.
#include <gtest/gtest.h>

#include "error_of.hpp"
#include "upcycle/io/log.hpp"
#include "upcycle/io/metrics.hpp"

using namespace upcycle;

namespace {
struct Captured {
  std::string out, err;
};
template <class F>
Captured capture(F&& f) {
  ::testing::internal::CaptureStdout();
  ::testing::internal::CaptureStderr();
  f();
  Captured c;
  c.out = ::testing::internal::GetCapturedStdout();
  c.err = ::testing::internal::GetCapturedStderr();
  return c;
}
void say_all() {
  log_debug("d-line");
  log_info("i-line");
  log_warn("w-line");
  log_message(LogLevel::error, "e-line");
}
}  // namespace

TEST(Log, LevelFiltersLessSevereMessages) {
  const LogLevel before = log_level();
  set_log_level(LogLevel::debug);
  Captured c = capture(say_all);
  EXPECT_EQ(c.out, "d-line\ni-line\n");
  EXPECT_EQ(c.err, "w-line\ne-line\n");
  set_log_level(LogLevel::warn);
  c = capture(say_all);
  EXPECT_EQ(c.out, "");
  EXPECT_EQ(c.err, "w-line\ne-line\n");
  set_log_level(LogLevel::error);
  c = capture(say_all);
  EXPECT_EQ(c.err, "e-line\n");
  set_log_level(before);
}

TEST(Log, ProgressLinesAreInfoMessages) {
  const LogLevel before = log_level();
  set_log_level(LogLevel::warn);
  Captured c = capture([] {
    Progress p("moe", 10);
    p.update(1, 2.0, 1e-3, 100.0);
    p.message("[moe] eval at step 1");
    p.message("[moe] step 2: skipped", LogLevel::warn);
    p.finish();
  });
  EXPECT_EQ(c.out, "");
  EXPECT_EQ(c.err, "[moe] step 2: skipped\n");
  set_log_level(LogLevel::info);
  c = capture([] {
    Progress p("moe", 10);
    p.message("[moe] eval at step 1");
  });
  EXPECT_EQ(c.out, "[moe] eval at step 1\n");
  set_log_level(before);
}

TEST(Log, ParsesTheConfigValuesAndNamesTheKeyOtherwise) {
  EXPECT_EQ(parse_log_level("debug"), LogLevel::debug);
  EXPECT_EQ(parse_log_level("error"), LogLevel::error);
  const std::string msg = upcycle::testing::error_of([] { parse_log_level("loud"); });
  EXPECT_NE(msg.find("log.level = loud"), std::string::npos) << msg;
}
