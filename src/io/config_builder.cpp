// Accumulates values from defaults, file and overrides, then validates the whole config once.
#include "upcycle/core/error.hpp"

#include "config_internal.hpp"

namespace upcycle::detail {

namespace {
std::string join_lines(const std::vector<std::string>& lines) {
  std::string out;
  for (std::size_t i = 0; i < lines.size(); ++i) out += (i ? "\n" : "") + lines[i];
  return out;
}
}  // namespace

ConfigBuilder::ConfigBuilder() {
  for (const auto& key : config_schema()) {
    ParsedValue p = parse_config_value(key, key.default_text);
    UPCYCLE_CHECK(p.error.empty(), "schema default of ", key.full_name(), ": ", p.error);
    values_.push_back(std::move(p.value));
    origins_.emplace_back("default");
  }
}

void ConfigBuilder::set(std::size_t key_index, const std::string& text, const std::string& where,
                        const std::string& origin) {
  const ConfigKey& key = config_schema().at(key_index);
  ParsedValue p = parse_config_value(key, text);
  if (!p.error.empty()) {
    add_problem(where + ": bad value for " + key.full_name() + ": " + p.error);
    return;
  }
  values_[key_index] = std::move(p.value);
  origins_[key_index] = origin;
}

Config ConfigBuilder::build(const std::string& source) const {
  // Rules read typed values, so they only run once every single value is valid.
  if (!problems_.empty()) UPCYCLE_USAGE_ERROR(join_lines(problems_));
  Config cfg(values_, origins_);
  std::vector<std::string> violations;
  for (const auto& rule : config_rules()) {
    const std::string v = rule.violation(cfg);
    if (!v.empty()) violations.push_back(source + ": inconsistent config: " + v + " [rule: " + rule.summary + "]");
  }
  if (!violations.empty()) UPCYCLE_USAGE_ERROR(join_lines(violations));
  return cfg;
}

}  // namespace upcycle::detail
