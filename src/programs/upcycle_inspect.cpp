// upcycle_inspect: looks inside an upcycle checkpoint (docs/inspect.md).
// Exit status: 0 success (--verify: the checkpoint is intact), 1 a file that cannot be inspected or
// a --verify that found problems, 2 command-line misuse (inspect/command_line.hpp).
#include <cstdlib>
#include <exception>
#include <iostream>
#include <sstream>

#include "inspect/command_line.hpp"
#include "inspect/views.hpp"
#include "upcycle/core/error.hpp"

namespace {

int run_view(const upcycle::inspect::InspectCommand& cmd, std::ostream& out) {
  using upcycle::inspect::View;
  namespace in = upcycle::inspect;
  switch (cmd.view) {
    case View::summary: in::summary_view(cmd.files[0], cmd.json, out); break;
    case View::config: in::config_view(cmd.files[0], cmd.json, out); break;
    case View::tensors: in::tensors_view(cmd.files[0], cmd.json, out); break;
    case View::experts: in::experts_view(cmd.files[0], cmd.json, out); break;
    case View::diff: in::diff_view(cmd.files[0], cmd.files[1], cmd.json, out); break;
    case View::verify: return in::verify_view(cmd.files[0], cmd.json, out) ? in::kExitOk : in::kExitBadFile;
    case View::help: out << in::inspect_help(); break;
  }
  return in::kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  namespace in = upcycle::inspect;
  // Tensors are read one at a time and never reused: with the host allocator's cache of freed
  // blocks off, memory stays at the tensor being read (two for --diff) on a checkpoint of any size.
  ::setenv("UPCYCLE_CPU_CACHE_MB", "0", 0);
  in::InspectCommand cmd;
  try {
    cmd = in::parse_inspect_command_line(argc, argv);
  } catch (const upcycle::Error& e) {
    std::cerr << "upcycle_inspect: error: " << e.message() << "\n"
              << in::inspect_usage() << "(see upcycle_inspect --help)\n";
    return in::kExitUsage;
  }
  // The view is printed only once complete: a file that fails half-way leaves one error line and
  // no partial text or JSON.
  std::ostringstream out;
  try {
    const int status = run_view(cmd, out);
    std::cout << out.str() << std::flush;
    return status;
  } catch (const upcycle::Error& e) {
    std::cerr << "upcycle_inspect: error: " << e.message() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "upcycle_inspect: error: " << e.what() << "\n";
  }
  return in::kExitBadFile;
}
