#pragma once
// Pieces the config sources (file, command line) share inside src/io; not a public interface.
#include <boost/program_options/options_description.hpp>
#include <string>
#include <vector>

#include "upcycle/io/config.hpp"

namespace upcycle::detail {

// Without leading and trailing blanks, as Boost trims INI names and values.
std::string trim_ws(const std::string& s);

// The parsed value, or why `text` is not a valid value of `key` (error non-empty).
struct ParsedValue {
  ConfigValue value;
  std::string error;
};
ParsedValue parse_config_value(const ConfigKey& key, const std::string& text);
// The canonical text of a value; parse_config_value gives the same value back.
std::string format_config_value(const ConfigKey& key, const ConfigValue& value);

// The candidate nearest to `word` by edit distance, or "" when none is near enough to be a typo.
std::string closest_match(const std::string& word, const std::vector<std::string>& candidates);
// "unknown key 'train.stpes'; did you mean 'train.steps'?" and the like, for any name not in the schema.
std::string unknown_key_message(const std::string& name);

// Every schema key registered as a string-valued option, so Boost accepts `key = value` in
// files and `--key=value` / `--key value` on the command line; typing is ours.
boost::program_options::options_description config_options();

// A consistency condition across keys. `violation` returns "" when the config satisfies it,
// else a sentence naming the keys, their values and where each value came from.
struct ConfigRule {
  const char* summary;
  std::string (*violation)(const Config& cfg);
};
const std::vector<ConfigRule>& config_rules();

// Collects values over the sources and every problem on the way, so one run reports all of them.
class ConfigBuilder {
 public:
  ConfigBuilder();  // starts from the schema defaults
  // `where` prefixes a problem ("cfg.ini:7"); `origin` is what Config::origin reports.
  void set(std::size_t key_index, const std::string& text, const std::string& where, const std::string& origin);
  void add_problem(std::string problem) { problems_.push_back(std::move(problem)); }
  // Throws UsageError listing every problem so far, then every violated rule; `source` names the input.
  Config build(const std::string& source) const;

 private:
  std::vector<ConfigValue> values_;
  std::vector<std::string> origins_;
  std::vector<std::string> problems_;
};

}  // namespace upcycle::detail
