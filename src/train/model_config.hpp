#pragma once
// Config -> model configs, shared by the tasks (and later by the MoE and upcycling stages).
#include "upcycle/io/config.hpp"
#include "upcycle/moe/moe_layer.hpp"
#include "upcycle/nn/gpt.hpp"
#include "upcycle/nn/vit.hpp"
#include "upcycle/train/task.hpp"

namespace upcycle {

nn::TransformerBlockConfig block_config_from(const Config& cfg);
// With options.moe the blocks named by moe.blocks / moe.block_list get the MoE FFN of
// moe_config_from(cfg), sharded over options.expert_parallel.
nn::ViTConfig vit_config_from(const Config& cfg, const TaskOptions& options = {});
nn::GPTConfig gpt_config_from(const Config& cfg, const TaskOptions& options = {});

// [moe] keys -> the MoE layer config (d_ff = expert_ffn_width_from, activation as the dense FFN,
// expert init as the dense FFN's, router std = upcycle.router_std).
moe::MoeConfig moe_config_from(const Config& cfg);
// Hidden units per expert: moe.expert_ffn_width, or when 0 model.ffn_width (model.ffn_width /
// upcycle.granularity with upcycle.method = granular: each expert is one shard of the dense FFN).
std::int64_t expert_ffn_width_from(const Config& cfg);
// The device a task's model lives on: run.device resolved by choose_device (auto -> cuda when usable).
Device model_device_from(const Config& cfg);
// The 0-based MoE block indices of moe.blocks: every_other = 1, 3, 5, ...; all; list = moe.block_list.
std::vector<std::int64_t> moe_block_indices_from(const Config& cfg);

}  // namespace upcycle
