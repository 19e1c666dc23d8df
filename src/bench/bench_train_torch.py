#!/usr/bin/env python3
"""PyTorch peer of bench_train: trains the same ViT with the same step, prints one JSON line.

The model mirrors upcycle's nn::ViT: patches flattened as (c, py, px) and projected by a Linear, a
class token, learned positional embeddings, pre-LN blocks (bench_ops_torch.Block: fused qkv, GELU
tanh MLP), a final LayerNorm and a Linear head on the class token. One step: forward, mean
cross-entropy, backward, clip_grad_norm_ and AdamW (weight decay on matrices only), on random
images and labels (four fixed batches cycled).
Usage: bench_train_torch.py --threads N --steps S --warmup W CONFIG_JSON
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_ops_torch import Block  # noqa: E402


class ViT(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.p, d = c["patch_size"], c["d_model"]
        n = (c["image_size"] // self.p) ** 2
        self.patch_embed = torch.nn.Linear(c["channels"] * self.p * self.p, d)
        self.cls_token = torch.nn.Parameter(torch.randn(d) * 0.02)
        self.pos_embed = torch.nn.Parameter(torch.randn(1 + n, d) * 0.02)
        self.blocks = torch.nn.ModuleList(Block(d, c["heads"], c["ffn"], False) for _ in range(c["depth"]))
        self.ln_f = torch.nn.LayerNorm(d)
        self.head = torch.nn.Linear(d, c["num_classes"])

    def forward(self, images):
        b, ch, h, w = images.shape
        p = self.p
        x = images.view(b, ch, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, ch * p * p)
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(b, 1, -1), x], 1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln_f(x[:, 0]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("config")
    args = ap.parse_args()
    c = json.loads(args.config)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = ViT(c)
    model.train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": c["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=c["lr"], betas=(0.9, 0.999), eps=1e-8)
    b, s = c["batch"], c["image_size"]
    batches = [(torch.randn(b, c["channels"], s, s), torch.randint(0, c["num_classes"], (b,))) for _ in range(4)]
    times, losses = [], []
    for i in range(args.warmup + args.steps):
        x, y = batches[i % len(batches)]
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        if c["clip"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), c["clip"])
        opt.step()
        losses.append(loss.item())
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    mean = sum(times) / len(times)
    times.sort()
    print(json.dumps({"median_s": times[len(times) // 2], "mean_s": mean, "first_loss": losses[0],
                      "last_loss": losses[-1], "threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
    main()
