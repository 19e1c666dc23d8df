#!/usr/bin/env python3
"""PyTorch peer of bench_train: trains the same ViT with the same step, prints one JSON line.

The model mirrors upcycle's nn::ViT: patches flattened as (c, py, px) and projected by a Linear, a
class token, learned positional embeddings, pre-LN blocks (bench_ops_torch.Block: fused qkv, GELU
tanh MLP), a final LayerNorm and a Linear head on the class token. One step: forward, mean
cross-entropy, backward, clip_grad_norm_ and AdamW (weight decay on matrices only), on random
images and labels (four fixed batches cycled).
With "experts" > 0 in the config, every other block's FFN (blocks 1, 3, ...) is an MoE layer laid
out like upcycle's moe::MoeLayer: a router Linear [E, D] (no bias), softmax, top-k, gates
renormalised over the k selected experts, dropless; E GELU tanh MLP experts run the usual PyTorch
way, a loop over experts with index_select / index_add_; the loss adds, per MoE layer, the Switch
load-balancing loss lb * E * sum_e f_e P_e and the router z-loss z * mean(logsumexp(logits)^2).
The model and the batches are made on the CPU from the same seed and then moved to the device, so
they hold the same values on every device.
Usage: bench_train_torch.py --threads N --steps S [--warmup W] [--device cpu|cuda] [--tf32] CONFIG_JSON
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_ops_torch import Block, sync  # noqa: E402


class MoE(torch.nn.Module):
    def __init__(self, d, ffn, experts, top_k):
        super().__init__()
        self.e, self.k = experts, top_k
        self.router = torch.nn.Linear(d, experts, bias=False)
        self.w1 = torch.nn.Parameter(torch.randn(experts, d, ffn) * 0.02)
        self.b1 = torch.nn.Parameter(torch.zeros(experts, ffn))
        self.w2 = torch.nn.Parameter(torch.randn(experts, ffn, d) * 0.02)
        self.b2 = torch.nn.Parameter(torch.zeros(experts, d))
        self.aux = None

    def forward(self, x, lb_weight, z_weight):
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        t = x.shape[0]
        logits = self.router(x)
        probs = logits.softmax(-1)
        gates, idx = probs.topk(self.k, dim=-1)
        gates = gates / gates.sum(-1, keepdim=True)
        flat_idx = idx.reshape(-1)
        flat_tok = torch.arange(t, device=x.device).repeat_interleave(self.k)
        flat_gate = gates.reshape(-1)
        out = torch.zeros_like(x)
        for e in range(self.e):
            sel = (flat_idx == e).nonzero(as_tuple=True)[0]
            if sel.numel() == 0:
                continue
            tok = flat_tok.index_select(0, sel)
            h = F.gelu(torch.addmm(self.b1[e], x.index_select(0, tok), self.w1[e]), approximate="tanh")
            y = torch.addmm(self.b2[e], h, self.w2[e]) * flat_gate.index_select(0, sel).unsqueeze(1)
            out.index_add_(0, tok, y)
        counts = torch.bincount(flat_idx, minlength=self.e).to(probs.dtype)
        lb = lb_weight * self.e * (counts / (t * self.k) * probs.mean(0)).sum()
        z = z_weight * torch.logsumexp(logits, -1).pow(2).mean()
        self.aux = lb + z
        return out.view(shape)


class MoeBlock(Block):
    def __init__(self, d, heads, ffn, experts, top_k):
        super().__init__(d, heads, ffn, False)
        del self.fc1, self.fc2
        self.moe = MoE(d, ffn, experts, top_k)
        self.lb_weight, self.z_weight = 0.0, 0.0

    def forward(self, x):
        b, t, d = x.shape
        dh = d // self.h
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.h, dh).permute(2, 0, 3, 1, 4)
        a = ((q @ k.transpose(-1, -2) / math.sqrt(dh)).softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
        h = x + self.proj(a)
        return h + self.moe(self.ln2(h), self.lb_weight, self.z_weight)


class ViT(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.p, d = c["patch_size"], c["d_model"]
        n = (c["image_size"] // self.p) ** 2
        self.patch_embed = torch.nn.Linear(c["channels"] * self.p * self.p, d)
        self.cls_token = torch.nn.Parameter(torch.randn(d) * 0.02)
        self.pos_embed = torch.nn.Parameter(torch.randn(1 + n, d) * 0.02)
        self.blocks = torch.nn.ModuleList(self.block(c, i) for i in range(c["depth"]))
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

    @staticmethod
    def block(c, i):
        if c.get("experts", 0) == 0 or i % 2 == 0:
            return Block(c["d_model"], c["heads"], c["ffn"], False)
        blk = MoeBlock(c["d_model"], c["heads"], c["ffn"], c["experts"], c["top_k"])
        blk.lb_weight, blk.z_weight = c["lb_weight"], c["z_weight"]
        return blk

    def aux_loss(self):
        """The router losses of the MoE blocks (0 for a dense model)."""
        return sum((blk.moe.aux for blk in self.blocks if isinstance(blk, MoeBlock)),
                   torch.zeros((), device=self.pos_embed.device))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--tf32", action="store_true", help="let f32 matmuls use TF32 on the GPU")
    ap.add_argument("config")
    args = ap.parse_args()
    c = json.loads(args.config)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.manual_seed(0)
    model = ViT(c).to(device)
    model.train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": c["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=c["lr"], betas=(0.9, 0.999), eps=1e-8)
    b, s = c["batch"], c["image_size"]
    batches = [(torch.randn(b, c["channels"], s, s).to(device), torch.randint(0, c["num_classes"], (b,)).to(device))
               for _ in range(4)]
    times, losses = [], []
    for i in range(args.warmup + args.steps):
        x, y = batches[i % len(batches)]
        sync(device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        (loss + model.aux_loss()).backward()
        if c["clip"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), c["clip"])
        opt.step()
        losses.append(loss.item())
        sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    print(json.dumps({"median_s": statistics.median(times), "mean_s": statistics.fmean(times),
                      "first_loss": losses[0], "last_loss": losses[-1], "threads": torch.get_num_threads(),
                      "device": args.device, "parameters": sum(p.numel() for p in model.parameters())}),
          flush=True)


if __name__ == "__main__":
    main()
