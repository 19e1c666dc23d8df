#!/usr/bin/python3
"""The upcycling study: every initialiser, with and without EESD, from one dense model, several seeds.

  launch/compare_upcycling.py [--out DIR] [--seeds 1 2 3] [--np 2] [--only NAME,...]
                              [--eval-steps 0 50 100 200 500] [--dense PATH] [--report-only]
                              [-- extra upcycle_train overrides for every MoE run]

1. The dense model. Unless --dense names a checkpoint, OUT/dense is trained first with the study's
   config (configs/compare_upcycling.ini) as stage dense for --dense-steps steps: deliberately short
   of saturation, so that what an initialisation brings is not already learnt by the dense model.
2. The runs. Every variant (VARIANTS below: the five methods, each with EESD off and on; the
   controls cluster with random orthonormal subspaces of the same ranks, cluster with tau = 1 (full
   rank) and cluster with the rank floor at 0.1 of the width;
   cluster with the aux-free bias and with DPSL instead of the LB loss) is upcycled from that one
   dense checkpoint and trained as an MoE for max(--eval-steps) steps, once per seed; the seed
   drives the upcycling draws, the data order and the router.
3. Early training. For every step of --eval-steps (0 = the upcycled checkpoint), the eval stage
   scores that checkpoint: test accuracy, few-shot linear probes (k = 1, 5, 10, 5 draws) and the
   specialisation measures of every MoE block (OUT/runs/<variant>/seed<S>/eval_step<N>/).
4. The report: OUT/comparison.md (means ± std over seeds; paired differences between variants on
   the same seeds with 95% t intervals), OUT/summary.json, OUT/plots/*.png.

Runs are resumable: a run whose report.json exists is not trained again, an evaluation whose
eval_report.json exists is not repeated.
"""
import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

EESD = ["--eesd.enabled=true"]
METHODS = [
    ("sparse", ["--upcycle.method=sparse"]),
    ("drop", ["--upcycle.method=drop", "--upcycle.drop_ratio=0.5"]),
    ("drop_svd", ["--upcycle.method=drop_svd"]),
    ("granular", ["--upcycle.method=granular", "--upcycle.granularity=2"]),
    ("cluster", ["--upcycle.method=cluster"]),
]
# (name, overrides): every method with EESD off and on, then the controls.
VARIANTS = METHODS + [(n + "+eesd", o + EESD) for n, o in METHODS] + [
    ("cluster_random_subspace", ["--upcycle.method=cluster", "--upcycle.subspace=random"]),
    ("cluster_tau1", ["--upcycle.method=cluster", "--upcycle.tau=1"]),
    ("cluster_floor0.1", ["--upcycle.method=cluster", "--upcycle.min_rank_frac=0.1"]),
    ("cluster_auxfree", ["--upcycle.method=cluster", "--moe.lb_weight=0", "--moe.aux_free_rate=0.001"]),
    ("cluster_dpsl", ["--upcycle.method=cluster", "--moe.lb_weight=0", "--dpsl.enabled=true"]),
]

# The comparisons of the report: (variant, baseline), differences taken seed by seed.
PAIRS = [
    ("cluster", "sparse"), ("drop", "sparse"), ("drop_svd", "sparse"), ("granular", "sparse"),
    ("cluster+eesd", "cluster"), ("sparse+eesd", "sparse"), ("cluster+eesd", "sparse+eesd"),
    ("cluster_random_subspace", "cluster"), ("cluster_tau1", "cluster"), ("cluster_floor0.1", "cluster"),
    ("cluster_dpsl", "cluster"), ("cluster_auxfree", "cluster"),
]

# Student t quantiles t_{0.975, df} for the 95% intervals of a mean of df + 1 paired differences.
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        15: 2.131, 20: 2.086, 30: 2.042}


def t975(df):
    return T975[max(k for k in T975 if k <= df)] if df >= 1 else float("nan")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs/compare_upcycling.ini"))
    p.add_argument("--dense", default="", help="a dense checkpoint to start from (default: train OUT/dense)")
    p.add_argument("--dense-steps", type=int, default=600)
    p.add_argument("--out", default=str(ROOT / "runs/compare_upcycling"))
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--eval-steps", type=int, nargs="+", default=[0, 50, 100, 200, 500])
    p.add_argument("--np", type=int, default=2)
    p.add_argument("--binary", default=str(ROOT / "build/src/upcycle_train"))
    p.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    p.add_argument("--report-only", action="store_true", help="only rebuild the table and plots")
    p.add_argument("extra", nargs="*", help="overrides passed to every MoE run (after --)")
    args = p.parse_args(argv)
    args.eval_steps = sorted(set(args.eval_steps))
    if args.eval_steps[0] < 0 or args.eval_steps[-1] < 1:
        p.error("--eval-steps must be >= 0 with at least one positive step")
    return args


def upcycle_train(args, cmd_args, log_path):
    cmd = ["mpirun", "--oversubscribe", "-np", str(args.np), args.binary, args.config, "--log.progress=off"] + cmd_args
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    if os.getuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        status = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if status != 0:
        sys.exit(f"compare: failed (exit {status}): {' '.join(cmd)}; see {log_path}")


def dense_checkpoint(args):
    if args.dense:
        if not Path(args.dense).exists():
            sys.exit(f"compare: --dense {args.dense} does not exist")
        return Path(args.dense)
    run_dir = Path(args.out) / "dense"
    ckpt = run_dir / "checkpoints/dense/latest.h5"
    if not (run_dir / "report.json").exists() and not args.report_only:
        print(f"compare: training the dense model ({args.dense_steps} steps) into {run_dir}", flush=True)
        # An earlier attempt without report.json was cut short: this one starts it over.
        upcycle_train(args, [f"--run.dir={run_dir}", "--run.overwrite=true", "--run.stages=dense",
                             f"--train.steps={args.dense_steps}",
                             "--train.lr=3e-3", "--train.warmup_steps=100", f"--train.eval_every={args.dense_steps}",
                             "--train.eval_at_start=false", "--checkpoint.every=0"], run_dir / "console.log")
    return ckpt


def evaluate(args, checkpoint, out_dir, key, overrides=()):
    """Runs the eval stage on one checkpoint into out_dir (its own run directory); returns the report.
    Of the variant's overrides only those that shape the model or its routing (moe.*, upcycle.*:
    granular's expert width follows upcycle.method) are passed on."""
    report = out_dir / "eval_report.json"
    shaping = [o for o in list(overrides) + args.extra if o.startswith(("--moe.", "--upcycle.", "--model."))]
    if not report.exists() and not args.report_only:
        upcycle_train(args, [f"--run.dir={out_dir}", "--run.stages=eval", f"--eval.{key}={checkpoint}",
                             "--eval.tokens=1024"] + shaping, out_dir / "console.log")
    return json.loads(report.read_text()) if report.exists() else None


def run_one(args, dense, name, overrides, seed):
    run_dir = Path(args.out) / "runs" / name / f"seed{seed}"
    steps = args.eval_steps[-1]
    every = math.gcd(*[s for s in args.eval_steps if s > 0])
    if not (run_dir / "report.json").exists() and not args.report_only:
        print(f"compare: {name} seed {seed}", flush=True)
        upcycle_train(args, [f"--run.dir={run_dir}", "--run.overwrite=true", f"--run.seed={seed}",
                             f"--upcycle.dense_checkpoint={dense}",
                             f"--train.steps={steps}", f"--checkpoint.every={every}", "--checkpoint.keep=0",
                             f"--train.eval_every={every}", "--train.eval_at_start=true"] + overrides + args.extra,
                      run_dir / "console.log")
    evals = {}
    for s in args.eval_steps:
        ckpt = (run_dir / "checkpoints/upcycle/upcycled.h5" if s == 0 else
                run_dir / f"checkpoints/moe/step-{s:07d}.h5")
        if ckpt.exists() or (run_dir / f"eval_step{s}" / "eval_report.json").exists():
            rep = evaluate(args, ckpt, run_dir / f"eval_step{s}", "moe_checkpoint", overrides)
            if rep is not None:
                evals[s] = rep["moe"]
    return run_dir, evals


def read_events(run_dir):
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in open(path) if line.strip()] if path.exists() else []


def summarise(run_dir, evals):
    """The numbers of one run: per step the eval stage's, and the training curves."""
    events = read_events(run_dir)
    train = [e for e in events if e.get("event") == "train" and e.get("stage") == "moe"]
    val = [e for e in events if e.get("event") == "eval" and e.get("stage") == "moe"]
    out = {"val_accuracy": {int(e["step"]): e["accuracy"] for e in val},
           "loss_curve": [(int(e["step"]), e["loss"]) for e in train], "steps": {}}
    for s, m in sorted(evals.items()):
        row = {"test_accuracy": m["test"]["accuracy"]}
        for k, v in m.get("few_shot", {}).items():
            row[f"{k}shot"] = v["mean"]
        for b, blk in m.get("blocks", {}).items():
            short = b.split("/")[1]
            for key in ("weight_cosine", "output_cosine", "entropy_norm", "load_cov", "relative_compactness",
                        "expert_mean_prob_mean", "prob_std"):
                if key in blk:
                    row[f"b{short}/{key}"] = blk[key]
        out["steps"][s] = row
    blocks = sorted({k.split("/")[2] for e in train for k in e if k.startswith("moe/blocks/")})
    for b in blocks:
        for key in ("lb_loss", "eesd_loss", "entropy_norm", "cov"):
            full = f"moe/blocks/{b}/{key}"
            curve = [(int(e["step"]), e[full]) for e in train if full in e]
            if curve:
                out[f"b{b}/{key}_curve"] = curve
    return out


def mean_std(values):
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return float("nan"), float("nan"), 0
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, s, len(values)


def fmt(values, digits=2, scale=1.0):
    m, s, n = mean_std(values)
    if n == 0:
        return "–"
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"


def interval(m, lo, hi):
    """'+0.12 [-0.03, +0.27]', with a '*' when the interval excludes 0."""
    def f(v):
        return "+0" if abs(v) < 5e-13 else f"{v:+.3g}"
    star = "*" if lo > 0 or hi < 0 else ""
    return f"{f(m)} [{f(lo)}, {f(hi)}]{star}"


def paired(results, a, b, step, key):
    """Mean difference a - b over the seeds both have, and its 95% t interval."""
    if a not in results or b not in results:
        return None
    diffs = []
    for seed, ra in results[a].items():
        rb = results[b].get(seed)
        if rb is None:
            continue
        va, vb = ra["steps"].get(step, {}).get(key), rb["steps"].get(step, {}).get(key)
        if va is not None and vb is not None:
            diffs.append(va - vb)
    m, s, n = mean_std(diffs)
    if n < 2:
        return None
    h = t975(n - 1) * s / math.sqrt(n)
    return m, m - h, m + h, n


def write_report(args, dense_eval, results):
    out = Path(args.out)
    names = [n for n, _ in VARIANTS if n in results]
    steps = args.eval_steps
    seeds = sorted({s for n in names for s in results[n]})
    blocks = sorted({k.split("/")[0] for n in names for r in results[n].values() for row in r["steps"].values()
                     for k in row if k.startswith("b")})
    lines = [f"# Upcycling study (seeds {', '.join(map(str, seeds))}; mean ± std over seeds)", "",
             f"Config `{os.path.relpath(args.config, ROOT)}` {' '.join(args.extra)}; MoE steps {steps[-1]}; "
             f"evaluations at steps {', '.join(map(str, steps))} (0 = the upcycled checkpoint).", ""]
    if dense_eval:
        fs = dense_eval.get("few_shot", {})
        lines += [f"Dense model: test accuracy {100 * dense_eval['test']['accuracy']:.2f}%"
                  + "".join(f", {k}-shot {100 * v['mean']:.2f} ± {100 * v['std']:.2f}%" for k, v in fs.items()), ""]

    def table(title, key, scale=100.0, digits=2):
        rows = ["", f"## {title}", "", "| variant | " + " | ".join(f"step {s}" for s in steps) + " |",
                "|---|" + "---|" * len(steps)]
        for n in names:
            rs = results[n].values()
            rows.append(f"| {n} | " + " | ".join(fmt([r["steps"].get(s, {}).get(key) for r in rs], digits, scale)
                                                  for s in steps) + " |")
        return rows

    lines += table("Test accuracy (%)", "test_accuracy")
    lines += table("10-shot linear probe accuracy (%)", "10shot")
    lines += table("1-shot linear probe accuracy (%)", "1shot")
    for b in blocks:
        lines += table(f"Block {b[1:]}: expert W1 cosine similarity", f"{b}/weight_cosine", 1.0, 4)
        lines += table(f"Block {b[1:]}: expert output cosine similarity", f"{b}/output_cosine", 1.0, 3)
        lines += table(f"Block {b[1:]}: routing entropy / log E", f"{b}/entropy_norm", 1.0, 3)
        lines += table(f"Block {b[1:]}: CoV of the loads", f"{b}/load_cov", 1.0, 3)
        lines += table(f"Block {b[1:]}: relative compactness", f"{b}/relative_compactness", 1.0, 3)
        lines += table(f"Block {b[1:]}: std of the router probabilities", f"{b}/prob_std", 1.0, 4)

    # The training-time router losses at the end (the last metrics line of stage moe).
    lines += ["", "## Load-balancing loss at the end of MoE training (mean of the last logged values)", "",
              "| variant | " + " | ".join(f"block {b[1:]}" for b in blocks) + " |", "|---|" + "---|" * len(blocks)]
    for n in names:
        cells = [fmt([r[f"{b}/lb_loss_curve"][-1][1] if r.get(f"{b}/lb_loss_curve") else None
                      for r in results[n].values()], 5) for b in blocks]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += ["", "## Paired differences (variant − baseline, same seeds; mean and 95% t interval, * = excludes 0)", ""]
    keys = [("test_accuracy", "test acc (pp)", 100.0), ("10shot", "10-shot (pp)", 100.0),
            ("1shot", "1-shot (pp)", 100.0)]
    for b in blocks:
        keys += [(f"{b}/weight_cosine", f"block {b[1:]} W1 cosine", 1.0),
                 (f"{b}/output_cosine", f"block {b[1:]} output cosine", 1.0),
                 (f"{b}/entropy_norm", f"block {b[1:]} entropy/log E", 1.0),
                 (f"{b}/prob_std", f"block {b[1:]} router prob std", 1.0),
                 (f"{b}/load_cov", f"block {b[1:]} load CoV", 1.0)]
    lines += ["| variant − baseline | measure | " + " | ".join(f"step {s}" for s in steps) + " |",
              "|---|---|" + "---|" * len(steps)]
    for a, b in PAIRS:
        for key, label, scale in keys:
            cells = []
            for s in steps:
                d = paired(results, a, b, s, key)
                cells.append("–" if d is None else interval(d[0] * scale, d[1] * scale, d[2] * scale))
            if any(c != "–" for c in cells):
                lines.append(f"| {a} − {b} | {label} | " + " | ".join(cells) + " |")
    # EESD helps more with the cluster initialisation: the difference of the two EESD gains.
    lines += ["", "## EESD gain with cluster minus EESD gain with sparse (difference in differences)", "",
              "| measure | " + " | ".join(f"step {s}" for s in steps) + " |", "|---|" + "---|" * len(steps)]
    for key, label, scale in keys[:3]:
        cells = []
        for s in steps:
            diffs = []
            for seed in seeds:
                try:
                    g = lambda n: results[n][seed]["steps"][s][key]
                    diffs.append((g("cluster+eesd") - g("cluster")) - (g("sparse+eesd") - g("sparse")))
                except KeyError:
                    pass
            m, sd, n = mean_std(diffs)
            h = t975(n - 1) * sd / math.sqrt(n) if n >= 2 else 0.0
            cells.append("–" if n < 2 else interval(m * scale, (m - h) * scale, (m + h) * scale))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    (out / "comparison.md").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps({"dense": dense_eval, "runs": results}, indent=1))
    print(f"compare: wrote {out / 'comparison.md'}")


def plot(args, results):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out = Path(args.out) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    names = [n for n, _ in VARIANTS if n in results]

    def curve(ax, name, key, scale=1.0):
        xs = args.eval_steps
        stats = [mean_std([r["steps"].get(s, {}).get(key) for r in results[name].values()]) for s in xs]
        pts = [(x, m * scale, sd * scale) for x, (m, sd, n) in zip(xs, stats) if n > 0]
        if pts:
            style = "--" if "+eesd" in name else (":" if name.startswith("cluster_") else "-")
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], label=name,
                        linestyle=style, marker="o", markersize=3, capsize=2)

    def figure(fname, key, ylabel, scale=1.0, select=None):
        fig, ax = plt.subplots(figsize=(8, 5))
        for n in names:
            if select is None or select(n):
                curve(ax, n, key, scale)
        ax.set(xlabel="MoE training step", ylabel=ylabel, title=ylabel)
        ax.set_xticks(args.eval_steps)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)

    main = lambda n: not n.startswith("cluster_")
    figure("test_accuracy.png", "test_accuracy", "test accuracy (%)", 100.0, main)
    figure("ten_shot.png", "10shot", "10-shot probe accuracy (%)", 100.0, main)
    figure("controls_test_accuracy.png", "test_accuracy", "test accuracy (%), cluster and its controls", 100.0,
           lambda n: n.startswith("cluster") or n == "sparse")
    blocks = sorted({k.split("/")[0] for n in names for r in results[n].values() for row in r["steps"].values()
                     for k in row if k.startswith("b")})
    for b in blocks:
        for key, label in (("weight_cosine", "expert W1 cosine"), ("output_cosine", "expert output cosine"),
                           ("entropy_norm", "routing entropy / log E"), ("relative_compactness", "relative compactness")):
            figure(f"block{b[1:]}_{key}.png", f"{b}/{key}", f"block {b[1:]}: {label}", 1.0,
                   lambda n: not n.endswith("+eesd"))
    print(f"compare: wrote {out}/*.png")


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    only = set(filter(None, args.only.split(",")))
    unknown = only - {n for n, _ in VARIANTS}
    if unknown:
        sys.exit(f"compare: unknown variants {sorted(unknown)}; known: {[n for n, _ in VARIANTS]}")
    dense = dense_checkpoint(args)
    if not args.report_only and not dense.exists():
        sys.exit(f"compare: the dense checkpoint {dense} does not exist")
    dense_eval = evaluate(args, dense, Path(args.out) / "dense_eval", "dense_checkpoint") if dense.exists() else None
    dense_eval = dense_eval.get("dense") if dense_eval else None
    results = {}
    for seed in args.seeds:
        for name, overrides in VARIANTS:
            if only and name not in only:
                continue
            run_dir, evals = run_one(args, dense, name, overrides, seed)
            if evals:
                results.setdefault(name, {})[seed] = summarise(run_dir, evals)
    if not results:
        sys.exit("compare: no finished runs")
    write_report(args, dense_eval, results)
    plot(args, results)


if __name__ == "__main__":
    main()
