#pragma once
// One run at a time in a run directory (docs/training.md "Run directory").
#include <string>

namespace upcycle {

// <dir>/.upcycle.lock, made with O_CREAT | O_EXCL and holding the host, pid and start time of
// the run that owns the directory; removed by the destructor (also when the run fails). After a
// kill -9 it stays behind and is found stale by the next run: on the same host, with its process
// gone (kill(pid, 0) gives ESRCH, or the pid now belongs to a process started later, or the host
// rebooted since), it is taken over with a warning. A lock written on another host cannot be
// checked and counts as held; the error says how to remove it.
class RunDirectoryLock {
 public:
  // Creates `dir` when missing and takes its lock. Throws Error (a run-time failure) naming the
  // lock file, the host and the pid that hold it.
  explicit RunDirectoryLock(const std::string& dir);
  ~RunDirectoryLock();
  RunDirectoryLock(const RunDirectoryLock&) = delete;
  RunDirectoryLock& operator=(const RunDirectoryLock&) = delete;

  const std::string& path() const { return path_; }
  // The holder of a stale lock that was taken over ("pid 42 on host x, started ..."), else empty.
  const std::string& took_over() const { return took_over_; }

 private:
  std::string path_;
  std::string took_over_;
  std::string content_;                        // what this object wrote into the lock file
  unsigned long long device_ = 0, inode_ = 0;  // and where
};

// The file name of the lock inside a run directory.
inline constexpr const char* kRunLockName = ".upcycle.lock";

}  // namespace upcycle
