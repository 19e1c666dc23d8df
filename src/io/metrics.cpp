#include "upcycle/io/metrics.hpp"

#include "upcycle/io/log.hpp"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "upcycle/core/error.hpp"

namespace upcycle {

namespace {

// The length of the well-formed UTF-8 sequence that starts at s[i] (RFC 3629: no overlong forms,
// no surrogates, nothing above U+10FFFF), or 0 when the bytes there are not one.
std::size_t utf8_sequence_length(const std::string& s, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = byte(i);
  if (c < 0x80) return 1;
  std::size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    const unsigned char d = byte(i + k);
    if (k == 1 ? (d < lo || d > hi) : (d < 0x80 || d > 0xBF)) return 0;
  }
  return n;
}

const char* nonfinite_kind(double v) { return std::isnan(v) ? "nan" : (v > 0 ? "inf" : "-inf"); }

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

}  // namespace

std::string json_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size() + 2);
  for (std::size_t i = 0; i < s.size();) {
    const char c = s[i];
    switch (c) {
      case '"': out += "\\\""; ++i; continue;
      case '\\': out += "\\\\"; ++i; continue;
      case '\n': out += "\\n"; ++i; continue;
      case '\t': out += "\\t"; ++i; continue;
      case '\r': out += "\\r"; ++i; continue;
      default: break;
    }
    if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
      out += buf;
      ++i;
      continue;
    }
    // JSON text is UTF-8: a byte that starts no valid sequence (a Latin-1 file name, a cut
    // message) becomes U+FFFD instead of making the whole line unreadable.
    const std::size_t n = utf8_sequence_length(s, i);
    if (n == 0) {
      out += "\\ufffd";
      ++i;
    } else {
      out.append(s, i, n);
      i += n;
    }
  }
  return out;
}

void JsonObject::key(const std::string& k) {
  if (!body_.empty()) body_ += ", ";
  body_ += "\"" + json_escape(k) + "\": ";
}

JsonObject& JsonObject::add(const std::string& k, double v) {
  key(k);
  if (std::isfinite(v)) {
    body_ += number(v);
  } else {
    body_ += "null";
    add(k + "_nonfinite", nonfinite_kind(v));
  }
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
  std::string kinds;  // the non-finite kinds met, in order, each once
  for (std::size_t i = 0; i < values.size(); ++i) {
    const double v = values[i];
    body_ += i ? ", " : "";
    if (std::isfinite(v)) {
      body_ += number(v);
      continue;
    }
    body_ += "null";
    const std::string kind = nonfinite_kind(v);
    if (("," + kinds + ",").find("," + kind + ",") == std::string::npos) kinds += (kinds.empty() ? "" : ",") + kind;
  }
  body_ += "]";
  if (!kinds.empty()) add(k + "_nonfinite", kinds);
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

bool progress_redraws(const std::string& log_progress) {
  if (log_progress == "auto") return stdout_is_interactive();
  if (log_progress == "redraw") return true;
  if (log_progress == "lines") return false;
  UPCYCLE_USAGE_ERROR("log.progress = ", log_progress, ": expected auto, redraw or lines here (off shows no progress)");
}

Progress::Progress(std::string stage, std::int64_t total_steps, std::int64_t first_step, bool redraw)
    : stage_(std::move(stage)), total_(total_steps), first_(first_step), redraw_(redraw),
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
  if (redraw_) {
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
