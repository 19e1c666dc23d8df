#!/usr/bin/python3
"""Reference data for the Dirichlet-Prior Shaping Loss (tests/golden/test_golden_dpsl.cpp), from
numpy and scipy (Debian python3-scipy, python3-h5py) -- independent of Boost.Math, which the C++
side uses.

    /usr/bin/python3 tests/golden/gen_dpsl.py OUT.h5 [--seed N]

DPSL (docs/methods.md section 3; include/upcycle/moe/router_losses.hpp). For a prior table alpha
[G, E] (row m = the Dirichlet concentration of group m) and rows p [B, E] with group ids g [B]:
for every group m with rows R_m (B_m = |R_m|) and every expert k, with a = alpha[m, k],
b = sum(alpha[m]) - a, the values p[R_m, k] clipped to [0, 1] are sorted ascending (stable:
ties keep the row order) and

    L    += lambda / B_m * sum_j (j / B_m - F(p_(j)))^2                  F = betainc(a, b, .)
    grad[row of p_(j), k] = 2 lambda / B_m * (F(p_(j)) - j / B_m) * min(f(p_(j)), pdf_clip)
                                                                          f = beta.pdf(., a, b)

Rows with a negative group id are ignored (zero gradient).

Group-conditioned prior (G groups over E experts): alpha[m, e] = alpha_b + alpha_s where group m
owns expert e, else alpha_b; ownership: G <= E: floor(e G / E) == m (contiguous blocks of
experts); G > E: e == floor(m E / G). The file also holds the table so the C++ side can check its
own construction.

HDF5 layout, one group per case (symmetric_a1, symmetric_a05, asymmetric, group_g2,
group_g3_ignored):
    /<case>/p       f64 [B, E]   probability rows (softmax of random logits; a few exact zeros,
                                 tiny values and duplicated rows to exercise the pdf clip,
                                 the end points and ties)
    /<case>/alpha   f64 [G, E]
    /<case>/groups  i64 [B]
    /<case>/loss    f64 [1]
    /<case>/grad    f64 [B, E]   dL/dp
    attributes on /<case>: lambda, pdf_clip, kind ("symmetric", "asymmetric", "group"),
        and for kind "group": alpha_b, alpha_s
    attributes on /: seed, scipy_version, numpy_version
"""
import argparse
import os

import h5py
import numpy as np
import scipy
from scipy.special import betainc
from scipy.stats import beta as beta_dist


def dpsl_reference(p, alpha, groups, lam, clip):
    B, E = p.shape
    loss = 0.0
    grad = np.zeros_like(p)
    for m in range(alpha.shape[0]):
        rows = np.nonzero(groups == m)[0]
        bm = len(rows)
        if bm == 0:
            continue
        total = alpha[m].sum()
        j = np.arange(1, bm + 1, dtype=np.float64) / bm
        for k in range(E):
            a, b = alpha[m, k], total - alpha[m, k]
            v = np.clip(p[rows, k], 0.0, 1.0)
            order = np.argsort(v, kind="stable")
            xs = v[order]
            F = betainc(a, b, xs)
            loss += lam * np.sum((j - F) ** 2) / bm
            pdf = np.minimum(beta_dist.pdf(xs, a, b), clip)
            grad[rows[order], k] = 2.0 * lam / bm * (F - j) * pdf
    return loss, grad


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def make_rows(rng, B, E, spread):
    p = softmax(rng.normal(size=(B, E)) * spread)
    # Ties: duplicate a few rows (identical values in every column).
    p[3] = p[1]
    p[B - 2] = p[1]
    return p


def group_prior(G, E, alpha_b, alpha_s):
    alpha = np.full((G, E), alpha_b)
    for m in range(G):
        for e in range(E):
            owned = (e * G) // E == m if G <= E else e == (m * E) // G
            if owned:
                alpha[m, e] += alpha_s
    return alpha


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    E = 4
    cases = {}

    p = make_rows(rng, 41, E, 1.5)
    cases["symmetric_a1"] = dict(kind="symmetric", p=p, alpha=np.full((1, E), 1.0),
                                 groups=np.zeros(len(p), np.int64), lam=0.01, clip=100.0)

    # alpha < 1: the pdf diverges at 0. Large logit spread gives tiny probabilities (pdf above the
    # clip), and one row holds exact zeros (pdf = inf, clipped).
    p = make_rows(rng, 33, E, 6.0)
    p[5] = [0.25, 0.75, 0.0, 0.0]
    p[6] = [1e-9, 1.0 - 2e-9, 1e-9, 0.0]
    cases["symmetric_a05"] = dict(kind="symmetric", p=p, alpha=np.full((1, E), 0.5),
                                  groups=np.zeros(len(p), np.int64), lam=0.02, clip=50.0)

    p = make_rows(rng, 29, E, 2.0)
    cases["asymmetric"] = dict(kind="asymmetric", p=p, alpha=np.array([[1.5, 1.0, 0.75, 1.25]]),
                               groups=np.zeros(len(p), np.int64), lam=0.01, clip=100.0)

    # The paper's modality prior: 2 groups over 4 experts, group 0 boosts {0, 1}, group 1 {2, 3}.
    p = make_rows(rng, 47, E, 2.5)
    cases["group_g2"] = dict(kind="group", p=p, alpha=group_prior(2, E, 0.75, 0.5), alpha_b=0.75,
                             alpha_s=0.5, groups=rng.integers(0, 2, size=len(p)).astype(np.int64),
                             lam=0.01, clip=100.0)

    # 3 groups over 4 experts (not a divisor): group 0 boosts {0, 1}, group 1 {2}, group 2 {3};
    # some rows are ignored (group -1).
    p = make_rows(rng, 53, E, 2.5)
    g = rng.integers(-1, 3, size=len(p)).astype(np.int64)
    cases["group_g3_ignored"] = dict(kind="group", p=p, alpha=group_prior(3, E, 1.0, 0.5), alpha_b=1.0,
                                     alpha_s=0.5, groups=g, lam=0.03, clip=100.0)

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with h5py.File(args.out, "w") as f:
        f.attrs["seed"] = args.seed
        f.attrs["scipy_version"] = scipy.__version__
        f.attrs["numpy_version"] = np.__version__
        for name, c in cases.items():
            loss, grad = dpsl_reference(c["p"], c["alpha"], c["groups"], c["lam"], c["clip"])
            grp = f.create_group(name)
            grp.create_dataset("p", data=c["p"].astype(np.float64))
            grp.create_dataset("alpha", data=c["alpha"].astype(np.float64))
            grp.create_dataset("groups", data=c["groups"].astype(np.int64))
            grp.create_dataset("loss", data=np.array([loss], np.float64))
            grp.create_dataset("grad", data=grad.astype(np.float64))
            grp.attrs["lambda"] = float(c["lam"])
            grp.attrs["pdf_clip"] = float(c["clip"])
            grp.attrs["kind"] = c["kind"]
            if c["kind"] == "group":
                grp.attrs["alpha_b"] = float(c["alpha_b"])
                grp.attrs["alpha_s"] = float(c["alpha_s"])
            a0 = c["alpha"][0]
            clipped = int(np.sum(beta_dist.pdf(np.clip(c["p"], 0, 1), a0, a0.sum() - a0) > c["clip"]))
            print(f"{name}: B={c['p'].shape[0]} E={E} G={c['alpha'].shape[0]} loss={loss:.17g} "
                  f"max|grad|={np.abs(grad).max():.3e} (entries whose pdf under group 0's prior "
                  f"exceeds the clip: {clipped})")


if __name__ == "__main__":
    main()
