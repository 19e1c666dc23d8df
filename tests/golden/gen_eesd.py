#!/usr/bin/python3
"""Golden data for the PyTorch parity test of EESD (tests/golden/test_golden_eesd.cpp).

    /usr/bin/python3 tests/golden/gen_eesd.py OUT.h5 [--entropy] [--shared] [--seed N]

One MoE layer as the student (the layer of gen_moe_block.py, gates renormalised) and a teacher of
the same shape whose weights are the student's plus noise (as an EMA teacher that lags behind):

    y_S    = the student's sparse top-k output on u (x viewed as [T, D])
    y_T    = sum over all E experts of softmax(u Wr_T^T)_e E^T_e(u)  (+ the teacher's shared expert)
    w_t    = 1, or with --entropy H(p_t) / log E of the student's router distribution (no gradient)
    eesd   = mean_t w_t ||y_S,t - y_T,t||^2
    loss   = sum(y_S * proj) + LAMBDA * eesd
    then one SGD step on the student (lr 0.01) and the teacher's EMA update with momentum M:
    teacher_next = M teacher + (1 - M) student_next     (in float32, as torch's mul_/add_)

HDF5 layout (float32 except indices): /x, /proj [B, S, D]; /student/<name>, /teacher/<name>,
/student_next/<name>, /teacher_next/<name> with the C++ MoeLayer parameter names; /y, /y_teacher
[T, D]; /eesd [1]; /loss [1]; /grad/x, /grad/student/<name> (of loss); /grad_eesd/x,
/grad_eesd/student/<name> (of eesd alone); attributes on /: B, S, D, F, E, k,
shared, entropy, lambda, momentum, seed, torch_version.
"""
import argparse
import math
import os
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_moe_block as gm  # noqa: E402  (the layer and its parameter draw)

LAMBDA = 0.1
MOMENTUM = 0.9
LR = 0.01


def dense_ensemble(x, p, shared):
    u = x.reshape(-1, gm.D)
    probs = torch.softmax(u @ p["moe/router/weight"].t(), dim=-1)
    y = torch.zeros_like(u)
    for e in range(gm.E):
        h = F.gelu(F.linear(u, p["moe/experts/w1"][e], p["moe/experts/b1"][e]), approximate="tanh")
        y = y + probs[:, e:e + 1] * F.linear(h, p["moe/experts/w2"][e], p["moe/experts/b2"][e])
    if shared:
        h = F.gelu(F.linear(u, p["moe/shared/fc1/weight"], p["moe/shared/fc1/bias"]), approximate="tanh")
        y = y + F.linear(h, p["moe/shared/fc2/weight"], p["moe/shared/fc2/bias"])
    return y


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--entropy", action="store_true", help="w_t = routing entropy / log E")
    ap.add_argument("--shared", action="store_true", help="with a shared expert")
    ap.add_argument("--seed", type=int, default=2468)
    args = ap.parse_args()
    torch.set_num_threads(1)

    seed = args.seed
    while True:  # the first seed whose routing has no near-tie (float rounding cannot flip it)
        gen = torch.Generator().manual_seed(seed)
        student = gm.make_parameters(gen, args.shared)
        x = torch.randn(gm.B, gm.S, gm.D, generator=gen, dtype=torch.float32)
        proj = torch.randn(gm.B, gm.S, gm.D, generator=gen, dtype=torch.float32)
        if gm.routing_margin(x, student) > gm.MIN_MARGIN:
            break
        seed += 1
    with torch.no_grad():
        teacher = {k: v.detach() + 0.05 * v.detach().abs().mean() * torch.randn(v.shape, generator=gen)
                   for k, v in student.items()}
    x.requires_grad_(True)

    y, idx, probs = gm.moe(x, student, True, args.shared)
    y = y.reshape(-1, gm.D)
    with torch.no_grad():
        y_teacher = dense_ensemble(x.detach(), teacher, args.shared)
        if args.entropy:
            logp = torch.log_softmax(x.detach().reshape(-1, gm.D) @ student["moe/router/weight"].detach().t(), dim=-1)
            w = -(logp.exp() * logp).sum(dim=-1) / math.log(gm.E)
        else:
            w = torch.ones(y.shape[0])
    eesd = (w * ((y - y_teacher) ** 2).sum(dim=-1)).mean()
    loss = (y * proj.reshape(-1, gm.D)).sum() + LAMBDA * eesd
    # The distillation term's own gradient (the task term would otherwise dominate the comparison).
    names = list(student)
    eesd_grads = torch.autograd.grad(eesd, [student[n] for n in names] + [x], retain_graph=True)
    loss.backward()
    with torch.no_grad():
        student_next = {k: v.detach() - LR * v.grad for k, v in student.items()}
        teacher_next = {k: teacher[k].clone().mul_(MOMENTUM).add_(student_next[k], alpha=1 - MOMENTUM)
                        for k in teacher}

    tmp = args.out + ".tmp"
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with h5py.File(tmp, "w") as f:
        def put(name, t):
            f.create_dataset(name, data=t.detach().numpy())

        put("x", x)
        put("proj", proj)
        put("indices", idx)
        for name in student:
            short = name[len("moe/"):]
            put("student/" + short, student[name])
            put("teacher/" + short, teacher[name])
            put("student_next/" + short, student_next[name])
            put("teacher_next/" + short, teacher_next[name])
            put("grad/student/" + short, student[name].grad)
            put("grad_eesd/student/" + short, eesd_grads[names.index(name)])
        put("grad/x", x.grad)
        put("grad_eesd/x", eesd_grads[-1])
        put("y", y)
        put("y_teacher", y_teacher)
        put("eesd", eesd.reshape(1))
        put("loss", loss.reshape(1))
        for key, value in dict(B=gm.B, S=gm.S, D=gm.D, F=gm.F_FF, E=gm.E, k=gm.K, shared_F=gm.F_SHARED,
                               shared=int(args.shared), entropy=int(args.entropy), seed=seed).items():
            f.attrs[key] = np.int64(value)
        f.attrs["lambda"] = np.float64(LAMBDA)
        f.attrs["momentum"] = np.float64(MOMENTUM)
        f.attrs["torch_version"] = "".join(torch.__version__)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}: entropy={args.entropy} shared={args.shared} seed={seed} "
          f"eesd={eesd.item():.6g} loss={loss.item():.6f}")


if __name__ == "__main__":
    main()
