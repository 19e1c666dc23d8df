#include "upcycle/io/metrics.hpp"

#include "upcycle/io/log.hpp"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "upcycle/core/error.hpp"

namespace upcycle {

std::string json_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size() + 2);
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out;
}

namespace {
std::string number(double v) {
  if (!std::isfinite(v)) return std::isnan(v) ? "NaN" : (v > 0 ? "Infinity" : "-Infinity");
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}
}  // namespace

void JsonObject::key(const std::string& k) {
  if (!body_.empty()) body_ += ", ";
  body_ += "\"" + json_escape(k) + "\": ";
}

JsonObject& JsonObject::add(const std::string& k, double v) {
  key(k);
  body_ += number(v);
  return *this;
}

JsonObject& JsonObject::add(const std::string& k, std::int64_t v) {
  key(k);
  body_ += std::to_string(v);
  return *this;
}

JsonObject& JsonObject::add(const std::string& k, const std::string& v) {
  key(k);
  body_ += "\"" + json_escape(v) + "\"";
  return *this;
}

JsonObject& JsonObject::add(const std::string& k, const std::vector<double>& values) {
  key(k);
  body_ += "[";
  for (std::size_t i = 0; i < values.size(); ++i) body_ += (i ? ", " : "") + number(values[i]);
  body_ += "]";
  return *this;
}

JsonObject& JsonObject::add(const std::string& k, const std::vector<std::int64_t>& values) {
  key(k);
  body_ += "[";
  for (std::size_t i = 0; i < values.size(); ++i) body_ += (i ? ", " : "") + std::to_string(values[i]);
  body_ += "]";
  return *this;
}

JsonObject& JsonObject::add_raw(const std::string& k, const std::string& json) {
  key(k);
  body_ += json;
  return *this;
}

void write_json_file(const std::string& path, const JsonObject& o) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << o.str() << "\n";
    UPCYCLE_CHECK(out.good(), tmp, ": cannot write");
  }
  UPCYCLE_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "cannot rename ", tmp, " to ", path);
}

MetricsWriter::MetricsWriter(const std::string& path) : out_(path, std::ios::app), path_(path) {
  UPCYCLE_CHECK(out_.is_open(), path, ": cannot open the metrics file for writing");
}

void MetricsWriter::write(const JsonObject& o) {
  if (!out_.is_open()) return;
  out_ << o.str() << '\n';
  out_.flush();
  UPCYCLE_CHECK(out_.good(), path_, ": writing metrics failed (disk full?)");
}

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const auto total = static_cast<long long>(s + 0.5);
  char buf[32];
  if (total >= 3600)
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", total / 3600, (total % 3600) / 60);
  else if (total >= 60)
    std::snprintf(buf, sizeof buf, "%lldm%02llds", total / 60, total % 60);
  else
    std::snprintf(buf, sizeof buf, "%llds", total);
  return buf;
}

Progress::Progress(std::string stage, std::int64_t total_steps, std::int64_t first_step)
    : stage_(std::move(stage)), total_(total_steps), first_(first_step), tty_(::isatty(STDOUT_FILENO) != 0),
      start_(std::chrono::steady_clock::now()) {}

void Progress::update(std::int64_t step, double loss, double lr, double tokens_per_s) {
  if (!log_enabled(LogLevel::info)) return;
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double done = static_cast<double>(step - first_);
  const double eta = done > 0 ? elapsed / done * static_cast<double>(total_ - step) : NAN;
  char buf[256];
  std::snprintf(buf, sizeof buf, "[%s] step %lld/%lld  loss %.4f  lr %.2e  %.0f tok/s  ETA %s", stage_.c_str(),
                static_cast<long long>(step), static_cast<long long>(total_), loss, lr, tokens_per_s,
                format_duration(eta).c_str());
  if (tty_) {
    std::cout << "\r\033[K" << buf << std::flush;
    dirty_ = true;
  } else {
    std::cout << buf << std::endl;
  }
}

void Progress::message(const std::string& line, LogLevel level) {
  if (!log_enabled(level)) return;
  if (dirty_) std::cout << "\n";
  dirty_ = false;
  log_message(level, line);
}

void Progress::finish() {
  if (dirty_) std::cout << std::endl;
  dirty_ = false;
}

}  // namespace upcycle
