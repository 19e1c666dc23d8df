#pragma once
#include "upcycle/core/rng.hpp"
#include "upcycle/nn/linear.hpp"

namespace upcycle::nn {

struct AttentionConfig {
  std::int64_t d_model = 0;
  std::int64_t n_heads = 0;
  bool causal = false;
  bool bias = true;
  double init_std = 0.02;      // qkv
  double out_init_std = 0.02;  // out projection (feeds the residual stream)
};

// Multi-head self-attention with a fused qkv projection. Parameters: "qkv/weight" [3D, D],
// "qkv/bias" [3D], "out/weight" [D, D], "out/bias" [D].
//
// Layout of the fused projection (the checkpoint and PyTorch-parity contract): its output is
// [B, T, 3, H, Dh], i.e. rows 0..D-1 of qkv/weight produce q, rows D..2D-1 k, rows 2D..3D-1 v,
// and within each, head h owns rows h*Dh..(h+1)*Dh-1.
class MultiHeadAttention : public Module {
 public:
  MultiHeadAttention(const AttentionConfig& config, RngStream& rng);
  Var forward(const Var& x) const;  // x [B, T, D] -> [B, T, D]
  const AttentionConfig& config() const { return config_; }
  std::int64_t head_dim() const { return config_.d_model / config_.n_heads; }

  Linear qkv;
  Linear out;

 private:
  AttentionConfig config_;
};

}  // namespace upcycle::nn
