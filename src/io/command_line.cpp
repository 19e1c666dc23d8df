// Command-line parsing through Boost.Program_options, sharing the schema's option list with the
// INI reader so that every config key is also a --section.key option.
#include "upcycle/io/command_line.hpp"

#include <boost/program_options/errors.hpp>
#include <boost/program_options/parsers.hpp>
#include <boost/program_options/positional_options.hpp>
#include <boost/program_options/value_semantic.hpp>

#include "upcycle/core/error.hpp"

#include "config_internal.hpp"

namespace po = boost::program_options;

namespace upcycle {

namespace {

const char* const kUsage = "usage: upcycle_train CONFIG.ini [--section.key=value ...] [--help] [--print-config]";

// Boost drops an empty value that an extra parser returns, and refuses "--key=" itself, yet that is
// how a user clears a string key set in the file. argv strings cannot hold a NUL, so a lone NUL
// carries "empty" through Boost unambiguously.
const std::string kEmptyValue(1, '\0');

// Splits "--name=value" tokens, whatever the value.
std::pair<std::string, std::string> split_assignment(const std::string& token) {
  const auto eq = token.find('=');
  if (token.rfind("--", 0) != 0 || eq == std::string::npos) return {};
  const std::string value = token.substr(eq + 1);
  return {token.substr(2, eq - 2), value.empty() ? kEmptyValue : value};
}

std::string option_value(const po::option& opt) {
  return opt.value.empty() || opt.value.front() == kEmptyValue ? "" : opt.value.front();
}

// The option as the user typed it; options from split_assignment keep no original tokens.
std::string typed_token(const po::option& opt) {
  if (!opt.original_tokens.empty()) return opt.original_tokens.front();
  return "--" + opt.string_key + "=" + option_value(opt);
}

}  // namespace

CommandLine parse_command_line(int argc, const char* const argv[]) {
  po::options_description desc = detail::config_options();
  desc.add_options()("help,h", "")("print-config", "")("config", po::value<std::string>(), "");
  po::positional_options_description positional;
  positional.add("config", 1);

  po::parsed_options parsed(&desc);
  try {
    // No abbreviation guessing: "--train.step" must not silently mean train.steps.
    parsed = po::command_line_parser(argc, argv)
                 .options(desc)
                 .positional(positional)
                 .extra_parser(split_assignment)
                 .style(po::command_line_style::unix_style & ~po::command_line_style::allow_guessing)
                 .allow_unregistered()
                 .run();
  } catch (const po::error& e) {
    UPCYCLE_USAGE_ERROR("command line: ", e.what(), "\n", kUsage);
  }

  CommandLine cl;
  for (const po::option& opt : parsed.options) {
    if (opt.unregistered) {
      const std::string token = typed_token(opt);
      if (opt.string_key.find('.') == std::string::npos) {
        UPCYCLE_USAGE_ERROR("command line: unknown option '", token, "'\n", kUsage);
      }
      UPCYCLE_USAGE_ERROR("command line ", token, ": ", detail::unknown_key_message(opt.string_key));
    }
    const std::string value = option_value(opt);
    if (opt.string_key == "help") {
      cl.help = true;
    } else if (opt.string_key == "print-config") {
      cl.print_config = true;
    } else if (opt.string_key == "config") {
      cl.config_path = value;
    } else {
      cl.overrides.push_back({opt.string_key, value});
    }
  }
  if (cl.config_path.empty() && !cl.help) UPCYCLE_USAGE_ERROR("command line: no CONFIG.ini given\n", kUsage);
  return cl;
}

std::string command_line_help() {
  return std::string(kUsage) +
         "\n\n"
         "Runs the stages of [run] stages in order and writes everything to [run] dir.\n\n"
         "  --help, -h          print this help and exit\n"
         "  --print-config      print the resolved config (file + overrides + defaults) as INI and exit\n"
         "  --section.key=value override one config key after the file is read\n\n"
         "Exit status: 0 success, 2 usage or config error, 1 failure at run time.\n\n" +
         config_help();
}

}  // namespace upcycle
