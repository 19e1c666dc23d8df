#include "upcycle/train/run_directory.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "upcycle/core/error.hpp"
#include "upcycle/io/hdf5.hpp"
#include "upcycle/io/log.hpp"

namespace upcycle {

namespace fs = std::filesystem;

namespace {

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string this_host() {
  char host[256] = "?";
  ::gethostname(host, sizeof host - 1);
  return host;
}

// Changes at every boot: a lock written before the last boot is stale whatever its pid.
std::string boot_id() { return trimmed(read_text("/proc/sys/kernel/random/boot_id")); }

// When process `pid` started, in clock ticks since boot (/proc/<pid>/stat field 22), 0 when
// unknown: tells a lock's process from a later one that got the same pid.
unsigned long long process_start_ticks(long long pid) {
  const std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat");
  const std::size_t close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(stat.substr(close + 1));
  std::string field;
  for (int i = 3; i <= 22 && fields >> field; ++i)
    if (i == 22) return std::strtoull(field.c_str(), nullptr, 10);
  return 0;
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// The content of a lock file: key=value lines.
struct LockHolder {
  std::string host, started, boot;
  long long pid = 0;
  unsigned long long process_start = 0;

  std::string text() const {
    return "host=" + host + "\npid=" + std::to_string(pid) + "\nstarted=" + started +
           "\nprocess_start=" + std::to_string(process_start) + "\nboot_id=" + boot + "\n";
  }
  std::string describe() const {
    if (pid <= 0) return "an unknown process (the lock file names no pid)";
    return "pid " + std::to_string(pid) + " on host " + host + (started.empty() ? "" : " (started " + started + ")");
  }
};

LockHolder parse_lock(const std::string& text) {
  LockHolder h;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    const std::size_t eq = line.find('=');
    if (eq == std::string::npos) continue;
    const std::string key = line.substr(0, eq), value = line.substr(eq + 1);
    if (key == "host") h.host = value;
    if (key == "pid") h.pid = std::strtoll(value.c_str(), nullptr, 10);
    if (key == "started") h.started = value;
    if (key == "process_start") h.process_start = std::strtoull(value.c_str(), nullptr, 10);
    if (key == "boot_id") h.boot = value;
  }
  return h;
}

enum class Holder { alive, gone, elsewhere };

Holder holder_state(const LockHolder& h) {
  if (h.host != this_host()) return Holder::elsewhere;
  if (h.pid <= 0) return Holder::alive;  // unreadable: never taken over by guesswork
  if (!h.boot.empty() && h.boot != boot_id()) return Holder::gone;
  if (::kill(static_cast<pid_t>(h.pid), 0) != 0 && errno == ESRCH) return Holder::gone;
  // The pid exists (EPERM: another user's): the lock's process unless it started later.
  const unsigned long long started = process_start_ticks(h.pid);
  if (h.process_start != 0 && started != 0 && started != h.process_start) return Holder::gone;
  return Holder::alive;
}

// An exclusive flock on the run directory for the lifetime of the object: serialises the runs of
// one host that take or take over a lock, so two of them cannot both replace one stale lock.
// Where the file system has no flock the lock file's O_EXCL still keeps fresh starts apart.
class DirectoryGuard {
 public:
  explicit DirectoryGuard(const std::string& dir) : fd_(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) {
    if (fd_ >= 0) ::flock(fd_, LOCK_EX);
  }
  ~DirectoryGuard() {
    if (fd_ >= 0) ::close(fd_);  // closing releases the flock
  }
  DirectoryGuard(const DirectoryGuard&) = delete;
  DirectoryGuard& operator=(const DirectoryGuard&) = delete;

 private:
  int fd_;
};

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// ".<name>.tmp-<pid>": what write_atomically and replace_symlink (train/checkpoint.cpp) write
// before their rename.
bool is_checkpoint_temporary(const std::string& name) {
  const std::size_t at = name.rfind(".tmp-");
  return name.size() > 1 && name[0] == '.' && at != std::string::npos && at > 1 && all_digits(name.substr(at + 5));
}

// "<name>.json.tmp" (write_json_file) and "config.ini.tmp.<pid>" (write_config_file).
bool is_run_file_temporary(const std::string& name) {
  const std::string json_tmp = ".json.tmp";
  if (name.size() > json_tmp.size() && name.compare(name.size() - json_tmp.size(), json_tmp.size(), json_tmp) == 0)
    return true;
  const std::string config_tmp = "config.ini.tmp.";
  return name.rfind(config_tmp, 0) == 0 && all_digits(name.substr(config_tmp.size()));
}

bool ignored_in_comparison(const ConfigKey& k) {
  const std::string section = k.section, full = k.full_name();
  return section == "log" || section == "parallel" || full == "run.overwrite" || full == "checkpoint.resume" ||
         full == "run.threads";
}

struct NewestCheckpoint {
  std::string path, stage;
  std::int64_t step = -1;  // -1: the file's attributes could not be read
};

// The most recently written checkpoint file under <dir>/checkpoints (step files, upcycled.h5;
// not the latest.h5 links), with its stage and step.
std::optional<NewestCheckpoint> newest_checkpoint(const fs::path& dir) {
  const fs::path root = dir / "checkpoints";
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return std::nullopt;
  std::optional<fs::path> newest;
  fs::file_time_type newest_time{};
  for (auto it = fs::recursive_directory_iterator(root, fs::directory_options::skip_permission_denied, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    const fs::path& p = it->path();
    if (it->is_symlink(ec) || !it->is_regular_file(ec) || p.extension() != ".h5") continue;
    if (p.filename().string().rfind('.', 0) == 0) continue;
    const auto t = fs::last_write_time(p, ec);
    if (ec) continue;
    if (!newest || t > newest_time || (t == newest_time && p > *newest)) {
      newest = p;
      newest_time = t;
    }
  }
  if (!newest) return std::nullopt;
  NewestCheckpoint c;
  c.path = newest->string();
  try {
    h5::File f = h5::File::open(c.path);
    if (h5::has_attribute(f, "/", "stage")) c.stage = h5::read_string_attribute(f, "/", "stage");
    if (h5::has_attribute(f, "/", "step")) c.step = h5::read_int_attribute(f, "/", "step");
  } catch (const std::exception&) {
    // A damaged file still counts as a checkpoint of the run; it is named without stage and step.
  }
  return c;
}

std::string describe(const NewestCheckpoint& c) {
  if (c.step < 0 || c.stage.empty()) return "a checkpoint (" + c.path + ")";
  return "checkpoints up to stage " + c.stage + " step " + std::to_string(c.step) + " (" + c.path + ")";
}

std::string joined(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : sep) + s;
  return out;
}

// run.overwrite = true: the files of the earlier run go before this one writes its own.
// config.ini stays until this run records its own (record_run_config).
void remove_earlier_run(const fs::path& dir) {
  std::vector<std::string> removed;
  for (const char* name : {"checkpoints", "metrics.jsonl", "report.json", "upcycle_report.json", "eval_report.json",
                           "plots"}) {
    const fs::path p = dir / name;
    std::error_code ec;
    const fs::file_status status = fs::symlink_status(p, ec);
    if (!fs::exists(status)) continue;
    fs::remove_all(p, ec);
    if (ec) UPCYCLE_THROW("run.overwrite = true: cannot remove ", p.string(), ": ", ec.message());
    removed.push_back(std::string(name) + (fs::is_directory(status) ? "/" : ""));
  }
  if (!removed.empty())
    log_info("run.dir " + dir.string() + ": run.overwrite = true: removed the earlier run's " + joined(removed, ", "));
}

// A fresh run into `dir` must not mix its files with another run's: see prepare_run_directory.
void check_directory_holds_no_other_run(const Config& cfg, const fs::path& dir) {
  const fs::path config_path = dir / "config.ini";
  std::error_code ec;
  const bool has_config = fs::exists(config_path, ec);
  const std::optional<NewestCheckpoint> newest = newest_checkpoint(dir);
  if (!has_config && !newest) return;
  const std::string how = "choose another run.dir, resume that run (checkpoint.resume = auto), or set "
                          "run.overwrite = true to replace it";
  if (has_config) {
    std::vector<std::string> diffs;
    try {
      diffs = differing_run_config_keys(load_config(config_path.string()), cfg);
    } catch (const UsageError& e) {
      UPCYCLE_USAGE_ERROR("run.dir ", dir.string(), " holds a config.ini that is not a config of this version (",
                          e.message(), "): choose another run.dir, or set run.overwrite = true to replace that run");
    }
    if (!diffs.empty())
      UPCYCLE_USAGE_ERROR("run.dir ", dir.string(), " holds the run of another config: ", config_path.string(),
                          " differs in ", joined(diffs, ", "), ". To start this config: ", how);
    if (newest)
      UPCYCLE_USAGE_ERROR("run.dir ", dir.string(), " holds ", describe(*newest),
                          " of this config: resume with checkpoint.resume = auto, or set run.overwrite = true to "
                          "start over");
    return;
  }
  UPCYCLE_USAGE_ERROR("run.dir ", dir.string(), " holds ", describe(*newest),
                      " but no config.ini saying which config wrote them: ", how);
}

}  // namespace

RunDirectoryLock::RunDirectoryLock(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) UPCYCLE_THROW("cannot create run directory '", dir, "': ", ec.message());
  path_ = (fs::path(dir) / kRunLockName).string();
  const DirectoryGuard guard(dir);
  for (int attempt = 0; attempt < 2; ++attempt) {
    const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd >= 0) {
      LockHolder me;
      me.host = this_host();
      me.pid = ::getpid();
      me.started = utc_now();
      me.process_start = process_start_ticks(me.pid);
      me.boot = boot_id();
      const std::string text = me.text();
      const bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
      struct stat st {};
      ::fstat(fd, &st);
      ::close(fd);
      device_ = st.st_dev;
      inode_ = st.st_ino;
      content_ = text;
      if (!written) UPCYCLE_THROW("cannot write the lock file ", path_, ": ", std::strerror(errno));
      return;
    }
    if (errno != EEXIST) UPCYCLE_THROW("cannot create the lock file ", path_, ": ", std::strerror(errno));
    const LockHolder holder = parse_lock(read_text(path_));
    switch (holder_state(holder)) {
      case Holder::alive:
        UPCYCLE_THROW("run.dir ", dir, " is in use: its lock ", path_, " is held by ", holder.describe(),
                      ", which is still running; wait for it to end or choose another run.dir");
      case Holder::elsewhere:
        UPCYCLE_THROW("run.dir ", dir, " is in use: its lock ", path_, " is held by ", holder.describe(),
                      ", which cannot be checked from host ", this_host(),
                      "; if that run has ended (killed), remove ", path_, " and start again");
      case Holder::gone:
        took_over_ = holder.describe();
        log_warn("run.dir " + dir + ": taking over the stale lock " + path_ + " of " + took_over_ +
                 ": that process no longer exists (killed?)");
        if (::unlink(path_.c_str()) != 0 && errno != ENOENT)
          UPCYCLE_THROW("cannot remove the stale lock file ", path_, ": ", std::strerror(errno));
        break;
    }
  }
  UPCYCLE_THROW("cannot take the lock ", path_, " of run.dir ", dir);
}

RunDirectoryLock::~RunDirectoryLock() {
  // Only the file this object made, never a lock that another run took over in the meantime
  // (which may have got the same inode number: the content names the process).
  struct stat st {};
  if (::stat(path_.c_str(), &st) == 0 && st.st_dev == device_ && st.st_ino == inode_ && read_text(path_) == content_)
    ::unlink(path_.c_str());
}

std::size_t remove_leftover_temporaries(const std::string& dir) {
  std::vector<fs::path> doomed;
  std::error_code ec;
  const fs::path root = fs::path(dir) / "checkpoints";
  if (fs::is_directory(root, ec))
    for (auto it = fs::recursive_directory_iterator(root, fs::directory_options::skip_permission_denied, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
      if (is_checkpoint_temporary(it->path().filename().string()) && !it->is_directory(ec))
        doomed.push_back(it->path());
  if (fs::is_directory(dir, ec))
    for (const auto& e : fs::directory_iterator(dir, ec))
      if (is_run_file_temporary(e.path().filename().string()) && !e.is_directory(ec)) doomed.push_back(e.path());
  std::size_t removed = 0;
  for (const auto& p : doomed) {
    if (fs::remove(p, ec)) ++removed;
    if (ec) UPCYCLE_THROW("cannot remove the leftover temporary file ", p.string(), ": ", ec.message());
  }
  return removed;
}

std::vector<std::string> differing_run_config_keys(const Config& existing, const Config& wanted) {
  std::vector<std::string> out;
  for (const ConfigKey& k : config_schema()) {
    if (ignored_in_comparison(k)) continue;
    const std::string key = k.full_name();
    const std::string there = existing.value_text(key), here = wanted.value_text(key);
    if (there != here)
      out.push_back(key + " (there " + (there.empty() ? "empty" : there) + ", here " + (here.empty() ? "empty" : here) +
                    ")");
  }
  return out;
}

std::unique_ptr<RunDirectoryLock> prepare_run_directory(const Config& cfg) {
  const std::string& dir = cfg.get_string("run.dir");
  if (dir.empty()) UPCYCLE_USAGE_ERROR("run.dir is empty, but upcycle_train writes its outputs there: set [run] dir");
  auto lock = std::make_unique<RunDirectoryLock>(dir);
  if (const std::size_t removed = remove_leftover_temporaries(dir))
    log_info("run.dir " + dir + ": removed " + std::to_string(removed) +
             " temporary file(s) left behind by interrupted saves");
  const std::string& resume = cfg.get_string("checkpoint.resume");
  const bool overwrite = cfg.get_bool("run.overwrite");
  if (!resume.empty()) {
    // With a checkpoint path or latest, run.overwrite lets the resumed stage replace the step files
    // newer than its checkpoint (train/resume.hpp); auto always continues from the newest one.
    if (overwrite && resume == "auto")
      UPCYCLE_USAGE_ERROR("run.overwrite = true (", cfg.origin("run.overwrite"),
                          ") starts the run over, but checkpoint.resume = auto (", cfg.origin("checkpoint.resume"),
                          ") continues it: set only one of them");
    return lock;
  }
  const auto& stages = cfg.get_string_list("run.stages");
  const bool eval_only = std::all_of(stages.begin(), stages.end(), [](const std::string& s) { return s == "eval"; });
  if (overwrite) {
    if (eval_only)
      UPCYCLE_USAGE_ERROR("run.overwrite = true (", cfg.origin("run.overwrite"), ") would remove the checkpoints of ",
                          dir, " that stage eval reads, and a run of stage eval alone writes none to replace them: "
                          "leave run.overwrite = false");
    remove_earlier_run(dir);
    return lock;
  }
  if (!eval_only) check_directory_holds_no_other_run(cfg, dir);
  return lock;
}

void record_run_config(const Config& cfg) {
  static std::atomic<bool> recorded{false};
  const std::string& dir = cfg.get_string("run.dir");
  if (dir.empty() || recorded.load()) return;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) UPCYCLE_THROW("cannot create run directory '", dir, "': ", ec.message());
  write_config_file(cfg, (fs::path(dir) / "config.ini").string());
  recorded = true;
}

}  // namespace upcycle
