#!/usr/bin/env python3
"""PyTorch peer of bench_ops: times the same cases on the same device, prints JSON lines.

Each case is forward + backward of a module on a random input, the same shapes as the C++ side;
modules and inputs are made on the CPU from the same seed and then moved to the device.
Usage: bench_ops_torch.py --threads N --iters I [--warmup W] [--device cpu|cuda] [--tf32] CASE_JSON...
"""
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F


class Block(torch.nn.Module):
    """Pre-LN transformer block laid out like upcycle's (fused qkv, GELU tanh MLP)."""

    def __init__(self, d, heads, ffn, causal):
        super().__init__()
        self.h, self.causal = heads, causal
        self.ln1, self.ln2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.qkv, self.proj = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
        self.fc1, self.fc2 = torch.nn.Linear(d, ffn), torch.nn.Linear(ffn, d)

    def forward(self, x):
        b, t, d = x.shape
        dh = d // self.h
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.h, dh).permute(2, 0, 3, 1, 4)
        s = q @ k.transpose(-1, -2) / math.sqrt(dh)
        if self.causal:
            s = s.masked_fill(torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
        a = (s.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
        h = x + self.proj(a)
        return h + self.fc2(F.gelu(self.fc1(self.ln2(h)), approximate="tanh"))


class Grouped(torch.nn.Module):
    """One affine map per group of consecutive rows (the experts of an MoE layer), the usual eager
    way: a loop over the groups."""

    def __init__(self, groups, d_in, d_out):
        super().__init__()
        self.groups = groups
        self.weight = torch.nn.Parameter(torch.randn(len(groups), d_out, d_in) * 0.02)
        self.bias = torch.nn.Parameter(torch.zeros(len(groups), d_out))

    def forward(self, x):
        return torch.cat([F.linear(xg, self.weight[g], self.bias[g]) for g, xg in enumerate(x.split(self.groups))])


def build(case, device):
    if case["kind"] == "linear":
        mod = torch.nn.Linear(case["in"], case["out"])
        x = torch.randn(case["rows"], case["in"])
    elif case["kind"] == "grouped":
        mod = Grouped(case["groups"], case["in"], case["out"])
        x = torch.randn(sum(case["groups"]), case["in"])
    else:
        mod = Block(case["d"], case["heads"], case["ffn"], case["causal"])
        x = torch.randn(case["batch"], case["t"], case["d"])
    return mod.to(device), x.to(device).requires_grad_()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--iters", type=int, required=True)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--tf32", action="store_true", help="let f32 matmuls use TF32 on the GPU")
    ap.add_argument("cases", nargs="+")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.manual_seed(0)
    for text in args.cases:
        case = json.loads(text)
        mod, x = build(case, device)
        times = []
        for i in range(args.warmup + args.iters):
            mod.zero_grad(set_to_none=True)
            x.grad = None
            sync(device)
            t0 = time.perf_counter()
            mod(x).sum().backward()
            sync(device)
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
        print(json.dumps({"name": case["name"], "median_s": statistics.median(times)}), flush=True)


if __name__ == "__main__":
    main()
