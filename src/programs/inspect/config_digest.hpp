#pragma once
// The config a checkpoint was written with, in short: the key lines that say what model it is
// (kind and size; E, k and the MoE blocks; the upcycling method) and every key that differs from
// the schema default.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace upcycle::inspect {

struct ConfigDigest {
  bool parsed = false;
  std::string error;  // why this build could not parse the stored config (when !parsed)
  std::vector<std::pair<std::string, std::string>> key_lines;    // "model.width" -> "16"
  std::vector<std::pair<std::string, std::string>> non_default;  // in schema order
  std::int64_t top_k = -1;  // moe.top_k; -1 when the config could not be parsed
};

// `ini` is the checkpoint's root attribute 'config'; `source` names it in the error. The MoE key
// lines are included when `moe`, the upcycling method when `upcycled`.
ConfigDigest digest_config(const std::string& ini, const std::string& source, bool moe, bool upcycled);

// Whether the model was upcycled: stage upcycle, or stage moe of a run whose MoE stage started from
// the upcycled checkpoint (run.stages has upcycle, or moe.init = upcycled). Needs a parseable config.
bool config_says_upcycled(const std::string& ini, const std::string& stage);

}  // namespace upcycle::inspect
