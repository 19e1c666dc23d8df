#pragma once
// What the dataset names of a checkpoint mean (docs/training.md "Checkpoints", moe/moe_layer.hpp):
// the parameter group of a model tensor and the MoE blocks with their expert tensors.
#include <cstdint>
#include <string>
#include <vector>

#include "upcycle/io/hdf5.hpp"

namespace upcycle::inspect {

// Groups of the summary's parameter counts, in the order it prints them.
enum class ParamGroup { embeddings, attention, dense_ffn, experts, shared_expert, routers, norms_other };
const std::vector<ParamGroup>& all_param_groups();
const char* param_group_name(ParamGroup g);  // "embeddings", "dense_ffn", ...
// `name` is a parameter name below /model/ (or /teacher/), e.g. "blocks/01/moe/experts/w1".
ParamGroup param_group(const std::string& name);

// The tensors of an expert's own weights: its flattened weight vector, used for the cosine
// similarity and the drift, is w1 then w2 (the biases are left out, as in the eval stage's
// weight_cosine, so the two measures agree).
inline const std::vector<std::string>& expert_weight_names() {
  static const std::vector<std::string> names = {"w1", "w2"};
  return names;
}

struct MoeBlock {
  std::string name;         // "blocks/01": the module path of the block
  std::int64_t experts = 0;  // E: dim 0 of every expert tensor
  std::vector<std::string> expert_tensors;  // those of "w1", "b1", "w2", "b2" the file has, in this order
  std::string dataset(const std::string& prefix, const std::string& tensor) const {  // prefix "/model/"
    return prefix + name + "/moe/experts/" + tensor;
  }
  std::string router(const std::string& prefix) const { return prefix + name + "/moe/router/weight"; }
};

// The MoE blocks of the tensors below `prefix` ("/model/"), found by their ".../moe/experts/..."
// datasets. Throws Error naming the dataset when the expert tensors of a block disagree on E.
std::vector<MoeBlock> find_moe_blocks(const h5::File& file, const std::vector<std::string>& datasets,
                                      const std::string& prefix = "/model/");

}  // namespace upcycle::inspect
