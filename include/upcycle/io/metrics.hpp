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
// The text is strict JSON (RFC 8259), so any parser reads it: a non-finite number is written as
// null and the object gains "<key>_nonfinite": "nan" | "inf" | "-inf" saying which it was (for a
// vector: null elements and one "<key>_nonfinite" field naming the kinds in order of first
// appearance, e.g. "nan" or "nan,-inf"); strings are escaped, bytes that are not UTF-8 become
// U+FFFD.
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

// The body of a JSON string (without the quotes) for s.
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

// log.progress = auto | redraw | lines: whether the progress line is redrawn in place (auto:
// stdout_is_interactive(), io/log.hpp). Any other value throws UsageError naming log.progress
// (off shows no progress at all: the caller makes no Progress).
bool progress_redraws(const std::string& log_progress);

// step/total, loss, lr, tokens/s and ETA on one line; with `redraw` rewritten in place (a person
// at a terminal), else one plain line per update, without carriage returns or escape codes
// (logs, CI, mpirun with its output in a file, Slurm).
class Progress {
 public:
  Progress(std::string stage, std::int64_t total_steps, std::int64_t first_step, bool redraw);
  void update(std::int64_t step, double loss, double lr, double tokens_per_s);
  // A line that does not get overwritten, shown when `level` is enabled (io/log.hpp). The progress
  // line itself is an info message.
  void message(const std::string& line, LogLevel level = LogLevel::info);
  void finish();

 private:
  std::string stage_;
  std::int64_t total_, first_;
  bool redraw_;
  bool dirty_ = false;
  std::chrono::steady_clock::time_point start_;
};

std::string format_duration(double seconds);  // "1h02m", "3m12s", "42s"

}  // namespace upcycle
