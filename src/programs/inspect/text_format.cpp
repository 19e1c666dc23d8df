#include "text_format.hpp"

#include <cmath>
#include <cstdio>

namespace upcycle::inspect {

std::string format_number(double v, int digits) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}

std::string format_numbers(const std::vector<double>& values, int digits) {
  std::string s;
  for (std::size_t i = 0; i < values.size(); ++i) s += (i ? " " : "") + format_number(values[i], digits);
  return s;
}

std::string format_integers(const std::vector<std::int64_t>& values) {
  std::string s;
  for (std::size_t i = 0; i < values.size(); ++i) s += (i ? " " : "") + std::to_string(values[i]);
  return s;
}

std::string format_shape(const Shape& shape) {
  std::string s = "[";
  for (int i = 0; i < shape.ndim(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string format_bytes(std::uintmax_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int unit = 0;
  while (v >= 1024.0 && unit < 4) {
    v /= 1024.0;
    ++unit;
  }
  char buf[64];
  if (unit == 0)
    std::snprintf(buf, sizeof buf, "%ju bytes", bytes);
  else
    std::snprintf(buf, sizeof buf, "%.1f %s (%ju bytes)", v, kUnits[unit], bytes);
  return buf;
}

std::string pad_right(const std::string& text, std::size_t width) {
  return text.size() >= width ? text : text + std::string(width - text.size(), ' ');
}

std::string pad_left(const std::string& text, std::size_t width) {
  return text.size() >= width ? text : std::string(width - text.size(), ' ') + text;
}

}  // namespace upcycle::inspect
