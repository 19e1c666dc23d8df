#pragma once
// Console messages with a severity, filtered by log.level (the least severe level shown):
//   debug  per-rank details (each rank's host and device at start-up)
//   info   progress, evaluations, what a stage did (the default)
//   warn   something the run worked around (a skipped step, a teacher started from the student)
//   error  failures (upcycle_train prints them whatever the level)
// debug and info go to stdout, warn and error to stderr. The level is process-wide: upcycle_train
// sets it once from the config before any stage runs; library users may leave the default.
#include <string>

namespace upcycle {

enum class LogLevel { debug = 0, info = 1, warn = 2, error = 3 };

// "debug" | "info" | "warn" | "error"; anything else throws UsageError naming log.level.
LogLevel parse_log_level(const std::string& name);
void set_log_level(LogLevel level);
LogLevel log_level();
bool log_enabled(LogLevel level);

// Prints one line when `level` is enabled (no rank filtering: callers decide who speaks).
void log_message(LogLevel level, const std::string& line);
inline void log_debug(const std::string& line) { log_message(LogLevel::debug, line); }
inline void log_info(const std::string& line) { log_message(LogLevel::info, line); }
inline void log_warn(const std::string& line) { log_message(LogLevel::warn, line); }

// Whether this process's stdout is an interactive terminal a person watches: a tty, not under
// Slurm (SLURM_JOB_ID / SLURM_STEP_ID set), and under Open MPI's mpirun (OMPI_COMM_WORLD_SIZE
// set) only when mpirun's own stdout is a terminal too (Open MPI gives ranks a pty even when
// mpirun's output goes to a file): check the parent process's fd 1 (/proc/<ppid>/fd/1).
bool stdout_is_interactive();

}  // namespace upcycle
