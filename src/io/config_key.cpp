// What one schema row says about itself: its name, allowed values, range and type in words.
#include <sstream>

#include "upcycle/io/config_schema.hpp"

namespace upcycle {

namespace {
std::string number(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}
}  // namespace

bool ConfigRange::contains(double v) const {
  const bool lo_ok = lo_open ? v > lo : v >= lo;
  const bool hi_ok = hi_open ? v < hi : v <= hi;
  return lo_ok && hi_ok;
}

std::string ConfigRange::describe() const {
  const bool has_lo = lo != -std::numeric_limits<double>::infinity();
  const bool has_hi = hi != std::numeric_limits<double>::infinity();
  if (has_lo && has_hi) {
    return std::string("in ") + (lo_open ? "(" : "[") + number(lo) + ", " + number(hi) + (hi_open ? ")" : "]");
  }
  if (has_lo) return (lo_open ? "> " : ">= ") + number(lo);
  if (has_hi) return (hi_open ? "< " : "<= ") + number(hi);
  return "";
}

std::string ConfigKey::full_name() const { return std::string(section) + "." + name; }

std::vector<std::string> ConfigKey::allowed_values() const {
  std::vector<std::string> out;
  if (allowed == nullptr) return out;
  std::string item;
  for (const char* c = allowed;; ++c) {
    if (*c == '|' || *c == '\0') {
      out.push_back(item);
      item.clear();
      if (*c == '\0') break;
    } else {
      item += *c;
    }
  }
  return out;
}

std::string describe_type(const ConfigKey& key) {
  std::string allowed;
  for (const auto& v : key.allowed_values()) allowed += (allowed.empty() ? "" : ", ") + v;
  switch (key.type) {
    case ConfigType::Int: return "int";
    case ConfigType::Float: return "float";
    case ConfigType::Bool: return "bool";
    case ConfigType::String: return "string";
    case ConfigType::Enum: return "one of {" + allowed + "}";
    case ConfigType::IntList: return "list of int";
    case ConfigType::FloatList: return "list of float";
    case ConfigType::StringList: return allowed.empty() ? "list of string" : "list of {" + allowed + "}";
  }
  return "";
}

}  // namespace upcycle
