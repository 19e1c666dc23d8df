// upcycle_inspect --diff A B: how far checkpoint A is from B, tensor by tensor (two tensors in
// memory at a time), and per expert of each MoE block how far its weights moved.
#include <algorithm>
#include <cmath>
#include <iterator>
#include <map>

#include "checkpoint_file.hpp"
#include "json.hpp"
#include "layout.hpp"
#include "tensor_stats.hpp"
#include "text_format.hpp"
#include "views.hpp"

namespace upcycle::inspect {

namespace {

struct TensorDiff {
  std::string name;
  Shape shape;
  DiffStats stats;
};

struct Mismatch {
  std::string name;
  Shape a, b;
};

// The per-expert sums of one MoE block present in both files with the same E.
struct BlockDrift {
  std::string name;
  std::int64_t experts = 0;
  std::size_t expected = 0, compared = 0;  // expert weight tensors in both files / compared
  std::vector<double> diff_sq, b_sq;
  bool complete() const { return expected > 0 && compared == expected; }
};

std::string side_json(const InspectedCheckpoint& c) {
  return Json().add("file", c.path).add("stage", c.stage).add("step", c.step).str();
}

}  // namespace

void diff_view(const std::string& path_a, const std::string& path_b, bool json, std::ostream& out) {
  const InspectedCheckpoint a = open_inspected_checkpoint(path_a);
  const InspectedCheckpoint b = open_inspected_checkpoint(path_b);

  std::vector<BlockDrift> drifts;
  std::map<std::string, std::size_t> drift_of;  // expert weight dataset -> index in drifts
  {
    const auto blocks_b = find_moe_blocks(b.file, b.datasets);
    for (const auto& ba : find_moe_blocks(a.file, a.datasets)) {
      const auto bb =
          std::find_if(blocks_b.begin(), blocks_b.end(), [&](const MoeBlock& x) { return x.name == ba.name; });
      if (bb == blocks_b.end() || bb->experts != ba.experts) continue;
      BlockDrift d;
      d.name = ba.name;
      d.experts = ba.experts;
      d.diff_sq.assign(static_cast<std::size_t>(ba.experts), 0.0);
      d.b_sq = d.diff_sq;
      for (const auto& w : expert_weight_names()) {
        const std::string ds = ba.dataset("/model/", w);
        if (contains_dataset(a.datasets, ds) && contains_dataset(b.datasets, ds)) {
          ++d.expected;
          drift_of[ds] = drifts.size();
        }
      }
      drifts.push_back(std::move(d));
    }
  }

  std::vector<TensorDiff> diffs;
  std::vector<Mismatch> mismatches;
  std::vector<std::string> only_a, only_b;
  std::set_difference(a.datasets.begin(), a.datasets.end(), b.datasets.begin(), b.datasets.end(),
                      std::back_inserter(only_a));
  std::set_difference(b.datasets.begin(), b.datasets.end(), a.datasets.begin(), a.datasets.end(),
                      std::back_inserter(only_b));
  for (const auto& name : a.datasets) {
    if (!contains_dataset(b.datasets, name)) continue;
    const Shape sa = h5::dataset_shape(a.file, name), sb = h5::dataset_shape(b.file, name);
    if (sa != sb) {
      mismatches.push_back({name, sa, sb});
      continue;
    }
    const Tensor ta = h5::read_tensor(a.file, name), tb = h5::read_tensor(b.file, name);
    const auto it = drift_of.find(name);
    BlockDrift* drift = it == drift_of.end() ? nullptr : &drifts[it->second];
    diffs.push_back({name, sa, diff_stats(ta, tb, drift ? &drift->diff_sq : nullptr, drift ? &drift->b_sq : nullptr)});
    if (drift) ++drift->compared;
  }
  std::int64_t differing = 0;
  for (const auto& d : diffs) differing += d.stats.diff_sq > 0.0 || d.stats.nonfinite > 0;

  if (json) {
    std::vector<std::string> tensors, shapes, experts;
    for (const auto& d : diffs)
      tensors.push_back(Json()
                            .add("name", d.name)
                            .add_raw("shape", json_array(d.shape.to_vector()))
                            .add("max_abs_diff", d.stats.max_abs)
                            .add("norm_diff", std::sqrt(d.stats.diff_sq))
                            .add("rel_norm_diff", relative_norm(d.stats.diff_sq, d.stats.b_sq))
                            .add("nonfinite", d.stats.nonfinite)
                            .str());
    for (const auto& m : mismatches)
      shapes.push_back(Json()
                           .add("name", m.name)
                           .add_raw("shape_a", json_array(m.a.to_vector()))
                           .add_raw("shape_b", json_array(m.b.to_vector()))
                           .str());
    for (const auto& d : drifts) {
      Json o;
      o.add("block", d.name).add("num_experts", d.experts);
      if (d.complete()) {
        std::vector<double> drift;
        for (std::size_t e = 0; e < d.diff_sq.size(); ++e) drift.push_back(relative_norm(d.diff_sq[e], d.b_sq[e]));
        o.add_raw("drift", json_array(drift));
      } else {
        o.add_null("drift");
      }
      experts.push_back(o.str());
    }
    out << Json()
               .add_raw("a", side_json(a))
               .add_raw("b", side_json(b))
               .add("tensors_compared", static_cast<std::int64_t>(diffs.size()))
               .add("tensors_differing", differing)
               .add_raw("tensors", json_raw_array(tensors))
               .add_raw("only_in_a", json_string_array(only_a))
               .add_raw("only_in_b", json_string_array(only_b))
               .add_raw("shape_mismatches", json_raw_array(shapes))
               .add_raw("experts", json_raw_array(experts))
               .str()
        << "\n";
    return;
  }

  out << "A  " << a.path << " (stage " << a.stage << ", step " << a.step << ")\n";
  out << "B  " << b.path << " (stage " << b.stage << ", step " << b.step << ")\n";
  std::size_t width = 6;
  for (const auto& d : diffs) width = std::max(width, d.name.size());
  out << pad_right("tensor", width) << "  " << pad_right("shape", 14) << pad_left("max|A-B|", 11)
      << pad_left("||A-B||/||B||", 15) << "\n";
  for (const auto& d : diffs)
    out << pad_right(d.name, width) << "  " << pad_right(format_shape(d.shape), 14)
        << pad_left(format_number(d.stats.max_abs), 11)
        << pad_left(format_number(relative_norm(d.stats.diff_sq, d.stats.b_sq)), 15)
        << (d.stats.nonfinite ? "  (" + std::to_string(d.stats.nonfinite) + " non-finite pairs left out)" : "") << "\n";
  out << diffs.size() << " tensors in both, " << differing << " differ; " << only_a.size() << " only in A, "
      << only_b.size() << " only in B, " << mismatches.size() << " shape mismatches\n";
  if (!only_a.empty()) {
    out << "only in A:\n";
    for (const auto& n : only_a) out << "  " << n << "\n";
  }
  if (!only_b.empty()) {
    out << "only in B:\n";
    for (const auto& n : only_b) out << "  " << n << "\n";
  }
  if (!mismatches.empty()) {
    out << "shape mismatches:\n";
    for (const auto& m : mismatches)
      out << "  " << m.name << ": " << format_shape(m.a) << " in A, " << format_shape(m.b) << " in B\n";
  }
  if (!drifts.empty()) {
    out << "expert drift ||A_e - B_e|| / ||B_e|| (w1 and w2 of each expert), expert 0 first:\n";
    for (const auto& d : drifts) {
      out << "  " << pad_right(d.name, 12);
      if (!d.complete()) {
        out << "not comparable (expert weights missing or of other shapes)\n";
        continue;
      }
      for (std::size_t e = 0; e < d.diff_sq.size(); ++e)
        out << " " << format_number(relative_norm(d.diff_sq[e], d.b_sq[e]));
      out << "\n";
    }
  }
}

}  // namespace upcycle::inspect
