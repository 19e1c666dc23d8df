#pragma once
// Metrics as JSON lines (one object per log event, appended to <run dir>/metrics.jsonl) and the
// one-line progress display of rank 0.
#include <chrono>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "upcycle/io/log.hpp"

namespace upcycle {

// Builds one JSON object: JsonObject().add("step", 3).add("loss", 0.5).str()
class JsonObject {
 public:
  JsonObject& add(const std::string& key, double value);
  JsonObject& add(const std::string& key, std::int64_t value);
  JsonObject& add(const std::string& key, int value) { return add(key, static_cast<std::int64_t>(value)); }
  JsonObject& add(const std::string& key, const std::string& value);
  JsonObject& add(const std::string& key, const char* value) { return add(key, std::string(value)); }
  JsonObject& add(const std::string& key, const std::vector<double>& values);
  JsonObject& add(const std::string& key, const std::vector<std::int64_t>& values);
  JsonObject& add_raw(const std::string& key, const std::string& json);  // a nested object/array
  std::string str() const { return "{" + body_ + "}"; }

 private:
  void key(const std::string& k);
  std::string body_;
};

std::string json_escape(const std::string& s);

// Writes o as one line to `path` through a temporary file and a rename (a reader never sees half a
// report). Throws Error naming the file when it cannot be written.
void write_json_file(const std::string& path, const JsonObject& o);

// Appends lines to a file, flushing each so that a killed run keeps what it logged.
class MetricsWriter {
 public:
  MetricsWriter() = default;
  explicit MetricsWriter(const std::string& path);
  bool enabled() const { return out_.is_open(); }
  void write(const JsonObject& o);

 private:
  std::ofstream out_;
  std::string path_;
};

// step/total, loss, lr, tokens/s and ETA on one line; redrawn in place on a terminal, printed as
// plain lines otherwise (logs, CI).
class Progress {
 public:
  Progress(std::string stage, std::int64_t total_steps, std::int64_t first_step = 0);
  void update(std::int64_t step, double loss, double lr, double tokens_per_s);
  // A line that does not get overwritten, shown when `level` is enabled (io/log.hpp). The progress
  // line itself is an info message.
  void message(const std::string& line, LogLevel level = LogLevel::info);
  void finish();

 private:
  std::string stage_;
  std::int64_t total_, first_;
  bool tty_;
  bool dirty_ = false;
  std::chrono::steady_clock::time_point start_;
};

std::string format_duration(double seconds);  // "1h02m", "3m12s", "42s"

}  // namespace upcycle
