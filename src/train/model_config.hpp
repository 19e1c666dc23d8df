#pragma once
// Config -> model configs, shared by the tasks (and later by the MoE and upcycling stages).
#include "upcycle/io/config.hpp"
#include "upcycle/nn/gpt.hpp"
#include "upcycle/nn/vit.hpp"

namespace upcycle {

nn::TransformerBlockConfig block_config_from(const Config& cfg);
nn::ViTConfig vit_config_from(const Config& cfg);
nn::GPTConfig gpt_config_from(const Config& cfg);

}  // namespace upcycle
