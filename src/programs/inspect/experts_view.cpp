// upcycle_inspect CKPT --experts: per MoE block, how the experts differ from each other, what the
// router and the aux-free bias hold, and what upcycling recorded. Tensors are read one at a time.
#include <cmath>
#include <limits>

#include "checkpoint_file.hpp"
#include "config_digest.hpp"
#include "json.hpp"
#include "layout.hpp"
#include "tensor_stats.hpp"
#include "text_format.hpp"
#include "views.hpp"

namespace upcycle::inspect {

namespace {

struct NamedValues {
  std::string name;
  std::vector<double> values;
  bool integral = false;
};

struct BlockReport {
  std::vector<NamedValues> tensor_norms;  // per expert tensor: ||t[e]||
  std::vector<double> weight_norms;       // ||w1[e], w2[e]||
  std::vector<double> cosine;             // [E * E]
  double mean_cosine = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> router_row_norms;   // empty when the file has no router
  bool has_bias = false;
  std::vector<double> aux_free_bias;
  std::vector<NamedValues> upcycle;       // the /upcycle/<block>/ datasets
};

std::vector<double> square_roots(std::vector<double> v) {
  for (double& x : v) x = std::sqrt(x);
  return v;
}

BlockReport inspect_block(const InspectedCheckpoint& c, const MoeBlock& b) {
  const auto E = static_cast<std::size_t>(b.experts);
  BlockReport r;
  std::vector<double> weight_sq(E, 0.0), gram(E * E, 0.0);
  for (const auto& name : b.expert_tensors) {
    const Tensor t = h5::read_tensor(c.file, b.dataset("/model/", name));
    std::vector<double> sq(E, 0.0);
    add_row_sum_sq(t, sq);
    r.tensor_norms.push_back({name, square_roots(sq), false});
    for (const auto& w : expert_weight_names())
      if (name == w) {
        for (std::size_t e = 0; e < E; ++e) weight_sq[e] += sq[e];
        add_row_gram(t, gram);
      }
  }
  r.weight_norms = square_roots(weight_sq);
  r.cosine.assign(E * E, 0.0);
  double off = 0.0;
  for (std::size_t i = 0; i < E; ++i)
    for (std::size_t j = 0; j < E; ++j) {
      r.cosine[i * E + j] = gram[i * E + j] / std::sqrt(gram[i * E + i] * gram[j * E + j]);
      if (i < j) off += r.cosine[i * E + j];
    }
  if (E >= 2) r.mean_cosine = off / static_cast<double>(E * (E - 1) / 2);
  const std::string router = b.router("/model/");
  if (contains_dataset(c.datasets, router)) {
    r.router_row_norms.assign(E, 0.0);
    add_row_sum_sq(h5::read_tensor(c.file, router), r.router_row_norms);
    r.router_row_norms = square_roots(r.router_row_norms);
  }
  const std::string bias = "/state/moe/" + b.name + "/aux_free_bias";
  if (contains_dataset(c.datasets, bias)) {
    r.has_bias = true;
    r.aux_free_bias = to_doubles(h5::read_tensor(c.file, bias));
  }
  const std::string record = "/upcycle/" + b.name + "/";
  for (const auto& d : c.datasets)
    if (d.compare(0, record.size(), record) == 0) {
      const Tensor t = h5::read_tensor(c.file, d);
      r.upcycle.push_back({d.substr(record.size()), to_doubles(t), !is_floating(t.dtype())});
    }
  return r;
}

std::string values_json(const NamedValues& v) {
  if (!v.integral) return json_array(v.values);
  std::vector<std::int64_t> ints;
  for (double x : v.values) ints.push_back(static_cast<std::int64_t>(x));
  return json_array(ints);
}

std::string block_json(const MoeBlock& b, std::int64_t top_k, const BlockReport& r) {
  Json o;
  o.add("block", b.name).add("num_experts", b.experts);
  if (top_k >= 0) o.add("top_k", top_k); else o.add_null("top_k");
  Json norms;
  for (const auto& t : r.tensor_norms) norms.add_raw(t.name, json_array(t.values));
  norms.add_raw("weights", json_array(r.weight_norms));
  o.add_raw("expert_norms", norms.str());
  std::vector<std::string> rows;
  const auto E = static_cast<std::size_t>(b.experts);
  for (std::size_t i = 0; i < E; ++i)
    rows.push_back(json_array(std::vector<double>(r.cosine.begin() + i * E, r.cosine.begin() + (i + 1) * E)));
  o.add_raw("cosine", json_raw_array(rows)).add("mean_cosine", r.mean_cosine);
  o.add_raw("router_row_norms", r.router_row_norms.empty() ? "null" : json_array(r.router_row_norms));
  o.add_raw("aux_free_bias", r.has_bias ? json_array(r.aux_free_bias) : "null");
  if (r.upcycle.empty()) {
    o.add_null("upcycle");
  } else {
    Json rec;
    for (const auto& v : r.upcycle) rec.add_raw(v.name, values_json(v));
    o.add_raw("upcycle", rec.str());
  }
  return o.str();
}

void block_text(const MoeBlock& b, std::int64_t top_k, const BlockReport& r, std::ostream& out) {
  const auto E = static_cast<std::size_t>(b.experts);
  out << b.name << ": E " << b.experts << ", k " << (top_k >= 0 ? std::to_string(top_k) : "?") << "\n";
  out << "  " << pad_left("expert", 6);
  for (const auto& t : r.tensor_norms) out << pad_left("|" + t.name + "|", 11);
  out << pad_left("|w1,w2|", 11);
  if (!r.router_row_norms.empty()) out << pad_left("router row", 12);
  if (r.has_bias) out << pad_left("aux-free bias", 15);
  out << "\n";
  for (std::size_t e = 0; e < E; ++e) {
    out << "  " << pad_left(std::to_string(e), 6);
    for (const auto& t : r.tensor_norms) out << pad_left(format_number(t.values[e]), 11);
    out << pad_left(format_number(r.weight_norms[e]), 11);
    if (!r.router_row_norms.empty()) out << pad_left(format_number(r.router_row_norms[e]), 12);
    if (r.has_bias) out << pad_left(e < r.aux_free_bias.size() ? format_number(r.aux_free_bias[e]) : "-", 15);
    out << "\n";
  }
  out << "  weight cosine (w1 and w2 of each expert flattened), mean off-diagonal "
      << format_number(r.mean_cosine) << ":\n";
  out << "  " << pad_left("", 6);
  for (std::size_t j = 0; j < E; ++j) out << pad_left(std::to_string(j), 8);
  out << "\n";
  for (std::size_t i = 0; i < E; ++i) {
    out << "  " << pad_left(std::to_string(i), 6);
    for (std::size_t j = 0; j < E; ++j) out << pad_left(format_number(r.cosine[i * E + j], 3), 8);
    out << "\n";
  }
  if (!r.upcycle.empty()) {
    out << "  upcycling record:\n";
    for (const auto& v : r.upcycle) out << "    " << pad_right(v.name, 18) << format_numbers(v.values, 6) << "\n";
  }
}

}  // namespace

void experts_view(const std::string& path, bool json, std::ostream& out) {
  const InspectedCheckpoint c = open_inspected_checkpoint(path);
  const std::vector<MoeBlock> blocks = find_moe_blocks(c.file, c.datasets);
  std::int64_t top_k = -1;
  if (!blocks.empty() && h5::has_attribute(c.file, "/", "config"))
    top_k = digest_config(h5::read_string_attribute(c.file, "/", "config"), "checkpoint " + path, true, false).top_k;
  std::vector<std::string> items;
  if (!json) {
    out << path << ": stage " << c.stage << ", step " << c.step << ", " << blocks.size() << " MoE block"
        << (blocks.size() == 1 ? "" : "s") << "\n";
    if (blocks.empty()) out << "no MoE blocks (no /model/.../moe/experts/ tensors): a dense checkpoint\n";
  }
  for (const auto& b : blocks) {
    const BlockReport r = inspect_block(c, b);
    if (json)
      items.push_back(block_json(b, top_k, r));
    else
      block_text(b, top_k, r, out);
  }
  if (json)
    out << Json()
               .add("file", path)
               .add("stage", c.stage)
               .add("step", c.step)
               .add_raw("blocks", json_raw_array(items))
               .str()
        << "\n";
}

}  // namespace upcycle::inspect
