#pragma once
// The evaluation loop the tasks share: this rank's contiguous shard of [0, n) in chunks, in eval
// mode without a graph. An MoE forward is collective over the expert-parallel group, so with MoE
// layers every rank makes the same number of forwards: a rank whose shard is shorter runs
// `pad()` (one throwaway forward) for each chunk it lacks.
#include <algorithm>
#include <functional>
#include <vector>

#include "upcycle/dist/communicator.hpp"
#include "upcycle/moe/moe_layer.hpp"
#include "upcycle/nn/module.hpp"

namespace upcycle {

inline void run_sharded_eval(nn::Module& model, const std::vector<moe::MoeLayer*>& moe_layers,
                             const Communicator& comm, std::int64_t n, std::int64_t chunk,
                             const std::function<void(const std::vector<std::int64_t>&)>& run_chunk,
                             const std::function<void()>& pad) {
  NoGradGuard no_grad;
  const bool was_training = model.training();
  model.eval();
  const std::int64_t per = (n + comm.size() - 1) / comm.size();
  const std::int64_t begin = std::min(n, comm.rank() * per), end = std::min(n, begin + per);
  const std::int64_t padded = moe_layers.empty() ? 0 : (per + chunk - 1) / chunk;
  for (std::int64_t c = 0; c < padded; ++c)
    if (begin + c * chunk >= end) pad();
  std::vector<std::int64_t> idx;
  for (std::int64_t s = begin; s < end; s += chunk) {
    idx.clear();
    for (std::int64_t i = s; i < std::min(end, s + chunk); ++i) idx.push_back(i);
    run_chunk(idx);
  }
  for (auto* layer : moe_layers) layer->clear_routing();
  model.train(was_training);
}

}  // namespace upcycle
