#include "command_line.hpp"

#include "upcycle/core/error.hpp"

namespace upcycle::inspect {

namespace {

struct ViewOption {
  const char* flag;
  View view;
};
constexpr ViewOption kViewOptions[] = {{"--config", View::config}, {"--tensors", View::tensors},
                                       {"--experts", View::experts}, {"--diff", View::diff},
                                       {"--verify", View::verify},   {"--help", View::help},
                                       {"-h", View::help}};

const char* flag_of(View v) {
  for (const auto& o : kViewOptions)
    if (o.view == v) return o.flag;
  return "(summary)";
}

}  // namespace

InspectCommand parse_inspect_command_line(int argc, const char* const argv[]) {
  InspectCommand cmd;
  bool view_given = false, options_done = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (options_done || arg.empty() || arg[0] != '-' || arg == "-") {
      cmd.files.push_back(arg);
      continue;
    }
    if (arg == "--") {
      options_done = true;
      continue;
    }
    if (arg == "--json") {
      cmd.json = true;
      continue;
    }
    bool known = false;
    for (const auto& o : kViewOptions) {
      if (arg != o.flag) continue;
      known = true;
      if (view_given && cmd.view != o.view)
        UPCYCLE_USAGE_ERROR("command line: ", arg, " and ", flag_of(cmd.view), " are two views; give one at a time");
      cmd.view = o.view;
      view_given = true;
    }
    if (!known) UPCYCLE_USAGE_ERROR("command line: unknown option '", arg, "'");
  }
  if (cmd.view == View::help) return cmd;
  const std::size_t want = cmd.view == View::diff ? 2 : 1;
  if (cmd.files.size() != want) {
    if (cmd.view == View::diff)
      UPCYCLE_USAGE_ERROR("command line: --diff needs two checkpoints, A and B; got ", cmd.files.size());
    if (cmd.files.empty()) UPCYCLE_USAGE_ERROR("command line: no checkpoint given");
    UPCYCLE_USAGE_ERROR("command line: one checkpoint expected, got ", cmd.files.size(), " (",
                        cmd.files[0], ", ", cmd.files[1], cmd.files.size() > 2 ? ", ..." : "", ")");
  }
  return cmd;
}

std::string inspect_usage() {
  return "usage: upcycle_inspect CKPT [--config | --tensors | --experts] [--json]\n"
         "       upcycle_inspect --diff A B [--json]\n"
         "       upcycle_inspect --verify CKPT [--json]\n"
         "       upcycle_inspect --help\n";
}

std::string inspect_help() {
  return inspect_usage() +
         "\n"
         "Looks inside an upcycle checkpoint (HDF5, written by upcycle_train; docs/inspect.md).\n\n"
         "  CKPT              summary: format, stage, step, version, the config in short (model, MoE E and k,\n"
         "                    upcycling method, non-default keys), parameter counts by group, the MoE blocks,\n"
         "                    optimiser state, EMA teacher, RNG state, data cursor, file size\n"
         "  --config          the full config the checkpoint was written with, as INI\n"
         "  --tensors         every tensor: shape, dtype, L2 norm, mean, std, min, max, NaN and Inf counts\n"
         "  --experts         per MoE block: per-expert weight norms, the experts' pairwise weight cosine\n"
         "                    similarity (w1 and w2 flattened), router row norms, the aux-free bias, and the\n"
         "                    upcycling record (cluster sizes, k-means objective, SVD ranks and energy)\n"
         "  --diff A B        per tensor in both: max |A-B| and ||A-B||/||B||; per expert of each MoE block the\n"
         "                    drift ||A_e-B_e||/||B_e||; tensors in one file only; shape mismatches\n"
         "  --verify          reads every dataset back and checks the structure; prints each problem\n"
         "  --json            one JSON document on stdout instead of text (non-finite numbers are null)\n"
         "  --help, -h        print this help and exit\n"
         "  --                the arguments after it are file names\n\n"
         "Exit status: 0 success (--verify: the checkpoint is intact), 1 a file that cannot be inspected\n"
         "(missing, not HDF5, not an upcycle checkpoint, unreadable) or --verify found problems,\n"
         "2 command-line misuse.\n";
}

}  // namespace upcycle::inspect
