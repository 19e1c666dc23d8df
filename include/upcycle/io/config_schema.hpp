#pragma once
// The config schema: one table of every key (section, name, type, default, allowed values or range,
// help). Parsing, validation, `--help` and the resolved-config dump all read this table, so a key
// exists, is checked and is documented the moment its row is added in src/io/config_schema.cpp.
#include <cstddef>
#include <limits>
#include <string>
#include <vector>

namespace upcycle {

enum class ConfigType { Int, Float, Bool, String, Enum, IntList, FloatList, StringList };

// Numeric bounds; for list types they apply to every element. Unbounded by default.
struct ConfigRange {
  double lo = -std::numeric_limits<double>::infinity();
  double hi = std::numeric_limits<double>::infinity();
  bool lo_open = false;
  bool hi_open = false;

  bool contains(double v) const;
  // ">= 1", "> 0", "in [0, 1)", or "" when unbounded.
  std::string describe() const;
};

// Short names for the schema table's range column.
namespace config_range {
constexpr ConfigRange kAnyValue{};
constexpr ConfigRange at_least(double lo) { return {lo, std::numeric_limits<double>::infinity(), false, false}; }
constexpr ConfigRange above(double lo) { return {lo, std::numeric_limits<double>::infinity(), true, false}; }
constexpr ConfigRange closed(double lo, double hi) { return {lo, hi, false, false}; }
constexpr ConfigRange right_open(double lo, double hi) { return {lo, hi, false, true}; }  // [lo, hi)
constexpr ConfigRange left_open(double lo, double hi) { return {lo, hi, true, false}; }   // (lo, hi]
}  // namespace config_range

// Whether a string or list key may be left empty (an empty string means "use the documented fallback").
enum class ConfigEmpty { Allowed, Forbidden };

struct ConfigKey {
  const char* section;
  const char* name;
  ConfigType type;
  const char* default_text;  // parsed by the same code as user input, so defaults are validated too
  ConfigRange range;         // Int, Float and their lists
  const char* allowed;       // "a|b|c" for Enum and StringList elements; nullptr = any string
  const char* help;
  ConfigEmpty empty = ConfigEmpty::Allowed;

  std::string full_name() const;  // "section.name"
  std::vector<std::string> allowed_values() const;
};

struct ConfigSection {
  const char* name;
  const char* help;
};

// In the order --help and --print-config list them.
const std::vector<ConfigSection>& config_sections();
const std::vector<ConfigKey>& config_schema();
constexpr std::size_t kNoConfigKey = static_cast<std::size_t>(-1);
// Index of "section.name" in config_schema(), or kNoConfigKey.
std::size_t config_key_index(const std::string& full_name);

// "int", "float", "list of {dense, moe}", ...: the type as --help shows it.
std::string describe_type(const ConfigKey& key);

}  // namespace upcycle
