// upcycle_inspect CKPT: what the checkpoint is, from its attributes and dataset shapes (no tensor
// is read but the two small state vectors).
#include <filesystem>
#include <map>
#include <sstream>

#include "checkpoint_file.hpp"
#include "config_digest.hpp"
#include "json.hpp"
#include "layout.hpp"
#include "tensor_stats.hpp"
#include "text_format.hpp"
#include "views.hpp"

namespace upcycle::inspect {

namespace {

struct Counts {
  std::map<ParamGroup, std::int64_t> groups;
  std::int64_t total = 0, tensors = 0;
};

// Parameter counts of the tensors below `prefix` ("/model/", "/teacher/"), from their shapes.
Counts count_parameters(const InspectedCheckpoint& c, const std::string& prefix) {
  Counts n;
  for (ParamGroup g : all_param_groups()) n.groups[g] = 0;
  for (const auto& d : c.datasets) {
    if (d.compare(0, prefix.size(), prefix) != 0) continue;
    const std::int64_t numel = h5::dataset_shape(c.file, d).numel();
    n.groups[param_group(d.substr(prefix.size()))] += numel;
    n.total += numel;
    ++n.tensors;
  }
  return n;
}

std::int64_t count_below(const std::vector<std::string>& datasets, const std::string& prefix) {
  std::int64_t n = 0;
  for (const auto& d : datasets) n += d.compare(0, prefix.size(), prefix) == 0;
  return n;
}

// [a, b] of a two-element state dataset; empty when the file lacks it.
std::vector<std::int64_t> state_pair(const InspectedCheckpoint& c, const std::string& dataset) {
  if (!contains_dataset(c.datasets, dataset)) return {};
  return h5::read_tensor(c.file, dataset, DType::i64).to_vector<std::int64_t>();
}

std::string pair_json(const std::vector<std::int64_t>& v, const char* first, const char* second) {
  if (v.size() != 2) return v.empty() ? "null" : json_array(v);
  return Json().add(first, v[0]).add(second, v[1]).str();
}

std::string pair_text(const std::vector<std::int64_t>& v, const char* first, const char* second) {
  if (v.empty()) return "absent";
  if (v.size() != 2) return "unexpected values " + format_integers(v);
  return std::string(first) + " " + std::to_string(v[0]) + ", " + second + " " + std::to_string(v[1]);
}

}  // namespace

void summary_view(const std::string& path, bool json, std::ostream& out) {
  const InspectedCheckpoint c = open_inspected_checkpoint(path);
  const std::uintmax_t size = std::filesystem::file_size(path);
  const std::string ini = h5::has_attribute(c.file, "/", "config") ? h5::read_string_attribute(c.file, "/", "config")
                                                                    : std::string();
  const std::vector<MoeBlock> blocks = find_moe_blocks(c.file, c.datasets);
  const bool has_record = count_below(c.datasets, "/upcycle/") > 0;
  const ConfigDigest cfg = ini.empty() ? ConfigDigest{false, "the root attribute 'config' is missing", {}, {}, -1}
                                       : digest_config(ini, "checkpoint " + path, !blocks.empty(),
                                                       has_record || config_says_upcycled(ini, c.stage));
  const Counts model = count_parameters(c, "/model/");
  const Counts teacher = count_parameters(c, "/teacher/");
  const std::int64_t moments = count_below(c.datasets, "/optimizer/m/");
  const bool has_optimizer = h5::has_group(c.file, "/optimizer");
  const bool has_steps = has_optimizer && h5::has_attribute(c.file, "/optimizer", "steps");
  const std::int64_t opt_steps = has_steps ? h5::read_int_attribute(c.file, "/optimizer", "steps") : -1;
  const std::vector<std::int64_t> rng = state_pair(c, "/state/rng/dropout");
  const std::vector<std::int64_t> cursor = state_pair(c, "/state/data/cursor");

  if (json) {
    Json o;
    o.add("file", path).add("file_size", static_cast<std::int64_t>(size));
    o.add("format", "upcycle-checkpoint").add("version", c.version).add("stage", c.stage).add("step", c.step);
    Json conf;
    if (cfg.parsed) {
      for (const auto& [k, v] : cfg.key_lines) conf.add(k, v);
      Json nd;
      for (const auto& [k, v] : cfg.non_default) nd.add(k, v);
      conf.add_raw("non_default", nd.str());
    } else {
      conf.add("error", cfg.error);
    }
    o.add_raw("config", conf.str());
    Json params;
    params.add("total", model.total).add("tensors", model.tensors);
    for (ParamGroup g : all_param_groups()) params.add(param_group_name(g), model.groups.at(g));
    o.add_raw("parameters", params.str());
    std::vector<std::string> moe;
    for (const auto& b : blocks) {
      Json jb;
      jb.add("block", b.name).add("num_experts", b.experts);
      if (cfg.parsed) jb.add("top_k", cfg.top_k); else jb.add_null("top_k");
      moe.push_back(jb.str());
    }
    o.add_raw("moe_blocks", json_raw_array(moe));
    Json opt;
    opt.add("present", has_optimizer).add("tensors", moments);
    if (has_steps) opt.add("steps", opt_steps); else opt.add_null("steps");
    o.add_raw("optimizer", opt.str());
    o.add_raw("teacher", Json().add("present", teacher.tensors > 0).add("tensors", teacher.tensors)
                             .add("parameters", teacher.total).str());
    o.add_raw("rng", pair_json(rng, "seed", "offset"));
    o.add_raw("data_cursor", pair_json(cursor, "epoch", "position"));
    o.add("upcycle_record", has_record);
    o.add("datasets", static_cast<std::int64_t>(c.datasets.size()));
    out << o.str() << "\n";
    return;
  }

  const std::size_t w = 14;
  out << pad_right("checkpoint", w) << path << "\n";
  out << pad_right("file size", w) << format_bytes(size) << ", " << c.datasets.size() << " datasets\n";
  out << pad_right("format", w) << "upcycle-checkpoint, version " << c.version << "\n";
  out << pad_right("stage", w) << c.stage << ", step " << c.step << "\n";
  if (cfg.parsed) {
    out << "config\n";
    for (const auto& [k, v] : cfg.key_lines) out << "  " << pad_right(k, 24) << v << "\n";
    out << "  non-default keys (" << cfg.non_default.size() << "; --config prints them all):\n";
    for (const auto& [k, v] : cfg.non_default) out << "    " << k << " = " << v << "\n";
  } else {
    out << pad_right("config", w) << "not readable by this build: " << cfg.error << "\n";
  }
  out << "parameters    " << model.total << " in " << model.tensors << " tensors\n";
  for (ParamGroup g : all_param_groups())
    out << "  " << pad_right(param_group_name(g), 16) << pad_left(std::to_string(model.groups.at(g)), 12) << "\n";
  if (blocks.empty()) {
    out << pad_right("MoE blocks", w) << "none\n";
  } else {
    out << pad_right("MoE blocks", w) << blocks.size() << " (--experts shows them)\n";
    for (const auto& b : blocks)
      out << "  " << b.name << ": E " << b.experts << ", k " << (cfg.parsed ? std::to_string(cfg.top_k) : "?") << "\n";
  }
  out << pad_right("optimizer", w);
  if (has_optimizer)
    out << "AdamW moments of " << moments << " tensors"
        << (has_steps ? ", " + std::to_string(opt_steps) + " steps" : "") << "\n";
  else
    out << "absent\n";
  out << pad_right("EMA teacher", w);
  if (teacher.tensors)
    out << teacher.tensors << " tensors, " << teacher.total << " parameters\n";
  else
    out << "absent\n";
  out << pad_right("RNG state", w) << pair_text(rng, "seed", "offset") << "\n";
  out << pad_right("data cursor", w) << pair_text(cursor, "epoch", "position") << "\n";
  out << pad_right("upcycling", w) << (has_record ? "record present (--experts shows it)" : "no record") << "\n";
}

}  // namespace upcycle::inspect
