#pragma once
// The command line of upcycle_train:
//   upcycle_train CONFIG.ini [--section.key=value ...] [--help] [--print-config]
#include <string>
#include <vector>

#include "upcycle/io/config.hpp"

namespace upcycle {

struct CommandLine {
  std::string config_path;                // empty only with --help
  std::vector<ConfigOverride> overrides;  // in command-line order
  bool help = false;
  bool print_config = false;
};

// Throws UsageError for an unknown option (suggesting the nearest key), an option without its
// value, a second positional argument, or a missing CONFIG.ini when --help is absent.
CommandLine parse_command_line(int argc, const char* const argv[]);

// The usage line, the options, then config_help().
std::string command_line_help();

}  // namespace upcycle
