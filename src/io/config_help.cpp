// The key reference printed by --help, generated from the schema and the rule registry.
#include <sstream>

#include "config_internal.hpp"

namespace upcycle {

namespace {

constexpr std::size_t kTypeColumn = 44;
constexpr std::size_t kWidth = 100;
const char* const kIndent = "      ";

// Word-wraps `text` into lines of at most kWidth characters, each starting with kIndent.
std::string wrap(const std::string& text) {
  std::istringstream words(text);
  std::string out, line, word;
  while (words >> word) {
    if (!line.empty() && line.size() + 1 + word.size() > kWidth) {
      out += line + "\n";
      line.clear();
    }
    line += (line.empty() ? kIndent : " ") + word;
  }
  return line.empty() ? out : out + line + "\n";
}

std::string constraint(const ConfigKey& key) {
  std::string c = describe_type(key);
  const std::string range = key.range.describe();
  const bool is_list = key.type == ConfigType::IntList || key.type == ConfigType::FloatList;
  if (!range.empty()) c += (is_list ? ", each " : ", ") + range;
  if (key.empty == ConfigEmpty::Forbidden) c += ", not empty";
  return c;
}

}  // namespace

std::string config_help() {
  std::string out =
      "Config keys by section: `key = value` under [section] in CONFIG.ini, or --section.key=value on the\n"
      "command line (applied after the file, a later one winning). Lists are comma-separated; booleans are\n"
      "true/false, yes/no, on/off or 1/0. Shown: the default, then [type, allowed values].\n";
  const Config defaults = default_config();
  for (const auto& section : config_sections()) {
    out += std::string("\n[") + section.name + "]  " + section.help + "\n";
    for (const auto& key : config_schema()) {
      if (std::string(key.section) != section.name) continue;
      const std::string text = defaults.value_text(key.full_name());
      std::string line = std::string("  ") + key.name + (text.empty() ? " =" : " = " + text);
      line += line.size() < kTypeColumn ? std::string(kTypeColumn - line.size(), ' ') : std::string("  ");
      out += line + "[" + constraint(key) + "]\n" + wrap(key.help);
    }
  }
  out += "\nConsistency rules, checked once every value is read:\n";
  for (const auto& rule : detail::config_rules()) out += std::string("  - ") + rule.summary + "\n";
  return out;
}

}  // namespace upcycle
