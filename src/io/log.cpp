#include "upcycle/io/log.hpp"

#include <atomic>
#include <iostream>

#include "upcycle/core/error.hpp"

namespace upcycle {

namespace {
std::atomic<int> g_level{static_cast<int>(LogLevel::info)};
}  // namespace

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
