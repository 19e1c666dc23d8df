#include "json.hpp"

#include <cmath>
#include <cstdio>

#include "upcycle/io/metrics.hpp"

namespace upcycle::inspect {

std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string json_number(std::int64_t v) { return std::to_string(v); }

std::string json_string(const std::string& s) { return "\"" + json_escape(s) + "\""; }

namespace {
template <class T, class F>
std::string join(const std::vector<T>& values, F&& item) {
  std::string s = "[";
  for (std::size_t i = 0; i < values.size(); ++i) s += (i ? ", " : "") + item(values[i]);
  return s + "]";
}
}  // namespace

std::string json_array(const std::vector<double>& values) {
  return join(values, [](double v) { return json_number(v); });
}

std::string json_array(const std::vector<std::int64_t>& values) {
  return join(values, [](std::int64_t v) { return json_number(v); });
}

std::string json_string_array(const std::vector<std::string>& values) {
  return join(values, [](const std::string& v) { return json_string(v); });
}

std::string json_raw_array(const std::vector<std::string>& items) {
  return join(items, [](const std::string& v) { return v; });
}

Json& Json::add_raw(const std::string& key, const std::string& json) {
  if (!body_.empty()) body_ += ", ";
  body_ += json_string(key) + ": " + json;
  return *this;
}

Json& Json::add(const std::string& key, double value) { return add_raw(key, json_number(value)); }
Json& Json::add(const std::string& key, std::int64_t value) { return add_raw(key, json_number(value)); }
Json& Json::add(const std::string& key, bool value) { return add_raw(key, value ? "true" : "false"); }
Json& Json::add(const std::string& key, const std::string& value) { return add_raw(key, json_string(value)); }
Json& Json::add_null(const std::string& key) { return add_raw(key, "null"); }

}  // namespace upcycle::inspect
