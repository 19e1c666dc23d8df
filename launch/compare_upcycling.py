#!/usr/bin/python3
"""The comparison the upcycling papers make, at small scale.

One dense ViT (by default the main job's, runs/fashion_vit_upcycle_tiny/checkpoints/dense/latest.h5)
is upcycled by every method -- sparse, drop r = 0.25 and 0.5, drop_svd, granular, cluster -- and
each MoE is trained for the same steps on the same data (configs/compare_upcycling.ini), for
several seeds. Then it writes:
  OUT/comparison.md      the table: test accuracy at each evaluation, final training loss,
                         expert weight similarity (mean pairwise cosine of the experts' W1, at the
                         start and the end), routing entropy and CoV of the loads per MoE block,
                         each as mean +- std over the seeds;
  OUT/plots/*.png        accuracy and loss curves (mean over seeds, band = min..max), and the
                         per-block routing entropy and CoV curves;
  OUT/summary.json       every number of the table.
Runs go to OUT/runs/<variant>/seed<S>/ (each an ordinary run directory); a run whose report.json
exists is not run again, so an interrupted comparison continues where it stopped.

  launch/compare_upcycling.py [--dense PATH] [--out DIR] [--seeds 1 2 3] [--np 2]
                              [--only cluster,sparse] [-- extra upcycle_train overrides]
"""
import argparse
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (name, overrides): the methods the papers compare.
VARIANTS = [
    ("sparse", ["--upcycle.method=sparse"]),
    ("drop_r0.25", ["--upcycle.method=drop", "--upcycle.drop_ratio=0.25"]),
    ("drop_r0.5", ["--upcycle.method=drop", "--upcycle.drop_ratio=0.5"]),
    ("drop_svd", ["--upcycle.method=drop_svd"]),
    ("granular", ["--upcycle.method=granular", "--upcycle.granularity=2"]),
    ("cluster", ["--upcycle.method=cluster"]),
]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dense", default=str(ROOT / "runs/fashion_vit_upcycle_tiny/checkpoints/dense/latest.h5"))
    p.add_argument("--config", default=str(ROOT / "configs/compare_upcycling.ini"))
    p.add_argument("--out", default=str(ROOT / "runs/compare_upcycling"))
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--np", type=int, default=2)
    p.add_argument("--binary", default=str(ROOT / "build/src/upcycle_train"))
    p.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    p.add_argument("--report-only", action="store_true", help="only rebuild the table and plots")
    p.add_argument("extra", nargs="*", help="overrides passed to every run (after --)")
    return p.parse_args(argv)


def run_one(args, name, overrides, seed):
    run_dir = Path(args.out) / "runs" / name / f"seed{seed}"
    if (run_dir / "report.json").exists():
        return run_dir
    cmd = ["mpirun", "--oversubscribe", "-np", str(args.np), args.binary, args.config,
           f"--run.dir={run_dir}", f"--run.seed={seed}", f"--upcycle.dense_checkpoint={args.dense}",
           "--log.progress=false"] + overrides + args.extra
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    if os.getuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    print(f"compare: {name} seed {seed}: {' '.join(cmd)}", flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "console.log", "w") as log:
        status = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if status != 0:
        sys.exit(f"compare: {name} seed {seed} failed (exit {status}); see {run_dir / 'console.log'}")
    return run_dir


def read_events(run_dir):
    return [json.loads(line) for line in open(run_dir / "metrics.jsonl") if line.strip()]


def expert_similarity(checkpoint, block):
    """Mean pairwise cosine similarity of the flattened W1 of the experts of one block."""
    import h5py
    import numpy as np
    with h5py.File(checkpoint, "r") as f:
        w = f[f"/model/blocks/{block}/moe/experts/w1"][()].astype(np.float64)
    w = w.reshape(w.shape[0], -1)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    c = w @ w.T
    e = w.shape[0]
    return float((c.sum() - np.trace(c)) / (e * (e - 1)))


def summarise_run(run_dir):
    events = read_events(run_dir)
    moe_train = [e for e in events if e.get("event") == "train" and e.get("stage") == "moe"]
    evals = [e for e in events if e.get("event") == "eval" and e.get("stage") == "moe"]
    blocks = sorted({k.split("/")[2] for e in moe_train for k in e if k.startswith("moe/blocks/")})
    out = {
        "accuracy": {int(e["step"]): e["accuracy"] for e in evals},
        "loss_curve": [(int(e["step"]), e["loss"]) for e in moe_train],
        "final_loss": moe_train[-1]["loss"],
        "blocks": {},
    }
    for b in blocks:
        key = f"moe/blocks/{b}/"
        ent = [(int(e["step"]), e[key + "entropy_norm"]) for e in moe_train if key + "entropy_norm" in e]
        cov = [(int(e["step"]), e[key + "cov"]) for e in moe_train if key + "cov" in e]
        out["blocks"][b] = {
            "entropy_curve": ent,
            "cov_curve": cov,
            "entropy": ent[-1][1],
            "cov": cov[-1][1],
            "similarity_start": expert_similarity(run_dir / "checkpoints/upcycle/upcycled.h5", b),
            "similarity_end": expert_similarity(run_dir / "checkpoints/moe/latest.h5", b),
        }
    return out


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, s


def fmt(values, digits=4, percent=False):
    m, s = mean_std(values)
    k = 100.0 if percent else 1.0
    return f"{m * k:.{digits}f} ± {s * k:.{digits}f}"


def write_table(args, results):
    out = Path(args.out)
    names = [n for n, _ in VARIANTS if n in results]
    steps = sorted({s for n in names for r in results[n].values() for s in r["accuracy"]})
    blocks = sorted({b for n in names for r in results[n].values() for b in r["blocks"]})
    seeds = sorted({s for n in names for s in results[n]})
    lines = [f"# Upcycling methods compared (seeds {', '.join(map(str, seeds))}; mean ± std over seeds)", "",
             f"Dense checkpoint: `{args.dense}`; MoE training: `{args.config}` {' '.join(args.extra)}", "",
             "## Test accuracy (%) during MoE training, and final training loss", ""]
    lines.append("| method | " + " | ".join(f"step {s}" for s in steps) + " | final train loss |")
    lines.append("|---|" + "---|" * (len(steps) + 1))
    for n in names:
        rs = results[n].values()
        cells = [fmt([r["accuracy"].get(s) for r in rs], 2, percent=True) for s in steps]
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {fmt([r['final_loss'] for r in rs])} |")
    for b in blocks:
        lines += ["", f"## MoE block {b}", "",
                  "| method | expert W1 similarity at start | at end | routing entropy / log E (end) | CoV of loads (end) |",
                  "|---|---|---|---|---|"]
        for n in names:
            rs = [r["blocks"][b] for r in results[n].values() if b in r["blocks"]]
            lines.append(f"| {n} | {fmt([r['similarity_start'] for r in rs])} | {fmt([r['similarity_end'] for r in rs])}"
                         f" | {fmt([r['entropy'] for r in rs])} | {fmt([r['cov'] for r in rs])} |")
    (out / "comparison.md").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps(results, indent=1))
    print(f"compare: wrote {out / 'comparison.md'}")


def plot(args, results):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out = Path(args.out) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    names = [n for n, _ in VARIANTS if n in results]

    def band(ax, name, curves, label):
        xs = sorted({x for c in curves for x, _ in c})
        per = [[dict(c).get(x) for c in curves] for x in xs]
        per = [[v for v in p if v is not None] for p in per]
        ax.plot(xs, [sum(p) / len(p) for p in per], label=label)
        ax.fill_between(xs, [min(p) for p in per], [max(p) for p in per], alpha=0.2)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for n in names:
        band(ax, n, [sorted(r["accuracy"].items()) for r in results[n].values()], n)
    ax.set(xlabel="MoE training step", ylabel="test accuracy", title="Test accuracy after upcycling")
    ax.legend(), ax.grid(alpha=0.3)
    fig.tight_layout(), fig.savefig(out / "accuracy.png", dpi=120), plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for n in names:
        band(ax, n, [r["loss_curve"] for r in results[n].values()], n)
    ax.set(xlabel="MoE training step", ylabel="training loss", title="Training loss after upcycling", yscale="log")
    ax.legend(), ax.grid(alpha=0.3)
    fig.tight_layout(), fig.savefig(out / "loss.png", dpi=120), plt.close(fig)

    blocks = sorted({b for n in names for r in results[n].values() for b in r["blocks"]})
    for what, ylabel in (("entropy_curve", "routing entropy / log E"), ("cov_curve", "CoV of expert loads")):
        fig, axes = plt.subplots(1, len(blocks), figsize=(5.5 * len(blocks), 4), squeeze=False)
        for ax, b in zip(axes[0], blocks):
            for n in names:
                band(ax, n, [r["blocks"][b][what] for r in results[n].values() if b in r["blocks"]], n)
            ax.set(xlabel="MoE training step", ylabel=ylabel, title=f"block {b}")
            ax.grid(alpha=0.3)
        axes[0][0].legend()
        fig.tight_layout(), fig.savefig(out / f"{what.replace('_curve', '')}.png", dpi=120), plt.close(fig)
    print(f"compare: wrote {out}/*.png")


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    only = set(filter(None, args.only.split(",")))
    variants = [(n, o) for n, o in VARIANTS if not only or n in only]
    if not args.report_only and not Path(args.dense).exists():
        sys.exit(f"compare: the dense checkpoint {args.dense} does not exist: run the main job first "
                 f"(bash launch/main_job.sh) or pass --dense PATH")
    results = {}
    for seed, (name, overrides) in itertools.product(args.seeds, variants):
        run_dir = Path(args.out) / "runs" / name / f"seed{seed}"
        if not args.report_only:
            run_one(args, name, overrides, seed)
        if (run_dir / "report.json").exists():
            results.setdefault(name, {})[seed] = summarise_run(run_dir)
    if not results:
        sys.exit("compare: no finished runs")
    write_table(args, results)
    plot(args, results)


if __name__ == "__main__":
    main()
