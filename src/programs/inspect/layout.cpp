#include "layout.hpp"

#include <algorithm>
#include <map>

#include "upcycle/core/error.hpp"

namespace upcycle::inspect {

const std::vector<ParamGroup>& all_param_groups() {
  static const std::vector<ParamGroup> groups = {ParamGroup::embeddings, ParamGroup::attention,
                                                 ParamGroup::dense_ffn,  ParamGroup::experts,
                                                 ParamGroup::shared_expert, ParamGroup::routers,
                                                 ParamGroup::norms_other};
  return groups;
}

const char* param_group_name(ParamGroup g) {
  switch (g) {
    case ParamGroup::embeddings: return "embeddings";
    case ParamGroup::attention: return "attention";
    case ParamGroup::dense_ffn: return "dense_ffn";
    case ParamGroup::experts: return "experts";
    case ParamGroup::shared_expert: return "shared_expert";
    case ParamGroup::routers: return "routers";
    case ParamGroup::norms_other: return "norms_other";
  }
  return "?";
}

namespace {
bool has_component(const std::string& name, const std::string& component) {
  const std::string padded = "/" + name + "/";
  return padded.find("/" + component + "/") != std::string::npos;
}
}  // namespace

ParamGroup param_group(const std::string& name) {
  if (has_component(name, "moe")) {
    if (has_component(name, "experts")) return ParamGroup::experts;
    if (has_component(name, "router")) return ParamGroup::routers;
    if (has_component(name, "shared")) return ParamGroup::shared_expert;
  }
  if (has_component(name, "attn")) return ParamGroup::attention;
  if (has_component(name, "mlp")) return ParamGroup::dense_ffn;
  const std::string first = name.substr(0, name.find('/'));
  if (first == "patch_embed" || first == "cls_token" || first == "pos_embed" || first == "tok_embed")
    return ParamGroup::embeddings;
  return ParamGroup::norms_other;  // layer norms, the head, anything a later model adds
}

std::vector<MoeBlock> find_moe_blocks(const h5::File& file, const std::vector<std::string>& datasets,
                                      const std::string& prefix) {
  static const std::string kExperts = "/moe/experts/";
  std::map<std::string, MoeBlock> blocks;
  for (const auto& d : datasets) {
    if (d.compare(0, prefix.size(), prefix) != 0) continue;
    const auto at = d.find(kExperts, prefix.size());
    if (at == std::string::npos) continue;
    const std::string tensor = d.substr(at + kExperts.size());
    if (tensor.find('/') != std::string::npos) continue;
    MoeBlock& b = blocks[d.substr(prefix.size(), at - prefix.size())];
    b.name = d.substr(prefix.size(), at - prefix.size());
    const Shape shape = h5::dataset_shape(file, d);
    if (shape.ndim() < 1)
      UPCYCLE_THROW(file.path(), ": expert tensor ", d, " is a scalar; expected [E, ...] by global expert id");
    if (b.expert_tensors.empty()) {
      b.experts = shape[0];
    } else if (shape[0] != b.experts) {
      UPCYCLE_THROW(file.path(), ": expert tensor ", d, " has ", shape[0], " experts in dim 0 but ",
                    b.dataset(prefix, b.expert_tensors.front()), " has ", b.experts);
    }
    b.expert_tensors.push_back(tensor);
  }
  // The layer's registration order (w1, b1, w2, b2), anything else after it.
  auto rank = [](const std::string& t) {
    static const std::vector<std::string> order = {"w1", "b1", "w2", "b2"};
    return std::find(order.begin(), order.end(), t) - order.begin();
  };
  std::vector<MoeBlock> out;
  for (auto& [name, b] : blocks) {
    std::stable_sort(b.expert_tensors.begin(), b.expert_tensors.end(),
                     [&](const std::string& x, const std::string& y) { return rank(x) < rank(y); });
    out.push_back(std::move(b));
  }
  return out;
}

}  // namespace upcycle::inspect
