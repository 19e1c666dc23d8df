// Text <-> typed value for one key, with the type, range and allowed-set checks. The same code
// reads defaults, files and overrides, and format_config_value writes text it reads back exactly.
#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>

#include "config_internal.hpp"

namespace upcycle::detail {

namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string join(const std::vector<std::string>& items, const char* sep) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) out += (i ? sep : "") + items[i];
  return out;
}

std::string quoted(const std::string& s) { return "'" + s + "'"; }

// Comma-separated; "" is the empty list. An empty element ("a,,b", "a,") is refused rather than
// silently dropped, since it is most likely a typo.
std::string split_list(const std::string& text, std::vector<std::string>& out) {
  const std::string t = trim_ws(text);
  if (t.empty()) return "";
  std::size_t start = 0;
  while (true) {
    const auto comma = t.find(',', start);
    const std::string item = trim_ws(t.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (item.empty()) return quoted(text) + " has an empty list element";
    out.push_back(item);
    if (comma == std::string::npos) return "";
    start = comma + 1;
  }
}

std::string range_error(const ConfigKey& key, const std::string& text, bool element) {
  return text + " is out of range (allowed: " + (element ? "each " : "") + key.range.describe() + ")";
}

std::string parse_int(const ConfigKey& key, const std::string& text, std::int64_t& out, bool element) {
  const char* end = text.data() + text.size();
  const auto r = std::from_chars(text.data(), end, out);
  if (r.ec == std::errc::result_out_of_range) return quoted(text) + " does not fit a 64-bit integer";
  if (r.ec != std::errc() || r.ptr != end) return quoted(text) + " is not an integer";
  if (!key.range.contains(static_cast<double>(out))) return range_error(key, text, element);
  return "";
}

std::string parse_float(const ConfigKey& key, const std::string& text, double& out, bool element) {
  const char* end = text.data() + text.size();
  const auto r = std::from_chars(text.data(), end, out);
  if (r.ec == std::errc::result_out_of_range) return quoted(text) + " is out of the range of a double";
  if (r.ec != std::errc() || r.ptr != end) return quoted(text) + " is not a number";
  if (!std::isfinite(out)) return quoted(text) + " is not a finite number";
  if (!key.range.contains(out)) return range_error(key, text, element);
  return "";
}

std::string parse_bool(const std::string& text, bool& out) {
  const std::string t = lower(text);
  if (t == "true" || t == "yes" || t == "on" || t == "1") {
    out = true;
  } else if (t == "false" || t == "no" || t == "off" || t == "0") {
    out = false;
  } else {
    return quoted(text) + " is not a boolean (true/false, yes/no, on/off, 1/0)";
  }
  return "";
}

std::string check_allowed(const ConfigKey& key, const std::string& text) {
  const auto allowed = key.allowed_values();
  if (allowed.empty() || std::find(allowed.begin(), allowed.end(), text) != allowed.end()) return "";
  std::string msg = quoted(text) + " is not one of: " + join(allowed, ", ");
  const std::string near = closest_match(text, allowed);
  if (!near.empty()) msg += " (did you mean " + quoted(near) + "?)";
  return msg;
}

// Boost drops everything after '#' when it reads a file, and a line break would end the value,
// so a string holding either could not survive the round trip through config.ini.
std::string check_ini_safe(const std::string& text) {
  if (text.find('#') != std::string::npos) return quoted(text) + " contains '#', which INI files read as a comment";
  if (text.find_first_of("\r\n") != std::string::npos) return quoted(text) + " contains a line break";
  return "";
}

template <class T, class F>
std::string parse_list(const std::string& text, ConfigValue& value, F parse_item) {
  std::vector<std::string> items;
  if (auto e = split_list(text, items); !e.empty()) return e;
  std::vector<T> out(items.size());
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (auto e = parse_item(items[i], out[i]); !e.empty()) return e;
  }
  value = std::move(out);
  return "";
}

std::string format_double(double v) {
  char buf[64];
  // std::to_chars writes the shortest text that reads back to the same double.
  const auto r = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}

}  // namespace

std::string trim_ws(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

ParsedValue parse_config_value(const ConfigKey& key, const std::string& raw) {
  const std::string text = trim_ws(raw);
  ParsedValue p;
  std::string& err = p.error;
  switch (key.type) {
    case ConfigType::Int: {
      std::int64_t v = 0;
      err = parse_int(key, text, v, false);
      p.value = v;
      break;
    }
    case ConfigType::Float: {
      double v = 0;
      err = parse_float(key, text, v, false);
      p.value = v;
      break;
    }
    case ConfigType::Bool: {
      bool v = false;
      err = parse_bool(text, v);
      p.value = v;
      break;
    }
    case ConfigType::String:
    case ConfigType::Enum:
      err = check_ini_safe(text);
      if (err.empty()) err = check_allowed(key, text);
      p.value = text;
      break;
    case ConfigType::IntList:
      err = parse_list<std::int64_t>(text, p.value, [&](const std::string& s, std::int64_t& v) {
        return parse_int(key, s, v, true);
      });
      break;
    case ConfigType::FloatList:
      err = parse_list<double>(text, p.value, [&](const std::string& s, double& v) {
        return parse_float(key, s, v, true);
      });
      break;
    case ConfigType::StringList:
      err = parse_list<std::string>(text, p.value, [&](const std::string& s, std::string& v) {
        v = s;
        const std::string e = check_ini_safe(s);
        return e.empty() ? check_allowed(key, s) : e;
      });
      break;
  }
  if (err.empty() && key.empty == ConfigEmpty::Forbidden && text.empty()) err = "the value must not be empty";
  return p;
}

std::string format_config_value(const ConfigKey& key, const ConfigValue& value) {
  switch (key.type) {
    case ConfigType::Int: return std::to_string(std::get<std::int64_t>(value));
    case ConfigType::Float: return format_double(std::get<double>(value));
    case ConfigType::Bool: return std::get<bool>(value) ? "true" : "false";
    case ConfigType::String:
    case ConfigType::Enum: return std::get<std::string>(value);
    case ConfigType::IntList: {
      std::vector<std::string> items;
      for (auto v : std::get<std::vector<std::int64_t>>(value)) items.push_back(std::to_string(v));
      return join(items, ", ");
    }
    case ConfigType::FloatList: {
      std::vector<std::string> items;
      for (auto v : std::get<std::vector<double>>(value)) items.push_back(format_double(v));
      return join(items, ", ");
    }
    case ConfigType::StringList: return join(std::get<std::vector<std::string>>(value), ", ");
  }
  return "";
}

}  // namespace upcycle::detail
