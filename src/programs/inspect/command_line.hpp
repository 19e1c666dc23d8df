#pragma once
// The command line of upcycle_inspect (docs/inspect.md):
//   upcycle_inspect CKPT [--config | --tensors | --experts] [--json]
//   upcycle_inspect --diff A B [--json]
//   upcycle_inspect --verify CKPT [--json]
//   upcycle_inspect --help
#include <string>
#include <vector>

namespace upcycle::inspect {

// Exit statuses of upcycle_inspect.
constexpr int kExitOk = 0;         // the view was printed; --verify: the checkpoint is intact
constexpr int kExitBadFile = 1;    // a file could not be inspected, or --verify found problems
constexpr int kExitUsage = 2;      // command-line misuse

enum class View { summary, config, tensors, experts, diff, verify, help };

struct InspectCommand {
  View view = View::summary;
  bool json = false;
  std::vector<std::string> files;  // one checkpoint; two for --diff
};

// Throws UsageError for an unknown option, a second view, or the wrong number of files.
InspectCommand parse_inspect_command_line(int argc, const char* const argv[]);

std::string inspect_usage();
std::string inspect_help();

}  // namespace upcycle::inspect
