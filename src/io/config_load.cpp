// Reading a config: Boost.Program_options parses the INI text, a line scan of the same text
// locates each entry so that messages can name the line, and ConfigBuilder types and validates.
#include <boost/program_options/errors.hpp>
#include <boost/program_options/parsers.hpp>
#include <boost/program_options/value_semantic.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>

#include "upcycle/core/error.hpp"

#include "config_internal.hpp"

namespace po = boost::program_options;

namespace upcycle {

namespace detail {

po::options_description config_options() {
  po::options_description desc;
  for (const auto& key : config_schema()) {
    desc.add_options()(key.full_name().c_str(), po::value<std::string>(), key.help);
  }
  return desc;
}

}  // namespace detail

namespace {

// Where Boost's INI reader finds its entries. Boost reports neither line numbers nor which line
// is malformed, so this scan follows the same rules (drop from '#', trim, "[section]" sets the
// prefix, "name = value" is an entry, anything else is malformed) to recover them.
struct IniScan {
  std::vector<std::pair<int, std::string>> entries;  // (line, "section.name")
  int bad_line = 0;                                  // first malformed line, 0 if none
  std::string bad_text;
};

IniScan scan_ini(const std::string& text) {
  IniScan scan;
  std::istringstream in(text);
  std::string line, prefix;
  for (int n = 1; std::getline(in, line); ++n) {
    const std::string s = detail::trim_ws(line.substr(0, line.find('#')));
    if (s.empty()) continue;
    if (s.front() == '[' && s.back() == ']') {
      prefix = s.substr(1, s.size() - 2);
      if (prefix.empty() || prefix.back() != '.') prefix += '.';
    } else if (const auto eq = s.find('='); eq != std::string::npos) {
      scan.entries.emplace_back(n, prefix + detail::trim_ws(s.substr(0, eq)));
    } else if (scan.bad_line == 0) {
      scan.bad_line = n;
      scan.bad_text = s;
    }
  }
  return scan;
}

po::parsed_options parse_ini(const std::string& text, const std::string& source, const po::options_description& desc) {
  std::istringstream in(text);
  try {
    return po::parse_config_file(in, desc, /*allow_unregistered=*/true);
  } catch (const po::invalid_config_file_syntax& e) {
    const IniScan scan = scan_ini(text);
    if (scan.bad_line == 0) UPCYCLE_USAGE_ERROR(source, ": ", e.what());
    UPCYCLE_USAGE_ERROR(source, ":", scan.bad_line, ": malformed line '", scan.bad_text,
                        "' (expected '[section]', 'key = value' or a '#' comment)");
  } catch (const po::error& e) {
    UPCYCLE_USAGE_ERROR(source, ": ", e.what());
  }
}

}  // namespace

Config parse_config(const std::string& ini_text, const std::string& source,
                    const std::vector<ConfigOverride>& overrides) {
  const po::options_description desc = detail::config_options();
  const po::parsed_options parsed = parse_ini(ini_text, source, desc);
  const IniScan scan = scan_ini(ini_text);
  // Use the scan's lines only if it saw exactly the entries Boost did.
  bool lines_known = scan.entries.size() == parsed.options.size();
  for (std::size_t i = 0; lines_known && i < scan.entries.size(); ++i) {
    lines_known = scan.entries[i].second == parsed.options[i].string_key;
  }

  detail::ConfigBuilder builder;
  std::map<std::string, std::string> seen;  // key -> where it was first set
  for (std::size_t i = 0; i < parsed.options.size(); ++i) {
    const po::option& opt = parsed.options[i];
    const std::string where = lines_known ? source + ":" + std::to_string(scan.entries[i].first) : source;
    const std::size_t index = config_key_index(opt.string_key);
    if (index == kNoConfigKey) {
      builder.add_problem(where + ": " + detail::unknown_key_message(opt.string_key));
    } else if (const auto it = seen.find(opt.string_key); it != seen.end()) {
      // Last-one-wins would silently hide a copy-paste slip in a file.
      builder.add_problem(where + ": " + opt.string_key + " is set again (first set at " + it->second + ")");
    } else {
      seen.emplace(opt.string_key, where);
      builder.set(index, opt.value.empty() ? std::string() : opt.value.front(), where, where);
    }
  }
  for (const auto& o : overrides) {
    const std::string where = "command line --" + o.key + "=" + o.value;
    const std::size_t index = config_key_index(o.key);
    if (index == kNoConfigKey) {
      builder.add_problem(where + ": " + detail::unknown_key_message(o.key));
    } else {
      builder.set(index, o.value, where, "command line");
    }
  }
  return builder.build(overrides.empty() ? source : source + " with command-line overrides");
}

Config load_config(const std::string& path, const std::vector<ConfigOverride>& overrides) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) UPCYCLE_USAGE_ERROR("config file '", path, "' does not exist");
  if (!std::filesystem::is_regular_file(path, ec)) UPCYCLE_USAGE_ERROR("config file '", path, "' is not a regular file");
  std::ifstream in(path, std::ios::binary);
  if (!in) UPCYCLE_USAGE_ERROR("cannot open config file '", path, "': ", std::strerror(errno));
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) UPCYCLE_USAGE_ERROR("cannot read config file '", path, "': ", std::strerror(errno));
  return parse_config(text, path, overrides);
}

Config default_config() { return parse_config("", "defaults"); }

}  // namespace upcycle
