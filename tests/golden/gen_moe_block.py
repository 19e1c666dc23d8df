#!/usr/bin/python3
"""Golden data for the PyTorch parity test of the MoE layer (tests/golden/test_golden_moe.cpp).

    /usr/bin/python3 tests/golden/gen_moe_block.py OUT.h5 [--renormalize] [--shared] [--seed N]

The layer of include/upcycle/moe/moe_layer.hpp, written densely in torch (every expert runs on
every token and is weighted by its gate, 0 where not selected) so that nothing in it depends on
the C++ dispatch:

    logits = u Wr^T                          [T, E]     (u = x viewed as [T, D], T = B * S)
    probs  = softmax(logits)                 [T, E]
    idx    = top-k of probs (k = 2)          [T, k]
    gates  = probs at idx, divided by their sum over the k when --renormalize
    y      = sum_j gates[:, j] * E_idx[:, j](u)  (+ shared(u) with --shared)
    E_e(u) = w2[e] gelu_tanh(w1[e] u + b1[e]) + b2[e]      (shared: fc2(gelu_tanh(fc1(u))))
    loss   = sum(y * proj)                   (proj: a fixed random [B, S, D] tensor)

The data are drawn (the seed is bumped if needed) so that every token's k-th and (k+1)-th
probabilities differ by more than 1e-3: float rounding cannot flip a routing decision.

HDF5 layout (float32 except indices):
    /x [B, S, D], /proj [B, S, D], /indices int64 [T, k] (the selected experts, best first)
    /moe/<name> for every parameter with the C++ named_parameters() names: router/weight [E, D],
        experts/w1 [E, F, D], experts/b1 [E, F], experts/w2 [E, D, F], experts/b2 [E, D]
        (stacked by expert id), and with --shared shared/fc1/weight [Fs, D], shared/fc1/bias,
        shared/fc2/weight [D, Fs], shared/fc2/bias
    /y [B, S, D], /loss [1], /grad/x, /grad/moe/<name>
    attributes on /: B, S, D, F, E, k, shared_F, renormalize, shared, seed, torch_version
"""
import argparse
import math
import os

import h5py
import numpy as np
import torch
import torch.nn.functional as F

B, S, D, F_FF, E, K, F_SHARED = 2, 7, 16, 32, 4, 2, 24
MIN_MARGIN = 1e-3


def make_parameters(gen, shared):
    def randn(*shape, std):
        return torch.randn(*shape, generator=gen, dtype=torch.float32) * std

    p = {
        "moe/router/weight": randn(E, D, std=2.0 / math.sqrt(D)),
        "moe/experts/w1": randn(E, F_FF, D, std=1.0 / math.sqrt(D)),
        "moe/experts/b1": randn(E, F_FF, std=0.1),
        "moe/experts/w2": randn(E, D, F_FF, std=1.0 / math.sqrt(F_FF)),
        "moe/experts/b2": randn(E, D, std=0.1),
    }
    if shared:
        p["moe/shared/fc1/weight"] = randn(F_SHARED, D, std=1.0 / math.sqrt(D))
        p["moe/shared/fc1/bias"] = randn(F_SHARED, std=0.1)
        p["moe/shared/fc2/weight"] = randn(D, F_SHARED, std=1.0 / math.sqrt(F_SHARED))
        p["moe/shared/fc2/bias"] = randn(D, std=0.1)
    return {k: v.requires_grad_(True) for k, v in p.items()}


def moe(x, p, renormalize, shared):
    u = x.reshape(-1, D)
    probs = torch.softmax(u @ p["moe/router/weight"].t(), dim=-1)
    _, idx = torch.topk(probs, K, dim=-1)
    gates = probs.gather(1, idx)
    if renormalize:
        gates = gates / gates.sum(dim=-1, keepdim=True)
    y = torch.zeros_like(u)
    for e in range(E):
        h = F.gelu(F.linear(u, p["moe/experts/w1"][e], p["moe/experts/b1"][e]), approximate="tanh")
        out = F.linear(h, p["moe/experts/w2"][e], p["moe/experts/b2"][e])
        weight = (gates * (idx == e).to(gates.dtype)).sum(dim=-1)  # gate of e, 0 where not selected
        y = y + weight[:, None] * out
    if shared:
        h = F.gelu(F.linear(u, p["moe/shared/fc1/weight"], p["moe/shared/fc1/bias"]), approximate="tanh")
        y = y + F.linear(h, p["moe/shared/fc2/weight"], p["moe/shared/fc2/bias"])
    return y.reshape(x.shape), idx, probs


def routing_margin(x, p):
    with torch.no_grad():
        u = x.reshape(-1, D).double()
        probs = torch.softmax(u @ p["moe/router/weight"].double().t(), dim=-1)
        top, _ = torch.topk(probs, K + 1, dim=-1)
        return (top[:, K - 1] - top[:, K]).min().item()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="HDF5 file to write")
    ap.add_argument("--renormalize", action="store_true", help="gates renormalised over the k selected")
    ap.add_argument("--shared", action="store_true", help="add an always-active shared expert")
    ap.add_argument("--seed", type=int, default=4321)
    args = ap.parse_args()
    torch.set_num_threads(1)

    seed = args.seed
    while True:  # deterministic: the first seed from --seed on whose routing has no near-tie
        gen = torch.Generator().manual_seed(seed)
        params = make_parameters(gen, args.shared)
        x = torch.randn(B, S, D, generator=gen, dtype=torch.float32)
        proj = torch.randn(B, S, D, generator=gen, dtype=torch.float32)
        if routing_margin(x, params) > MIN_MARGIN:
            break
        seed += 1
    x.requires_grad_(True)

    y, idx, probs = moe(x, params, args.renormalize, args.shared)
    loss = (y * proj).sum()
    loss.backward()
    counts = torch.bincount(idx.reshape(-1), minlength=E)

    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    tmp = args.out + ".tmp"  # a run killed half-way never leaves a file the test would trust
    with h5py.File(tmp, "w") as f:
        def put(name, t):
            f.create_dataset(name, data=t.detach().numpy())

        put("x", x)
        put("proj", proj)
        put("indices", idx)
        for name, p in params.items():
            put(name, p)
            put("grad/" + name, p.grad)
        put("grad/x", x.grad)
        put("y", y)
        put("loss", loss.reshape(1))
        for key, value in dict(B=B, S=S, D=D, F=F_FF, E=E, k=K, shared_F=F_SHARED, seed=seed).items():
            f.attrs[key] = np.int64(value)
        f.attrs["renormalize"] = np.int64(args.renormalize)
        f.attrs["shared"] = np.int64(args.shared)
        f.attrs["torch_version"] = "".join(torch.__version__)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}: renormalize={args.renormalize} shared={args.shared} seed={seed} "
          f"loss={loss.item():.6f} expert loads={counts.tolist()}")


if __name__ == "__main__":
    main()
