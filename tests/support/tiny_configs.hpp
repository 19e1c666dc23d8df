#pragma once
// Small training configs for tests: models that train in well under a second per step on one core.
#include <string>

namespace upcycle::testing {

// A 2-block ViT on Fashion-MNIST (7x7 patches, width 16), batch 8, no warmup, no clipping.
inline std::string tiny_vit_ini(int steps, const std::string& run_dir = "") {
  return "[run]\nstages = dense\nseed = 7\ndevice = cpu\ndir = " + run_dir +
         "\n[model]\nkind = vit\nwidth = 16\ndepth = 2\nheads = 2\nffn_width = 32\npatch_size = 7\n"
         "[train]\nsteps = " + std::to_string(steps) +
         "\nbatch_size = 8\nlr = 0.003\nmin_lr = 0.0003\nwarmup_steps = 0\ngrad_clip = 0\neval_every = 0\n"
         "[data]\ndataset = fashion_mnist\n"
         "[checkpoint]\nevery = 0\n"
         "[log]\nprogress = off\nevery = 1\n";
}

// The tiny ViT above as a randomly initialised MoE (stage moe): block 1 of 2 (every_other) is an
// MoE block with E = 4 experts of ffn_width 32, top-2; parallel.expert_parallel = ep (0 = auto).
inline std::string tiny_vit_moe_ini(int steps, const std::string& run_dir = "", int ep = 0) {
  std::string ini = tiny_vit_ini(steps, run_dir);
  ini.replace(ini.find("stages = dense"), 14, "stages = moe");
  return ini + "[moe]\nblocks = every_other\nnum_experts = 4\ntop_k = 2\n[parallel]\nexpert_parallel = " +
         std::to_string(ep) + "\n";
}

}  // namespace upcycle::testing
