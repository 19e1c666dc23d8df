#include "config_digest.hpp"

#include "upcycle/core/error.hpp"
#include "upcycle/io/config.hpp"

namespace upcycle::inspect {

namespace {
const char* const kModelKeys[] = {"model.kind", "model.width", "model.depth", "model.heads", "model.ffn_width",
                                  "model.ffn_activation"};
const char* const kMoeKeys[] = {"moe.num_experts", "moe.top_k", "moe.blocks", "moe.expert_ffn_width"};
}  // namespace

ConfigDigest digest_config(const std::string& ini, const std::string& source, bool moe, bool upcycled) {
  ConfigDigest d;
  try {
    const Config cfg = parse_config(ini, source);
    const Config defaults = default_config();
    auto line = [&](const std::string& key) { d.key_lines.emplace_back(key, cfg.value_text(key)); };
    for (const char* k : kModelKeys) line(k);
    if (moe) {
      for (const char* k : kMoeKeys) line(k);
      if (cfg.get_string("moe.blocks") == "list") line("moe.block_list");
    }
    if (upcycled) line("upcycle.method");
    for (const auto& key : config_schema()) {
      const std::string name = key.full_name();
      if (cfg.value_text(name) != defaults.value_text(name)) d.non_default.emplace_back(name, cfg.value_text(name));
    }
    d.top_k = cfg.get_int("moe.top_k");
    d.parsed = true;
  } catch (const Error& e) {  // a config of another build: the rest of the summary still stands
    d.error = e.message();
  }
  return d;
}

bool config_says_upcycled(const std::string& ini, const std::string& stage) {
  if (stage == "upcycle") return true;
  if (stage != "moe") return false;
  try {
    const Config cfg = parse_config(ini, "checkpoint config");
    for (const auto& s : cfg.get_string_list("run.stages"))
      if (s == "upcycle") return true;
    return cfg.get_string("moe.init") == "upcycled";
  } catch (const Error&) {
    return false;
  }
}

}  // namespace upcycle::inspect
