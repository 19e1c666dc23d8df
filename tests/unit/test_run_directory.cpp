// Run-directory ownership (train/run_directory.hpp): the lock (taken, refused while its process
// lives, taken over when stale), the clean-up of killed saves, the comparison of configs, the
// refusal of a fresh run into another run's directory, run.overwrite, and config.ini written once.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "error_of.hpp"
#include "upcycle/core/error.hpp"
#include "upcycle/io/config.hpp"
#include "upcycle/io/hdf5.hpp"
#include "upcycle/train/run_directory.hpp"

using namespace upcycle;
namespace fs = std::filesystem;
using upcycle::testing::error_of;

namespace {

fs::path fresh_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("upcycle_test_run_directory_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  return d;
}

std::string read(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

std::string host() {
  char h[256] = "?";
  ::gethostname(h, sizeof h - 1);
  return h;
}

// A pid that belonged to a process which has exited (and been reaped) just now.
pid_t dead_pid() {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  int status = 0;
  ::waitpid(child, &status, 0);
  return child;
}

Config config(const fs::path& dir, const std::vector<ConfigOverride>& more = {}) {
  std::vector<ConfigOverride> o = {{"run.dir", dir.string()}, {"model.width", "16"}};
  o.insert(o.end(), more.begin(), more.end());
  return parse_config("", "test", o);
}

// A file that reads like a checkpoint of `stage` at `step` (the attributes the refusal names).
void write_checkpoint_stub(const fs::path& p, const std::string& stage, std::int64_t step) {
  fs::create_directories(p.parent_path());
  h5::File f = h5::File::create(p.string());
  h5::write_attribute(f, "/", "stage", stage);
  h5::write_attribute(f, "/", "step", step);
}

}  // namespace

TEST(RunDirectoryLock, IsTakenWithHostAndPidAndReleasedAtTheEnd) {
  const fs::path dir = fresh_dir("taken");
  const fs::path lock_file = dir / kRunLockName;
  {
    RunDirectoryLock lock(dir.string());
    EXPECT_EQ(lock.path(), lock_file.string());
    EXPECT_TRUE(lock.took_over().empty());
    const std::string text = read(lock_file);
    EXPECT_NE(text.find("host=" + host() + "\n"), std::string::npos) << text;
    EXPECT_NE(text.find("pid=" + std::to_string(::getpid()) + "\n"), std::string::npos) << text;
    EXPECT_NE(text.find("started="), std::string::npos) << text;
  }
  EXPECT_FALSE(fs::exists(lock_file));
  fs::remove_all(dir);
}

TEST(RunDirectoryLock, IsRefusedWhileItsProcessLives) {
  const fs::path dir = fresh_dir("held");
  RunDirectoryLock first(dir.string());  // this very process: alive
  const std::string before = read(dir / kRunLockName);
  const std::string msg = error_of([&] { RunDirectoryLock second(dir.string()); });
  EXPECT_NE(msg.find((dir / kRunLockName).string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("pid " + std::to_string(::getpid()) + " on host " + host()), std::string::npos) << msg;
  EXPECT_NE(msg.find("still running"), std::string::npos) << msg;
  EXPECT_EQ(read(dir / kRunLockName), before) << "a refused run touched the lock";
  fs::remove_all(dir);
}

TEST(RunDirectoryLock, ALockFromAnotherHostCountsAsHeldAndTheErrorSaysHowToRemoveIt) {
  const fs::path dir = fresh_dir("elsewhere");
  write(dir / kRunLockName, "host=elsewhere.invalid\npid=4242\nstarted=2020-01-01T00:00:00Z\n");
  const std::string msg = error_of([&] { RunDirectoryLock lock(dir.string()); });
  EXPECT_NE(msg.find("pid 4242 on host elsewhere.invalid"), std::string::npos) << msg;
  EXPECT_NE(msg.find("remove " + (dir / kRunLockName).string()), std::string::npos) << msg;
  EXPECT_TRUE(fs::exists(dir / kRunLockName));
  fs::remove_all(dir);
}

TEST(RunDirectoryLock, AStaleLockOfAGoneProcessIsTakenOver) {
  const fs::path dir = fresh_dir("stale");
  const pid_t gone = dead_pid();
  write(dir / kRunLockName, "host=" + host() + "\npid=" + std::to_string(gone) + "\nstarted=2020-01-01T00:00:00Z\n");
  {
    RunDirectoryLock lock(dir.string());
    EXPECT_NE(lock.took_over().find("pid " + std::to_string(gone)), std::string::npos) << lock.took_over();
    EXPECT_NE(read(dir / kRunLockName).find("pid=" + std::to_string(::getpid()) + "\n"), std::string::npos);
  }
  EXPECT_FALSE(fs::exists(dir / kRunLockName));
  fs::remove_all(dir);
}

TEST(RunDirectoryLock, APidNowOwnedByALaterProcessIsStale) {
  const fs::path dir = fresh_dir("reused");
  // This process's pid, but recorded with another start time: the pid was reused.
  write(dir / kRunLockName, "host=" + host() + "\npid=" + std::to_string(::getpid()) + "\nprocess_start=1\n");
  RunDirectoryLock lock(dir.string());
  EXPECT_FALSE(lock.took_over().empty());
  fs::remove_all(dir);
}

TEST(RunDirectoryLock, ReleasesOnlyItsOwnLockFile) {
  const fs::path dir = fresh_dir("own");
  {
    RunDirectoryLock lock(dir.string());
    fs::remove(dir / kRunLockName);
    write(dir / kRunLockName, "host=elsewhere.invalid\npid=1\n");  // another run's, made meanwhile
  }
  EXPECT_EQ(read(dir / kRunLockName), "host=elsewhere.invalid\npid=1\n");
  fs::remove_all(dir);
}

TEST(RunDirectory, RemovesTheTemporariesOfKilledSavesAndNothingElse) {
  const fs::path dir = fresh_dir("cleanup");
  const fs::path ck = dir / "checkpoints";
  const std::vector<fs::path> leftovers = {ck / "dense" / ".step-0000003.h5.tmp-1234", ck / "moe" / ".latest.h5.tmp-77",
                                           ck / "upcycle" / ".upcycled.h5.tmp-5", dir / "report.json.tmp",
                                           dir / "eval_report.json.tmp", dir / "config.ini.tmp.4321"};
  const std::vector<fs::path> kept = {ck / "dense" / "step-0000003.h5", ck / "dense" / ".notes",
                                      ck / "dense" / ".step-0000004.h5.tmp-12a", dir / "config.ini",
                                      dir / "report.json", dir / "metrics.jsonl", dir / "notes.tmp"};
  for (const auto& p : leftovers)
    if (p.filename() != ".latest.h5.tmp-77") write(p, "x");
  fs::create_directories(ck / "moe");
  fs::create_symlink("step-0000009.h5", ck / "moe" / ".latest.h5.tmp-77");  // a dangling link
  fs::create_symlink("dense/step-0000003.h5", ck / "latest.h5");
  for (const auto& p : kept) write(p, "keep");

  EXPECT_EQ(remove_leftover_temporaries(dir.string()), leftovers.size());
  for (const auto& p : leftovers) EXPECT_FALSE(fs::exists(fs::symlink_status(p))) << p;
  for (const auto& p : kept) EXPECT_TRUE(fs::exists(p)) << p;
  EXPECT_TRUE(fs::is_symlink(ck / "latest.h5"));
  EXPECT_EQ(remove_leftover_temporaries(dir.string()), 0u);
  fs::remove_all(dir);
}

TEST(RunDirectory, ComparesConfigsKeyByKeyIgnoringHowTheRunIsExecuted) {
  const fs::path dir = fresh_dir("compare");
  const Config a = config(dir);
  const Config b = config(dir, {{"model.width", "32"}, {"train.lr", "0.5"}, {"log.level", "debug"},
                                {"log.every", "3"}, {"parallel.backend", "mpi"}, {"run.threads", "3"},
                                {"run.overwrite", "true"}, {"checkpoint.resume", "latest"}});
  const std::vector<std::string> diffs = differing_run_config_keys(a, b);
  ASSERT_EQ(diffs.size(), 2u);
  EXPECT_EQ(diffs[0], "model.width (there 16, here 32)");
  EXPECT_EQ(diffs[1].rfind("train.lr (there ", 0), 0u) << diffs[1];
  EXPECT_NE(diffs[1].find(", here 0.5)"), std::string::npos) << diffs[1];
  EXPECT_TRUE(differing_run_config_keys(a, config(dir, {{"log.level", "warn"}})).empty());
}

TEST(RunDirectory, AFreshRunIntoAnotherConfigsRunIsAUsageErrorListingTheKeys) {
  const fs::path dir = fresh_dir("other");
  fs::create_directories(dir);
  write_config_file(config(dir), (dir / "config.ini").string());
  const std::string before = read(dir / "config.ini");
  const Config other = config(dir, {{"model.width", "32"}});
  try {
    prepare_run_directory(other);
    FAIL() << "no error";
  } catch (const UsageError& e) {
    const std::string msg = e.message();
    EXPECT_NE(msg.find("model.width (there 16, here 32)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("run.overwrite = true"), std::string::npos) << msg;
    EXPECT_NE(msg.find("choose another run.dir"), std::string::npos) << msg;
  }
  EXPECT_EQ(read(dir / "config.ini"), before);
  EXPECT_FALSE(fs::exists(dir / kRunLockName)) << "the lock outlived the refused run";
  // The same config with no checkpoint yet (a run that failed at start) may start again.
  EXPECT_NO_THROW(prepare_run_directory(config(dir)));
  fs::remove_all(dir);
}

TEST(RunDirectory, AFreshRunOverCheckpointsOfItsOwnConfigIsAUsageErrorNamingStageAndStep) {
  const fs::path dir = fresh_dir("same");
  const Config cfg = config(dir);
  fs::create_directories(dir);
  write_config_file(cfg, (dir / "config.ini").string());
  write_checkpoint_stub(dir / "checkpoints" / "dense" / "step-0000003.h5", "dense", 3);
  const std::string msg = error_of([&] { prepare_run_directory(cfg); });
  EXPECT_NE(msg.find("checkpoints up to stage dense step 3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("checkpoint.resume = auto"), std::string::npos) << msg;
  // A resume and a run of stage eval alone (it reads these checkpoints) are not refused.
  EXPECT_NO_THROW(prepare_run_directory(config(dir, {{"checkpoint.resume", "latest"}})));
  EXPECT_NO_THROW(prepare_run_directory(config(dir, {{"run.stages", "eval"}})));
  // Checkpoints without a config.ini: refused too, named.
  fs::remove(dir / "config.ini");
  const std::string bare = error_of([&] { prepare_run_directory(cfg); });
  EXPECT_NE(bare.find("stage dense step 3"), std::string::npos) << bare;
  EXPECT_NE(bare.find("no config.ini"), std::string::npos) << bare;
  fs::remove_all(dir);
}

TEST(RunDirectory, OverwriteRemovesTheEarlierRunFirst) {
  const fs::path dir = fresh_dir("overwrite");
  fs::create_directories(dir);
  write_config_file(config(dir), (dir / "config.ini").string());
  write_checkpoint_stub(dir / "checkpoints" / "dense" / "step-0000003.h5", "dense", 3);
  for (const char* f : {"metrics.jsonl", "report.json", "upcycle_report.json", "eval_report.json", "plots/loss.png"})
    write(dir / f, "old");
  write(dir / "notes.txt", "mine");
  const Config other = config(dir, {{"model.width", "32"}, {"run.overwrite", "true"}});
  EXPECT_NO_THROW(prepare_run_directory(other));
  for (const char* f :
       {"checkpoints", "metrics.jsonl", "report.json", "upcycle_report.json", "eval_report.json", "plots"})
    EXPECT_FALSE(fs::exists(dir / f)) << f;
  EXPECT_TRUE(fs::exists(dir / "notes.txt"));
  // With resume = auto it would contradict itself (with a path or latest it lets the resumed stage
  // replace newer step files: train/resume.hpp); with stage eval alone it would remove what eval reads.
  const Config resumed = config(dir, {{"run.overwrite", "true"}, {"checkpoint.resume", "auto"}});
  EXPECT_NE(error_of([&] { prepare_run_directory(resumed); }).find("set only one"), std::string::npos);
  const Config from_path = config(dir, {{"run.overwrite", "true"}, {"checkpoint.resume", "latest"}});
  EXPECT_EQ(error_of([&] { prepare_run_directory(from_path); }), "");
  const Config eval_only = config(dir, {{"run.overwrite", "true"}, {"run.stages", "eval"}});
  EXPECT_NE(error_of([&] { prepare_run_directory(eval_only); }).find("leave run.overwrite = false"), std::string::npos);
  fs::remove_all(dir);
}

TEST(RunDirectory, AConfigIniThatDoesNotParseIsAUsageError) {
  const fs::path dir = fresh_dir("garbled");
  write(dir / "config.ini", "earlier run\n");
  const std::string msg = error_of([&] { prepare_run_directory(config(dir)); });
  EXPECT_NE(msg.find("not a config of this version"), std::string::npos) << msg;
  EXPECT_EQ(read(dir / "config.ini"), "earlier run\n");
  fs::remove_all(dir);
}

// The only test that records: record_run_config writes once per process.
TEST(RunDirectory, RecordRunConfigWritesTheFirstConfigOnly) {
  const fs::path dir = fresh_dir("record");
  const Config first = config(dir);
  record_run_config(first);
  ASSERT_TRUE(fs::exists(dir / "config.ini"));
  EXPECT_EQ(read(dir / "config.ini"), first.to_ini());
  record_run_config(config(dir, {{"model.width", "32"}}));
  EXPECT_EQ(read(dir / "config.ini"), first.to_ini());
  EXPECT_TRUE(parse_config(read(dir / "config.ini"), "config.ini") == first);
  fs::remove_all(dir);
}
