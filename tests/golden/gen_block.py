#!/usr/bin/python3
"""Golden data for the PyTorch parity test of one pre-LN transformer block plus a
cross-entropy head (tests/golden/test_golden_block.cpp).

    /usr/bin/python3 tests/golden/gen_block.py OUT.h5 [--causal] [--seed N]

Written by hand rather than with nn.TransformerEncoderLayer so that every layout matches the
C++ model exactly (torch 1.13 also has no F.scaled_dot_product_attention):

    h      = x + attn(ln1(x))
    y      = h + fc2(gelu_tanh(fc1(ln2(h))))              block output  [B, T, D]
    logits = y head.weight^T + head.bias                   [B, T, C]
    loss   = mean cross-entropy over the tokens whose target != -100

attn: qkv = ln1(x) Wqkv^T + bqkv viewed as [B, T, 3, H, Dh] (q, k, v, then heads), softmax of
q k^T / sqrt(Dh) per head (optionally causal), heads merged back to [B, T, D], out-projection.

HDF5 layout (all float32 except targets):
    /x [B, T, D], /targets int64 [B, T] (one entry is -100, the ignore index)
    /<name> for every parameter, with the C++ named_parameters() names under the prefixes
        "block/" (the TransformerBlock) and "head/" (the Linear head),
        e.g. /block/attn/qkv/weight [3D, D], /head/weight [C, D]
    /block_out [B, T, D], /logits [B, T, C], /loss [1]
    /grad/<name> d loss / d parameter, /grad/x d loss / d x
    attributes on /: B, T, D, H, F, C, causal, seed, ln_eps, torch_version
"""
import argparse
import math
import os

import h5py
import numpy as np
import torch
import torch.nn.functional as F

B, T, D, H, F_FF, C = 2, 5, 16, 4, 64, 7
LN_EPS = 1e-5
IGNORE = -100


def make_parameters(gen):
    """Every parameter by its C++ name. Random (not the training init) so that LayerNorm's affine
    parameters and all biases take part, at scales that keep activations O(1)."""

    def randn(*shape, std):
        return torch.randn(*shape, generator=gen, dtype=torch.float32) * std

    p = {}
    for ln in ("ln1", "ln2"):
        p[f"block/{ln}/gamma"] = 1.0 + randn(D, std=0.1)
        p[f"block/{ln}/beta"] = randn(D, std=0.1)
    p["block/attn/qkv/weight"] = randn(3 * D, D, std=1.0 / math.sqrt(D))
    p["block/attn/qkv/bias"] = randn(3 * D, std=0.1)
    p["block/attn/out/weight"] = randn(D, D, std=1.0 / math.sqrt(D))
    p["block/attn/out/bias"] = randn(D, std=0.1)
    p["block/mlp/fc1/weight"] = randn(F_FF, D, std=1.0 / math.sqrt(D))
    p["block/mlp/fc1/bias"] = randn(F_FF, std=0.1)
    p["block/mlp/fc2/weight"] = randn(D, F_FF, std=1.0 / math.sqrt(F_FF))
    p["block/mlp/fc2/bias"] = randn(D, std=0.1)
    p["head/weight"] = randn(C, D, std=1.0 / math.sqrt(D))
    p["head/bias"] = randn(C, std=0.1)
    return {k: v.requires_grad_(True) for k, v in p.items()}


def attention(x, p, causal):
    dh = D // H
    qkv = F.linear(x, p["block/attn/qkv/weight"], p["block/attn/qkv/bias"])  # [B, T, 3D]
    qkv = qkv.view(B, T, 3, H, dh).permute(2, 0, 3, 1, 4)  # [3, B, H, T, Dh]
    q, k, v = qkv[0], qkv[1], qkv[2]
    scores = q @ k.transpose(-1, -2) / math.sqrt(dh)  # [B, H, T, T]
    if causal:
        future = torch.ones(T, T, dtype=torch.bool).triu(diagonal=1)
        scores = scores.masked_fill(future, float("-inf"))
    y = torch.softmax(scores, dim=-1) @ v  # [B, H, T, Dh]
    y = y.permute(0, 2, 1, 3).reshape(B, T, D)
    return F.linear(y, p["block/attn/out/weight"], p["block/attn/out/bias"])


def block(x, p, causal):
    ln1 = F.layer_norm(x, (D,), p["block/ln1/gamma"], p["block/ln1/beta"], eps=LN_EPS)
    h = x + attention(ln1, p, causal)
    ln2 = F.layer_norm(h, (D,), p["block/ln2/gamma"], p["block/ln2/beta"], eps=LN_EPS)
    a = F.gelu(F.linear(ln2, p["block/mlp/fc1/weight"], p["block/mlp/fc1/bias"]), approximate="tanh")
    return h + F.linear(a, p["block/mlp/fc2/weight"], p["block/mlp/fc2/bias"])


def check_against_torch_mha(x, p, causal):
    """Guards the hand-written reference: it must agree with torch.nn.MultiheadAttention, whose
    in_proj_weight has the same [q; k; v] x heads layout as our fused qkv."""
    mha = torch.nn.MultiheadAttention(D, H, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(p["block/attn/qkv/weight"])
        mha.in_proj_bias.copy_(p["block/attn/qkv/bias"])
        mha.out_proj.weight.copy_(p["block/attn/out/weight"])
        mha.out_proj.bias.copy_(p["block/attn/out/bias"])
        mask = torch.ones(T, T, dtype=torch.bool).triu(diagonal=1) if causal else None
        expected, _ = mha(x, x, x, attn_mask=mask, need_weights=False)
        got = attention(x, p, causal)
    err = (got - expected).abs().max().item()
    assert err < 1e-5, f"hand-written attention differs from nn.MultiheadAttention by {err}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="HDF5 file to write")
    ap.add_argument("--causal", action="store_true", help="causal attention mask")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # deterministic reductions; the data are tiny anyway
    gen = torch.Generator().manual_seed(args.seed)

    params = make_parameters(gen)
    x = torch.randn(B, T, D, generator=gen, dtype=torch.float32).requires_grad_(True)
    targets = torch.randint(0, C, (B, T), generator=gen, dtype=torch.int64)
    targets[0, 2] = IGNORE

    check_against_torch_mha(x.detach(), params, args.causal)
    y = block(x, params, args.causal)
    logits = F.linear(y, params["head/weight"], params["head/bias"])
    loss = F.cross_entropy(logits.reshape(-1, C), targets.reshape(-1), ignore_index=IGNORE)
    loss.backward()

    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    tmp = args.out + ".tmp"  # a run killed half-way never leaves a file the test would trust
    with h5py.File(tmp, "w") as f:
        def put(name, t):
            f.create_dataset(name, data=t.detach().numpy())

        put("x", x)
        put("targets", targets)
        for name, p in params.items():
            put(name, p)
            put("grad/" + name, p.grad)
        put("grad/x", x.grad)
        put("block_out", y)
        put("logits", logits)
        put("loss", loss.reshape(1))
        for key, value in dict(B=B, T=T, D=D, H=H, F=F_FF, C=C, seed=args.seed).items():
            f.attrs[key] = np.int64(value)
        f.attrs["causal"] = np.int64(args.causal)
        f.attrs["ln_eps"] = LN_EPS
        f.attrs["torch_version"] = "".join(torch.__version__)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}: causal={args.causal} loss={loss.item():.6f}")


if __name__ == "__main__":
    main()
