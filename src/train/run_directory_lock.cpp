// The run directory lock (run_directory_lock.hpp): its file, who holds it, when it is stale.
#include "upcycle/train/run_directory_lock.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "upcycle/core/error.hpp"
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

}  // namespace upcycle
