#include "upcycle/io/log.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>

#include "upcycle/core/error.hpp"

namespace upcycle {

namespace {
std::atomic<int> g_level{static_cast<int>(LogLevel::info)};

bool env_set(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0';
}

// The parent of process `pid` from /proc/<pid>/stat ("pid (comm) state ppid ..."; comm may hold
// spaces and parentheses, so the fields are read after its last ')'); 0 when unknown.
pid_t parent_of(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const std::size_t close = text.rfind(')');
  if (close == std::string::npos || close + 4 >= text.size()) return 0;
  return static_cast<pid_t>(std::strtol(text.c_str() + close + 4, nullptr, 10));
}

// Whether `path` (a /proc/<pid>/fd/<n> link) is a terminal. Only character devices are opened
// (O_NOCTTY: never becomes our controlling terminal), so no file, pipe or socket is touched.
bool is_terminal(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISCHR(st.st_mode)) return false;
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return false;
  const bool tty = ::isatty(fd) != 0;
  ::close(fd);
  return tty;
}

// Under Open MPI 4.1 (ORTE) a rank's stdout is a pty that its launcher opened for it: mpirun
// itself forks the ranks of its own node (their parent process is mpirun), and on other nodes an
// orted daemon that mpirun started through ssh or the batch system forks them. The launcher reads
// the pty and forwards the text: mpirun writes it to its own stdout, an orted sends it to mpirun.
// So the launcher's fd 1 says where the text ends up: for mpirun the user's terminal, a file or a
// pipe; for an orted its ssh channel or /dev/null, never a terminal, which is right, since a remote
// rank's output reaches the user only through mpirun, whose terminal cannot be seen from there.
// A wrapper between launcher and rank (`mpirun bash -c '...'`) shares the rank's pty: ancestors
// whose fd 1 is this process's own terminal are passed over up to the launcher.
bool launcher_stdout_is_terminal() {
  struct stat own {};
  if (::fstat(STDOUT_FILENO, &own) != 0) return false;
  pid_t pid = ::getppid();
  for (int depth = 0; depth < 16 && pid > 1; ++depth) {
    const std::string fd1 = "/proc/" + std::to_string(pid) + "/fd/1";
    struct stat st {};
    if (::stat(fd1.c_str(), &st) != 0) return false;  // gone or not ours to inspect: assume a log
    const bool shares_our_pty = S_ISCHR(st.st_mode) && st.st_rdev == own.st_rdev;
    if (!shares_our_pty) return is_terminal(fd1);
    pid = parent_of(pid);
  }
  return false;
}
}  // namespace

bool stdout_is_interactive() {
  if (::isatty(STDOUT_FILENO) == 0) return false;
  if (env_set("SLURM_JOB_ID") || env_set("SLURM_STEP_ID")) return false;
  if (env_set("OMPI_COMM_WORLD_SIZE")) return launcher_stdout_is_terminal();
  return true;
}

LogLevel parse_log_level(const std::string& name) {
  if (name == "debug") return LogLevel::debug;
  if (name == "info") return LogLevel::info;
  if (name == "warn") return LogLevel::warn;
  if (name == "error") return LogLevel::error;
  UPCYCLE_USAGE_ERROR("log.level = ", name, ": expected one of debug, info, warn, error");
}

void set_log_level(LogLevel level) { g_level = static_cast<int>(level); }
LogLevel log_level() { return static_cast<LogLevel>(g_level.load()); }
bool log_enabled(LogLevel level) { return static_cast<int>(level) >= g_level.load(); }

void log_message(LogLevel level, const std::string& line) {
  if (!log_enabled(level)) return;
  if (level >= LogLevel::warn) {
    std::cerr << line << std::endl;
  } else {
    std::cout << line << std::endl;
  }
}

}  // namespace upcycle
