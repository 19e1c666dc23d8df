#!/usr/bin/python3
"""Golden data for the PyTorch parity test of TRAINING a small ViT for a few AdamW steps
(tests/golden/test_golden_train.cpp).

    /usr/bin/python3 tests/golden/gen_train.py OUT.h5 [--seed N]

The model mirrors upcycle::nn::ViT (src/nn/vit.cpp) op for op, written by hand (torch 1.13 has no
F.scaled_dot_product_attention, and nn.TransformerEncoderLayer has other layouts):

    patches = images [B, C, H, W] -> [B, H/p, W/p, C, p, p] -> [B, N, C*p*p]   (patchify)
    x       = concat([cls_token broadcast to [B, 1, D], patch_embed(patches)], 1) + pos_embed
    x       = block_i(x) for each block, pre-LN:  h = x + attn(ln1(x)); x = h + fc2(gelu_tanh(fc1(ln2(h))))
    logits  = head(ln_f(x[:, 0]))                                              [B, classes]
    loss    = mean cross-entropy over the batch

attn: qkv viewed as [B, T, 3, H, Dh] (q, k, v, then heads), softmax(q k^T / sqrt(Dh)), no mask.

One training step, in the order of upcycle's Trainer::run (src/train/trainer.cpp):
    zero_grad; loss = CE(model(images), labels); loss.backward();
    norm = sqrt(sum over parameters of sum(grad^2))            (accumulated in float64)
    if norm > clip: every grad *= clip / norm                  (by hand: torch's clip_grad_norm_
                                                                uses clip / (norm + 1e-6) instead)
    lr = warmup_cosine_lr(step, total, warmup, lr_max, min_lr) (same formula as upcycle's)
    torch.optim.AdamW step with that lr; weight decay only on tensors of rank >= 2
    (two parameter groups), betas / eps as upcycle's AdamWOptions defaults.

HDF5 layout (float32 unless noted):
    /init/<name>, /final/<name>  every parameter before step 1 and after the last step, under the
                                 C++ named_parameters() names ("patch_embed/weight", "cls_token",
                                 "pos_embed", "blocks/00/ln1/gamma", ..., "head/bias")
    /grad0/<name>                the (unclipped) gradients of step 1, for localising a mismatch
    /final_logits [B, classes]   the trained model on the batch of step 1
    /images [S, B, C, H, W], /labels int64 [S, B]   the batch of each step
    /loss [S]                    the loss of each step (before its update)
    /grad_norm float64 [S]       the global gradient norm of each step (before clipping)
    /lr float64 [S], /clipped int64 [S]
    attributes on /: image_size, patch_size, channels, num_classes, depth, d_model, n_heads, d_ff,
        batch, steps, warmup, seed (int); ln_eps, lr_max, min_lr, beta1, beta2, adam_eps,
        weight_decay, clip (float); torch_version (str)
"""
import argparse
import math
import os

import h5py
import numpy as np
import torch
import torch.nn.functional as F

IMAGE, PATCH, CHANNELS, CLASSES = 28, 7, 1, 10
DEPTH, D, H, F_FF = 2, 32, 4, 64
LN_EPS = 1e-5
BATCH, STEPS = 8, 5
N = (IMAGE // PATCH) ** 2  # patches per image
T = 1 + N  # tokens

# Schedule and optimiser. The clip value is chosen (see the assertion in main) so that some steps
# are clipped and some are not, each by a clear margin.
LR_MAX, MIN_LR, WARMUP = 5e-3, 5e-4, 2
BETA1, BETA2, ADAM_EPS, WEIGHT_DECAY = 0.9, 0.999, 1e-8, 0.05
CLIP = 6.0


def warmup_cosine_lr(step, total, warmup, lr, min_lr):
    """upcycle::warmup_cosine_lr (src/train/optimizer.cpp), line for line."""
    if warmup > 0 and step < warmup:
        return lr * float(step + 1) / float(warmup)
    if total <= warmup:
        return lr
    progress = min(1.0, float(step - warmup) / float(total - warmup))
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def make_parameters(gen):
    """Every parameter by its C++ name, in the C++ named_parameters() order. Random (not the
    training init) so that LayerNorm's affine parameters and all biases take part, at scales that
    keep activations O(1)."""

    def randn(*shape, std):
        return torch.randn(*shape, generator=gen, dtype=torch.float32) * std

    def linear(p, name, fan_in, fan_out):
        p[f"{name}/weight"] = randn(fan_out, fan_in, std=1.0 / math.sqrt(fan_in))
        p[f"{name}/bias"] = randn(fan_out, std=0.1)

    def layer_norm(p, name):
        p[f"{name}/gamma"] = 1.0 + randn(D, std=0.1)
        p[f"{name}/beta"] = randn(D, std=0.1)

    p = {}
    linear(p, "patch_embed", CHANNELS * PATCH * PATCH, D)
    p["cls_token"] = randn(D, std=0.5)
    p["pos_embed"] = randn(T, D, std=0.2)
    for i in range(DEPTH):
        b = f"blocks/{i:02d}"
        layer_norm(p, f"{b}/ln1")
        linear(p, f"{b}/attn/qkv", D, 3 * D)
        linear(p, f"{b}/attn/out", D, D)
        layer_norm(p, f"{b}/ln2")
        linear(p, f"{b}/mlp/fc1", D, F_FF)
        linear(p, f"{b}/mlp/fc2", F_FF, D)
    layer_norm(p, "ln_f")
    linear(p, "head", D, CLASSES)
    return {k: torch.nn.Parameter(v) for k, v in p.items()}


def patchify(images):
    b = images.shape[0]
    g = IMAGE // PATCH
    v = images.reshape(b, CHANNELS, g, PATCH, g, PATCH).permute(0, 2, 4, 1, 3, 5)
    return v.reshape(b, g * g, CHANNELS * PATCH * PATCH)


def attention(x, p, prefix):
    b, t, _ = x.shape
    dh = D // H
    qkv = F.linear(x, p[f"{prefix}/qkv/weight"], p[f"{prefix}/qkv/bias"])  # [B, T, 3D]
    qkv = qkv.view(b, t, 3, H, dh).permute(2, 0, 3, 1, 4)  # [3, B, H, T, Dh]
    q, k, v = qkv[0], qkv[1], qkv[2]
    scores = q @ k.transpose(-1, -2) / math.sqrt(dh)  # [B, H, T, T]
    y = torch.softmax(scores, dim=-1) @ v  # [B, H, T, Dh]
    y = y.permute(0, 2, 1, 3).reshape(b, t, D)
    return F.linear(y, p[f"{prefix}/out/weight"], p[f"{prefix}/out/bias"])


def layer_norm(x, p, name):
    return F.layer_norm(x, (D,), p[f"{name}/gamma"], p[f"{name}/beta"], eps=LN_EPS)


def block(x, p, prefix):
    h = x + attention(layer_norm(x, p, f"{prefix}/ln1"), p, f"{prefix}/attn")
    a = F.gelu(F.linear(layer_norm(h, p, f"{prefix}/ln2"), p[f"{prefix}/mlp/fc1/weight"],
                        p[f"{prefix}/mlp/fc1/bias"]), approximate="tanh")
    return h + F.linear(a, p[f"{prefix}/mlp/fc2/weight"], p[f"{prefix}/mlp/fc2/bias"])


def vit(images, p):
    b = images.shape[0]
    patches = F.linear(patchify(images), p["patch_embed/weight"], p["patch_embed/bias"])  # [B, N, D]
    cls = torch.zeros(b, 1, D, dtype=torch.float32) + p["cls_token"]
    x = torch.cat([cls, patches], dim=1) + p["pos_embed"]
    for i in range(DEPTH):
        x = block(x, p, f"blocks/{i:02d}")
    x = layer_norm(x[:, 0], p, "ln_f")
    return F.linear(x, p["head/weight"], p["head/bias"])


def check_against_torch_mha(p, gen):
    """Guards the hand-written attention: it must agree with torch.nn.MultiheadAttention, whose
    in_proj_weight has the same [q; k; v] x heads layout as the fused qkv."""
    prefix = "blocks/00/attn"
    x = torch.randn(2, T, D, generator=gen, dtype=torch.float32)
    mha = torch.nn.MultiheadAttention(D, H, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(p[f"{prefix}/qkv/weight"])
        mha.in_proj_bias.copy_(p[f"{prefix}/qkv/bias"])
        mha.out_proj.weight.copy_(p[f"{prefix}/out/weight"])
        mha.out_proj.bias.copy_(p[f"{prefix}/out/bias"])
        expected, _ = mha(x, x, x, need_weights=False)
        got = attention(x, p, prefix)
    err = (got - expected).abs().max().item()
    assert err < 1e-5, f"hand-written attention differs from nn.MultiheadAttention by {err}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="HDF5 file to write")
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # deterministic reductions; the model is tiny anyway
    gen = torch.Generator().manual_seed(args.seed)

    params = make_parameters(gen)
    init = {k: v.detach().clone() for k, v in params.items()}
    images = torch.randn(STEPS, BATCH, CHANNELS, IMAGE, IMAGE, generator=gen, dtype=torch.float32)
    labels = torch.randint(0, CLASSES, (STEPS, BATCH), generator=gen, dtype=torch.int64)
    check_against_torch_mha(params, torch.Generator().manual_seed(args.seed + 1))

    decay = [p for p in params.values() if p.ndim >= 2]
    no_decay = [p for p in params.values() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
        lr=LR_MAX, betas=(BETA1, BETA2), eps=ADAM_EPS, foreach=False)

    losses, norms, lrs, clipped = [], [], [], []
    grad0 = None
    for step in range(STEPS):
        lr = warmup_cosine_lr(step, STEPS, WARMUP, LR_MAX, MIN_LR)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(vit(images[step], params), labels[step])
        loss.backward()
        if grad0 is None:
            grad0 = {k: v.grad.detach().clone() for k, v in params.items()}
        norm = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in params.values()))
        # Clipping must be decided by a clear margin, or rounding could flip it on one side only.
        assert abs(norm - CLIP) > 1e-3 * CLIP, f"step {step + 1}: grad norm {norm} too close to clip {CLIP}"
        if norm > CLIP:
            with torch.no_grad():
                for p in params.values():
                    p.grad.mul_(CLIP / norm)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        losses.append(loss.item())
        norms.append(norm)
        lrs.append(lr)
        clipped.append(int(norm > CLIP))
        print(f"step {step + 1}: lr {lr:.6g} loss {loss.item():.7f} grad_norm {norm:.7f}"
              f"{' (clipped)' if norm > CLIP else ''}")
    assert 0 < sum(clipped) < STEPS, "pick CLIP so that some steps are clipped and some are not"
    with torch.no_grad():
        final_logits = vit(images[0], params)

    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    tmp = args.out + ".tmp"  # a run killed half-way never leaves a file the test would trust
    with h5py.File(tmp, "w") as f:
        for name in params:
            f.create_dataset("init/" + name, data=init[name].numpy())
            f.create_dataset("final/" + name, data=params[name].detach().numpy())
            f.create_dataset("grad0/" + name, data=grad0[name].numpy())
        f.create_dataset("final_logits", data=final_logits.numpy())
        f.create_dataset("images", data=images.numpy())
        f.create_dataset("labels", data=labels.numpy())
        f.create_dataset("loss", data=np.array(losses, dtype=np.float32))
        f.create_dataset("grad_norm", data=np.array(norms, dtype=np.float64))
        f.create_dataset("lr", data=np.array(lrs, dtype=np.float64))
        f.create_dataset("clipped", data=np.array(clipped, dtype=np.int64))
        for key, value in dict(image_size=IMAGE, patch_size=PATCH, channels=CHANNELS, num_classes=CLASSES,
                               depth=DEPTH, d_model=D, n_heads=H, d_ff=F_FF, batch=BATCH, steps=STEPS,
                               warmup=WARMUP, seed=args.seed).items():
            f.attrs[key] = np.int64(value)
        for key, value in dict(ln_eps=LN_EPS, lr_max=LR_MAX, min_lr=MIN_LR, beta1=BETA1, beta2=BETA2,
                               adam_eps=ADAM_EPS, weight_decay=WEIGHT_DECAY, clip=CLIP).items():
            f.attrs[key] = np.float64(value)
        f.attrs["torch_version"] = "".join(torch.__version__)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
