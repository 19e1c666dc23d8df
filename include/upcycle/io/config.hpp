#pragma once
// The resolved, validated, read-only run configuration.
//
// Sources, in increasing priority: the schema defaults, the INI file, command-line overrides
// (`--section.key=value`). Every user-input problem (missing file, malformed line, unknown key,
// bad value, inconsistent keys) throws UsageError naming the file, line, key and what is allowed.
// Asking a Config for a key the schema lacks, or with the wrong getter, is a programming error
// and throws Error.
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "upcycle/io/config_schema.hpp"

namespace upcycle {

// Enum keys hold their value as a string.
using ConfigValue = std::variant<std::int64_t, double, bool, std::string, std::vector<std::int64_t>,
                                 std::vector<double>, std::vector<std::string>>;

struct ConfigOverride {
  std::string key;  // "section.name"
  std::string value;
};

namespace detail {
class ConfigBuilder;
}

class Config {
 public:
  std::int64_t get_int(std::string_view key) const;
  double get_float(std::string_view key) const;
  bool get_bool(std::string_view key) const;
  const std::string& get_string(std::string_view key) const;  // String and Enum keys
  const std::vector<std::int64_t>& get_int_list(std::string_view key) const;
  const std::vector<double>& get_float_list(std::string_view key) const;
  const std::vector<std::string>& get_string_list(std::string_view key) const;

  // Where the value came from: "default", "FILE:LINE" or "command line".
  const std::string& origin(std::string_view key) const;
  // The value as the INI dump writes it.
  std::string value_text(std::string_view key) const;
  // Every key, defaults included, grouped by section; parses back to an equal Config.
  std::string to_ini() const;

  bool operator==(const Config& o) const { return values_ == o.values_; }
  bool operator!=(const Config& o) const { return !(*this == o); }

 private:
  friend class detail::ConfigBuilder;
  Config(std::vector<ConfigValue> values, std::vector<std::string> origins)
      : values_(std::move(values)), origins_(std::move(origins)) {}
  template <class T>
  const T& get(std::string_view key, const char* getter, ConfigType t1, ConfigType t2) const;
  std::size_t index(std::string_view key) const;

  std::vector<ConfigValue> values_;  // parallel to config_schema()
  std::vector<std::string> origins_;
};

// Reads the INI file at `path`, then applies `overrides` in order (a later one wins).
Config load_config(const std::string& path, const std::vector<ConfigOverride>& overrides = {});
// The same from INI text; `source` names it in messages (a file name, "checkpoint x.h5", ...).
Config parse_config(const std::string& ini_text, const std::string& source,
                    const std::vector<ConfigOverride>& overrides = {});
// The schema defaults alone.
Config default_config();

// Writes cfg.to_ini() to `path` through a temporary file and a rename, so a reader never sees
// half a file. Throws Error (a run-time failure) when the file cannot be written.
void write_config_file(const Config& cfg, const std::string& path);

// Every section and key with type, default, allowed values and help, then the cross-key rules.
std::string config_help();

}  // namespace upcycle
