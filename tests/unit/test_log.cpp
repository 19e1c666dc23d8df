// log.level: the least severe console message shown (io/log.hpp), on stdout or stderr by severity,
// and through the progress display the trainer uses; whether stdout is a terminal a person watches
// (plain lines otherwise: files, Slurm, mpirun with its output redirected); metrics as strict JSON.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <utility>
#include <vector>

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
    Progress p("moe", 10, 0, true);
    p.update(1, 2.0, 1e-3, 100.0);
    p.message("[moe] eval at step 1");
    p.message("[moe] step 2: skipped", LogLevel::warn);
    p.finish();
  });
  EXPECT_EQ(c.out, "");
  EXPECT_EQ(c.err, "[moe] step 2: skipped\n");
  set_log_level(LogLevel::info);
  c = capture([] {
    Progress p("moe", 10, 0, false);
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

TEST(Log, ProgressWithoutRedrawPrintsOnePlainLinePerUpdate) {
  const LogLevel before = log_level();
  set_log_level(LogLevel::info);
  Captured c = capture([] {
    Progress p("dense", 10, 0, false);
    p.update(1, 2.0, 1e-3, 100.0);
    p.message("[dense] eval at step 1");
    p.update(2, 1.5, 1e-3, 100.0);
    p.finish();
  });
  EXPECT_EQ(c.out.find('\r'), std::string::npos) << c.out;
  EXPECT_EQ(c.out.find('\033'), std::string::npos) << c.out;
  ASSERT_EQ(std::count(c.out.begin(), c.out.end(), '\n'), 3) << c.out;
  EXPECT_EQ(c.out.rfind("[dense] step 1/10  loss 2.0000", 0), 0u) << c.out;
  EXPECT_NE(c.out.find("\n[dense] eval at step 1\n[dense] step 2/10  loss 1.5000"), std::string::npos) << c.out;
  // Redrawn in place: the terminal's carriage return and erase-line before each update, and a
  // message starts on a line of its own.
  c = capture([] {
    Progress p("dense", 10, 0, true);
    p.update(1, 2.0, 1e-3, 100.0);
    p.message("[dense] eval at step 1");
    p.update(2, 1.5, 1e-3, 100.0);
    p.finish();
  });
  EXPECT_EQ(c.out.rfind("\r\033[K[dense] step 1/10", 0), 0u) << c.out;
  EXPECT_NE(c.out.find("\n[dense] eval at step 1\n\r\033[K[dense] step 2/10"), std::string::npos) << c.out;
  EXPECT_EQ(c.out.back(), '\n');
  set_log_level(before);
}

TEST(Log, ProgressModesOfTheConfigKey) {
  EXPECT_TRUE(progress_redraws("redraw"));
  EXPECT_FALSE(progress_redraws("lines"));
  EXPECT_EQ(progress_redraws("auto"), stdout_is_interactive());
  const std::string msg = upcycle::testing::error_of([] { progress_redraws("off"); });
  EXPECT_NE(msg.find("log.progress = off"), std::string::npos) << msg;
}

namespace {

// A pseudo-terminal pair; `slave` is what a process that writes to a terminal holds as stdout.
struct Pty {
  int master = -1, slave = -1;
  Pty() {
    master = ::posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0 || ::grantpt(master) != 0 || ::unlockpt(master) != 0) return;
    if (const char* name = ::ptsname(master)) slave = ::open(name, O_RDWR | O_NOCTTY);
  }
  ~Pty() {
    if (slave >= 0) ::close(slave);
    if (master >= 0) ::close(master);
  }
  bool ok() const { return slave >= 0; }
};

using Env = std::vector<std::pair<std::string, std::string>>;

// stdout_is_interactive() in a process tree like a launcher's: a "launcher" process whose stdout
// is `launcher_out`, below it `wrappers` processes and then the "rank", all with stdout
// `rank_out` and the environment `env` (the launcher variables of the test's own environment
// removed). Returns the rank's answer.
bool interactive_in(int launcher_out, int rank_out, int wrappers, const Env& env) {
  int answer_pipe[2];
  if (::pipe(answer_pipe) != 0) ADD_FAILURE() << "pipe";
  const pid_t launcher = ::fork();
  if (launcher == 0) {
    ::close(answer_pipe[0]);
    ::dup2(launcher_out, STDOUT_FILENO);
    const pid_t below = ::fork();
    if (below == 0) {
      ::dup2(rank_out, STDOUT_FILENO);
      for (const char* v : {"OMPI_COMM_WORLD_SIZE", "SLURM_JOB_ID", "SLURM_STEP_ID"}) ::unsetenv(v);
      for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
      for (int w = 0; w < wrappers; ++w) {  // a wrapper starts the next level and waits for it
        const pid_t next = ::fork();
        if (next != 0) {
          ::waitpid(next, nullptr, 0);
          ::_exit(0);
        }
      }
      const char answer = stdout_is_interactive() ? '1' : '0';
      if (::write(answer_pipe[1], &answer, 1) != 1) ::_exit(1);
      ::_exit(0);
    }
    ::waitpid(below, nullptr, 0);
    ::_exit(0);
  }
  ::close(answer_pipe[1]);
  char answer = '?';
  if (::read(answer_pipe[0], &answer, 1) != 1) answer = '?';
  ::close(answer_pipe[0]);
  ::waitpid(launcher, nullptr, 0);
  EXPECT_NE(answer, '?') << "the rank process gave no answer";
  return answer == '1';
}

}  // namespace

TEST(Log, StdoutIsInteractiveOnlyOnATerminalAPersonWatches) {
  Pty rank_tty, user_tty;
  if (!rank_tty.ok() || !user_tty.ok()) GTEST_SKIP() << "no pseudo-terminals here";
  const std::string log_path = (std::filesystem::temp_directory_path() /
                                ("upcycle_test_log_stdout_" + std::to_string(::getpid()))).string();
  const int log_file = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(log_file, 0);
  const Env ompi = {{"OMPI_COMM_WORLD_SIZE", "2"}};

  // Started by hand: a terminal is one, a file is not; Slurm's output is a log even on a pty.
  EXPECT_TRUE(interactive_in(user_tty.slave, rank_tty.slave, 0, {}));
  EXPECT_FALSE(interactive_in(user_tty.slave, log_file, 0, {}));
  EXPECT_FALSE(interactive_in(user_tty.slave, rank_tty.slave, 0, {{"SLURM_JOB_ID", "17"}}));
  EXPECT_FALSE(interactive_in(user_tty.slave, rank_tty.slave, 0, {{"SLURM_STEP_ID", "0"}}));
  // A rank of mpirun has a pty of its own: interactive only when mpirun's stdout is a terminal.
  EXPECT_TRUE(interactive_in(user_tty.slave, rank_tty.slave, 0, ompi));
  EXPECT_FALSE(interactive_in(log_file, rank_tty.slave, 0, ompi));
  // ... also when the rank runs below a wrapper that shares its pty (mpirun bash -c '...').
  EXPECT_TRUE(interactive_in(user_tty.slave, rank_tty.slave, 2, ompi));
  EXPECT_FALSE(interactive_in(log_file, rank_tty.slave, 2, ompi));
  ::close(log_file);
  std::filesystem::remove(log_path);
}

namespace {
// Parses every line of `path` with python's json module, refusing NaN, Infinity and -Infinity,
// and runs `checks` (python statements over the list `rows` of parsed lines).
int strict_python_check(const std::string& path, const std::string& checks) {
  const std::string script = path + ".py";
  std::ofstream(script) << "import json, sys\n"
                           "def refuse(c):\n"
                           "    raise ValueError('not JSON: ' + c)\n"
                           "rows = [json.loads(l, parse_constant=refuse)\n"
                           "        for l in open(sys.argv[1], encoding='utf-8')]\n"
                        << checks;
  const int status = std::system(("/usr/bin/python3 '" + script + "' '" + path + "'").c_str());
  std::filesystem::remove(script);
  return status;
}
}  // namespace

TEST(Metrics, NonFiniteNumbersBecomeNullWithTheReasonBeside) {
  const double inf = std::numeric_limits<double>::infinity(), nan = std::nan("");
  EXPECT_EQ(JsonObject().add("loss", nan).str(), R"({"loss": null, "loss_nonfinite": "nan"})");
  EXPECT_EQ(JsonObject().add("g", inf).add("step", 3).str(), R"({"g": null, "g_nonfinite": "inf", "step": 3})");
  EXPECT_EQ(JsonObject().add("g", -inf).str(), R"({"g": null, "g_nonfinite": "-inf"})");
  EXPECT_EQ(JsonObject().add("p", std::vector<double>{0.5, nan, -inf, nan}).str(),
            R"({"p": [0.5, null, null, null], "p_nonfinite": "nan,-inf"})");
  EXPECT_EQ(JsonObject().add("p", std::vector<double>{0.25, 1e300}).str(), R"({"p": [0.25, 1e+300]})");
  EXPECT_EQ(JsonObject().add("x", 0.1).str(), R"({"x": 0.1})");
}

TEST(Metrics, StringsAreEscapedForStrictJson) {
  EXPECT_EQ(json_escape("a\"b\\c\nd\te\rf"), "a\\\"b\\\\c\\nd\\te\\rf");
  EXPECT_EQ(json_escape(std::string("\x01\x1f", 2)), "\\u0001\\u001f");
  EXPECT_EQ(json_escape(std::string("\0", 1)), "\\u0000");
  EXPECT_EQ(json_escape("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"), "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
  // Not UTF-8: a Latin-1 byte, a cut sequence, an overlong form, a surrogate.
  EXPECT_EQ(json_escape("caf\xe9"), "caf\\ufffd");
  EXPECT_EQ(json_escape("\xe2\x82"), "\\ufffd\\ufffd");
  EXPECT_EQ(json_escape("\xc0\xaf"), "\\ufffd\\ufffd");
  EXPECT_EQ(json_escape("\xed\xa0\x80"), "\\ufffd\\ufffd\\ufffd");
}

TEST(Metrics, EveryLineParsesWithAStrictJsonParser) {
  const double inf = std::numeric_limits<double>::infinity(), nan = std::nan("");
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("upcycle_test_metrics_" + std::to_string(::getpid()) + ".jsonl")).string();
  std::filesystem::remove(path);
  {
    MetricsWriter w(path);
    w.write(JsonObject().add("event", "train").add("step", 1).add("loss", nan).add("lr", 1e-3).add("grad_norm", inf));
    w.write(JsonObject().add("event", "eval").add("val_loss", -inf).add("probs", std::vector<double>{0.5, nan, inf}));
    const std::string note =
        std::string("quote \" backslash \\ newline \n tab \t bell \x07 nul ") + std::string("\0", 1);
    w.write(JsonObject().add("note", note).add("path", "caf\xe9/\xc3\xa9.h5").add("key \"quoted\"", 1.5));
  }
  const int status = strict_python_check(path,
      "assert len(rows) == 3, rows\n"
      "t, e, s = rows\n"
      "assert t['loss'] is None and t['loss_nonfinite'] == 'nan', t\n"
      "assert t['grad_norm'] is None and t['grad_norm_nonfinite'] == 'inf', t\n"
      "assert t['lr'] == 1e-3 and t['step'] == 1, t\n"
      "assert e['val_loss'] is None and e['val_loss_nonfinite'] == '-inf', e\n"
      "assert e['probs'] == [0.5, None, None] and e['probs_nonfinite'] == 'nan,inf', e\n"
      "assert s['note'] == 'quote \" backslash \\\\ newline \\n tab \\t bell \\x07 nul \\x00', repr(s['note'])\n"
      "assert s['path'] == 'caf\\ufffd/\\u00e9.h5', repr(s['path'])\n"
      "assert s['key \"quoted\"'] == 1.5, s\n");
  EXPECT_EQ(status, 0) << "python's strict parse of " << path << " failed (above)";
  std::filesystem::remove(path);
}
