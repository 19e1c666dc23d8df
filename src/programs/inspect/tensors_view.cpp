// upcycle_inspect CKPT --tensors: every dataset with its statistics, read one at a time.
#include <algorithm>

#include "checkpoint_file.hpp"
#include "json.hpp"
#include "tensor_stats.hpp"
#include "text_format.hpp"
#include "views.hpp"

namespace upcycle::inspect {

void tensors_view(const std::string& path, bool json, std::ostream& out) {
  const InspectedCheckpoint c = open_inspected_checkpoint(path);
  std::size_t name_width = 6;
  for (const auto& d : c.datasets) name_width = std::max(name_width, d.size());
  std::vector<std::string> items;
  std::int64_t flagged = 0;
  if (!json)
    out << pad_right("tensor", name_width) << "  " << pad_right("shape", 14) << pad_right("dtype", 6)
        << pad_left("norm", 11) << pad_left("mean", 12) << pad_left("std", 11) << pad_left("min", 12)
        << pad_left("max", 12) << pad_left("nan", 6) << pad_left("inf", 6) << "\n";
  for (const auto& d : c.datasets) {
    const Tensor t = h5::read_tensor(c.file, d);  // one tensor in memory at a time
    const TensorStats s = tensor_stats(t);
    flagged += s.nonfinite() > 0;
    if (json) {
      Json o;
      o.add("name", d).add_raw("shape", json_array(t.shape().to_vector())).add("dtype", dtype_name(t.dtype()));
      o.add("numel", s.numel).add("norm", s.norm()).add("mean", s.mean).add("std", s.std);
      o.add("min", s.min).add("max", s.max).add("nan", s.nan).add("inf", s.inf);
      items.push_back(o.str());
      continue;
    }
    out << pad_right(d, name_width) << "  " << pad_right(format_shape(t.shape()), 14)
        << pad_right(dtype_name(t.dtype()), 6) << pad_left(format_number(s.norm()), 11)
        << pad_left(format_number(s.mean), 12) << pad_left(format_number(s.std), 11)
        << pad_left(format_number(s.min), 12) << pad_left(format_number(s.max), 12)
        << pad_left(std::to_string(s.nan), 6) << pad_left(std::to_string(s.inf), 6)
        << (s.nonfinite() ? "  NON-FINITE" : "") << "\n";
  }
  if (json) {
    out << Json()
               .add("file", path)
               .add_raw("tensors", json_raw_array(items))
               .add("nonfinite_tensors", flagged)
               .str()
        << "\n";
    return;
  }
  out << c.datasets.size() << " tensors; " << flagged << " with NaN or Inf values"
      << " (norm, mean, std, min, max over the finite values)\n";
}

}  // namespace upcycle::inspect
