#!/usr/bin/python3
"""Reference data for the float64 SVD and the whitened truncated SVD of cluster-aware upcycling
(tests/golden/test_golden_svd.cpp), from numpy alone (Debian python3-numpy, python3-h5py):
numpy.linalg.svd (LAPACK dgesdd through numpy's lapack_lite / the system LAPACK) and
numpy.linalg.cholesky, independent of the C++ wrappers under test.

    /usr/bin/python3 tests/golden/gen_svd.py OUT.h5 [--seed N]

Plain SVD cases (tall, wide, square, a larger tall one, and one of rank 3): Gaussian matrices,
re-drawn until the non-zero singular values are separated by at least 1e-3 sigma_max (so that
each singular vector is determined up to sign to ~eps / 1e-3).

Whitened SVD (docs/methods.md section 2, step 4; include/upcycle/init/whitened_svd.hpp), in float64:
    G   = X^T X
    S   = cholesky(G + chol_eps * mean(diag G) * I)          (lower)
    U s Vt = svd(W1 S)
    r   = smallest r with cumsum(s^2)[r-1] / sum(s^2) >= tau, then max(r, ceil(min_rank_frac D)),
          then min(r, min(F, D))
    W1_r = (U[:, :r] s[:r] Vt[:r]) S^-1                      (numpy.linalg.solve with S^T)
Cases: a tall one where tau decides the rank, one with a strong mean direction where the floor
decides it, a SwiGLU-shaped [2F, D] one and a wide one (F < D). Each is re-drawn until the
energies at r - 1 and r are at least 1e-3 away from tau and s_r - s_{r+1} >= 1e-2 s_1, so that the
rank and the truncation are unambiguous.

HDF5 layout:
    /svd/<case>/a       f64 [m, n]
    /svd/<case>/sigma   f64 [k]        k = min(m, n), descending
    /svd/<case>/u       f64 [m, k]
    /svd/<case>/vt      f64 [k, n]
        attribute rank: the number of non-zero singular values (by construction)
    /whitened/<case>/w1, x, g, w1_r, sigma  (f64)
        attributes tau, min_rank_frac, chol_eps, jitter, energy_kept, dropped_sq (f64), rank (i64)
    attributes on /: seed, numpy_version
"""
import argparse
import math
import os

import h5py
import numpy as np


def separated_svd(rng, m, n, rank=None):
    k = min(m, n)
    for _ in range(1000):
        if rank is None:
            a = rng.normal(size=(m, n))
        else:
            a = rng.normal(size=(m, rank)) @ rng.normal(size=(rank, n))
        u, s, vt = np.linalg.svd(a, full_matrices=False)
        nz = k if rank is None else rank
        gaps = -np.diff(s[:nz]) if nz > 1 else np.array([np.inf])
        if gaps.min() >= 1e-3 * s[0] and (nz == k or s[nz - 1] >= 1e-2 * s[0]):
            return a, u, s, vt, nz, gaps.min() / s[0]
    raise RuntimeError("no well-separated draw")


def whitened_reference(w1, g, tau, min_rank_frac, chol_eps):
    F, D = w1.shape
    mean_diag = np.trace(g) / D
    jitter = chol_eps * mean_diag
    s_mat = np.linalg.cholesky(g + jitter * np.eye(D))
    u, s, vt = np.linalg.svd(w1 @ s_mat, full_matrices=False)
    e = s ** 2
    total = e.sum()
    cum = np.cumsum(e) / total
    r = int(np.argmax(cum >= tau)) + 1 if tau < 1 else int(np.count_nonzero(s > 0))
    r = max(r, math.ceil(min_rank_frac * D - 1e-9))
    r = min(r, min(F, D))
    m = (u[:, :r] * s[:r]) @ vt[:r]
    w1_r = np.linalg.solve(s_mat.T, m.T).T  # X S = M  <=>  S^T X^T = M^T
    return dict(w1_r=w1_r, sigma=s, rank=r, jitter=jitter, energy_kept=e[:r].sum() / total,
                dropped_sq=e[r:].sum(), cum=cum)


def unambiguous(ref, tau):
    r, cum, s = ref["rank"], ref["cum"], ref["sigma"]
    gap_ok = r == len(s) or (s[r - 1] - s[r]) >= 1e-2 * s[0]
    t = int(np.argmax(cum >= tau)) + 1  # the rank tau alone picks
    margin = min(cum[t - 1] - tau, tau - cum[t - 2] if t >= 2 else 1.0)
    return gap_ok and margin >= 1e-3


def whitened_case(rng, F, D, N, tau, frac, eps, mean_scale=0.0):
    for _ in range(1000):
        x = rng.normal(size=(N, D))
        if mean_scale:
            mu = rng.normal(size=D)
            x = 0.3 * x + mean_scale * mu / np.linalg.norm(mu)
        w1 = rng.normal(size=(F, D)) * 0.05
        g = x.T @ x
        g = 0.5 * (g + g.T)  # exactly symmetric, as an all-reduced X^T X should be
        ref = whitened_reference(w1, g, tau, frac, eps)
        if unambiguous(ref, tau):
            return dict(w1=w1, x=x, g=g, tau=tau, frac=frac, eps=eps, **ref)
    raise RuntimeError("no unambiguous draw")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)

    svd_cases = {"tall": (12, 7, None), "wide": (6, 11, None), "square": (9, 9, None),
                 "tall_large": (64, 24, None), "rank_deficient": (10, 8, 3)}
    whitened_cases = {
        "tau_decides": dict(F=20, D=12, N=100, tau=0.9, frac=0.25, eps=1e-5),
        "floor_decides": dict(F=20, D=12, N=100, tau=0.9, frac=0.5, eps=1e-5, mean_scale=10.0),
        "swiglu": dict(F=32, D=12, N=150, tau=0.8, frac=0.25, eps=1e-5),
        "wide": dict(F=8, D=12, N=60, tau=0.95, frac=0.25, eps=1e-4),
    }

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with h5py.File(args.out, "w") as f:
        f.attrs["seed"] = args.seed
        f.attrs["numpy_version"] = np.__version__
        for name, (m, n, rank) in svd_cases.items():
            a, u, s, vt, nz, gap = separated_svd(rng, m, n, rank)
            grp = f.create_group(f"svd/{name}")
            for key, val in dict(a=a, sigma=s, u=u, vt=vt).items():
                grp.create_dataset(key, data=np.asarray(val, np.float64))
            grp.attrs["rank"] = np.int64(nz)
            print(f"svd/{name}: [{m}, {n}] rank {nz} sigma_max {s[0]:.4g} min gap / sigma_max {gap:.3e}")
        for name, spec in whitened_cases.items():
            c = whitened_case(rng, spec["F"], spec["D"], spec["N"], spec["tau"], spec["frac"], spec["eps"],
                              spec.get("mean_scale", 0.0))
            grp = f.create_group(f"whitened/{name}")
            for key in ("w1", "x", "g", "w1_r", "sigma"):
                grp.create_dataset(key, data=np.asarray(c[key], np.float64))
            grp.attrs["tau"] = float(c["tau"])
            grp.attrs["min_rank_frac"] = float(c["frac"])
            grp.attrs["chol_eps"] = float(c["eps"])
            grp.attrs["jitter"] = float(c["jitter"])
            grp.attrs["energy_kept"] = float(c["energy_kept"])
            grp.attrs["dropped_sq"] = float(c["dropped_sq"])
            grp.attrs["rank"] = np.int64(c["rank"])
            tau_rank = int(np.argmax(c["cum"] >= c["tau"])) + 1
            print(f"whitened/{name}: W1 [{spec['F']}, {spec['D']}] X [{spec['N']}, {spec['D']}] tau {c['tau']} "
                  f"rank {c['rank']} (tau alone: {tau_rank}, floor {math.ceil(c['frac'] * spec['D'])}) "
                  f"energy kept {c['energy_kept']:.6f}")


if __name__ == "__main__":
    main()
