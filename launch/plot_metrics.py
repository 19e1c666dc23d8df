#!/usr/bin/python3
"""Plots a run's metrics.jsonl (docs/training.md "Run directory").

    /usr/bin/python3 launch/plot_metrics.py RUN_DIR [--out DIR]

Reads RUN_DIR/metrics.jsonl (and RUN_DIR/eval_report.json when the eval stage wrote one) and writes
PNG files to RUN_DIR/plots/ (or DIR), then prints the path of every file written, one per line. Needs only the Debian packages python3-matplotlib and
python3-numpy; it uses the non-interactive Agg backend, so no display is needed.

Input. One JSON object per line, as upcycle_train writes them:
  {"event": "train", "stage": "dense", "step": 10, "loss": ..., "lr": ..., "grad_norm": ...,
   "tokens_per_s": ...}
  {"event": "eval", "stage": "dense", "step": 500, "accuracy": ...}   (or val_loss, bits_per_byte)
  {"event": "skipped_step", "stage": "dense", "step": 17}
A line without "event" counts as "train". Lines that do not parse (a partially written last line
of a run still in progress or killed, a stray byte) are skipped with a note on stderr. NaN,
Infinity and -Infinity (which upcycle_train writes for non-finite numbers) are read, and drawn as
gaps. When a resumed run repeats steps (it went back to an older checkpoint), the later line for
a (stage, step) wins, so each curve shows the history the final model actually has.

Figures (each written only when its keys occur; a run without evaluations gets no eval.png):
  loss.png          train loss vs step, one line per stage; skipped steps marked with an x
  lr.png            learning rate vs step
  tokens_per_s.png  throughput vs step
  grad_norm.png     gradient norm (before clipping) vs step
  eval.png          one panel per evaluation metric (accuracy, val_loss, bits_per_byte, ...)
  <event>_other.png one panel per further top-level numeric key of that event (e.g. a future
                    "lb_loss" in train events), so nothing logged is silently dropped
  <group>.png       grouped statistics, see below

Evaluation report. When RUN_DIR/eval_report.json exists (written by the eval stage, docs/training.md),
two more figures are drawn from it (a report that does not parse is skipped with a note on stderr):
  eval_few_shot.png       few-shot probe test accuracy vs k (labelled images per class), one line
                          per model (dense, moe) with error bars = the std over draws, and each
                          model's full test accuracy as a dashed line; only for classification runs
  eval_specialisation.png one panel per specialisation measure of the MoE blocks (weight and output
                          cosine, entropy, normalised entropy, load CoV, mean expert probability,
                          relative compactness), one bar per MoE block (the dense model has none);
                          a measure that is NaN (e.g. compactness with fewer than two experts
                          used) is marked n/a

Grouped statistics (the convention for per-MoE-block routing statistics and the like). A key of
the form "<group>/<name>" -- its group is everything before the LAST "/" -- belongs to a group,
and every group gets one figure, <group with "/" replaced by "_">.png, with one panel per name and
one line per stage. So "moe/blocks/01/cov", "moe/blocks/01/entropy" and "moe/blocks/01/load"
all go to moe_blocks_01.png, and block 03's statistics to moe_blocks_03.png. A nested object is
the same thing spelled differently: {"moe": {"blocks": {"01": {"cov": 0.4}}}} is flattened to
"moe/blocks/01/cov" (path components joined with "/"), so the writer may use either form. A value
that is a list of numbers (e.g. per-expert load [E]) is drawn as one line per element, "load[0]",
"load[1]", ... in the same panel. Grouped keys may appear in any event; the event name is added to
the line label when the same group appears in several events. Non-numeric values are ignored.
"""

import argparse
import json
import math
import os
import re
import sys
from collections import OrderedDict, defaultdict

# The standard keys of each event: not plotted as extra metrics.
BOOKKEEPING = {"event", "stage", "step", "time", "epoch", "rank", "world_size"}
TRAIN_STANDARD = ("loss", "lr", "tokens_per_s", "grad_norm")
TRAIN_TITLES = {
    "loss": ("training loss", "loss"),
    "lr": ("learning rate", "lr"),
    "tokens_per_s": ("throughput", "tokens / s"),
    "grad_norm": ("gradient norm (before clipping)", "global L2 norm"),
}


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Plot RUN_DIR/metrics.jsonl to PNG files (default RUN_DIR/plots/).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory holding metrics.jsonl")
    p.add_argument("--out", metavar="DIR", default=None, help="output directory (default RUN_DIR/plots)")
    return p.parse_args(argv)


def to_number(v):
    """A plottable float for v, or None. NaN/inf become NaN (a gap in the line)."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        f = float(v)
        return f if math.isfinite(f) else float("nan")
    return None


def flatten(obj, prefix=""):
    """Yields (key, value) with nested objects' keys joined by '/'."""
    for k, v in obj.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, dict):
            yield from flatten(v, key)
        else:
            yield key, v


def read_metrics(path):
    """Returns the list of parsed records (dicts) and the number of lines skipped."""
    records, skipped = [], 0
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text:
            continue
        try:
            # json accepts NaN, Infinity and -Infinity by default.
            obj = json.loads(text.decode("utf-8", errors="replace"))
        except ValueError:
            skipped += 1
            last = number == len(lines) or (number == len(lines) - 1 and not lines[-1].strip())
            what = "partially written last line" if last else "unparsable line"
            print(f"plot_metrics: {path}:{number}: skipping {what}", file=sys.stderr)
            continue
        if isinstance(obj, dict):
            records.append(obj)
        else:
            skipped += 1
            print(f"plot_metrics: {path}:{number}: skipping a line that is not a JSON object", file=sys.stderr)
    return records, skipped


class Series:
    """Values of one metric keyed by (stage, step); a later value for the same step replaces it."""

    def __init__(self):
        self.by_stage = OrderedDict()

    def add(self, stage, step, value):
        self.by_stage.setdefault(stage, {})[step] = value

    def curves(self):
        for stage, points in self.by_stage.items():
            steps = sorted(points)
            yield stage, steps, [points[s] for s in steps]


def collect(records):
    """Sorts every numeric value into series.

    Returns (standard, extra, groups, skipped_steps):
      standard[event][key] -> Series for the known keys (train: loss, lr, ...; eval: every key)
      extra[event][key]    -> Series for other top-level numeric keys
      groups[group][(name, event)] -> Series for "<group>/<name>" keys
      skipped_steps[stage] -> sorted steps of skipped_step events
    """
    standard = defaultdict(OrderedDict)
    extra = defaultdict(OrderedDict)
    groups = OrderedDict()
    skipped = defaultdict(set)
    for r in records:
        event = str(r.get("event", "train"))
        stage = str(r.get("stage", "?"))
        step = to_number(r.get("step"))
        if step is None or math.isnan(step):
            continue
        step = int(step) if float(step).is_integer() else step
        if event == "skipped_step":
            skipped[stage].add(step)
            continue
        for key, value in flatten(r):
            if key in BOOKKEEPING:
                continue
            if isinstance(value, list):
                values = [(f"{key}[{i}]", to_number(v)) for i, v in enumerate(value)]
            else:
                values = [(key, to_number(value))]
            for k, v in values:
                if v is None:
                    continue
                base = k.split("[", 1)[0]
                if "/" in base:
                    group = base.rsplit("/", 1)[0]
                    name = k[len(group) + 1:]  # keeps a "[i]" element suffix
                    groups.setdefault(group, OrderedDict()).setdefault((name, event), Series()).add(stage, step, v)
                elif (event == "train" and base in TRAIN_STANDARD) or event == "eval":
                    standard[event].setdefault(k, Series()).add(stage, step, v)
                else:
                    extra[event].setdefault(k, Series()).add(stage, step, v)
    return standard, extra, groups, {s: sorted(v) for s, v in skipped.items()}


def safe_name(text):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "metrics"


class Plotter:
    def __init__(self, out_dir):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.plt = plt
        self.out_dir = out_dir
        self.written = []

    def save(self, fig, name):
        os.makedirs(self.out_dir, exist_ok=True)
        path = os.path.join(self.out_dir, name)
        tmp = path + ".tmp.png"
        fig.savefig(tmp, dpi=110)
        self.plt.close(fig)
        os.replace(tmp, path)  # a viewer never sees a half-written PNG
        self.written.append(path)

    @staticmethod
    def draw(ax, series, label_prefix="", marker=None):
        lines = 0
        many_stages = len(series.by_stage) > 1
        for stage, steps, values in series.curves():
            if not label_prefix:
                label = stage
            else:
                label = f"{label_prefix} ({stage})" if many_stages else label_prefix
            ax.plot(steps, values, label=label, marker=marker, markersize=3, linewidth=1.2)
            lines += 1
        return lines

    def single(self, name, series, title, ylabel, skipped=None, log_y=False):
        fig, ax = self.plt.subplots(figsize=(7, 4.2))
        self.draw(ax, series, marker="." if self._short(series) else None)
        if skipped:
            for stage, steps in skipped.items():
                ax.plot(steps, [0.0] * len(steps), "x", color="red", transform=ax.get_xaxis_transform(),
                        clip_on=False, label=f"skipped step ({stage})")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        if log_y and self._all_positive(series):
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        self.save(fig, name)

    def panels(self, name, title, entries):
        """entries: list of (panel title, [(label, Series)]). One panel per entry."""
        n = len(entries)
        cols = 1 if n == 1 else 2 if n <= 4 else 3
        rows = (n + cols - 1) // cols
        fig, axes = self.plt.subplots(rows, cols, figsize=(5.2 * cols, 3.4 * rows), squeeze=False)
        for ax, (panel, lines) in zip(axes.flat, entries):
            count = 0
            for label, series in lines:
                count += self.draw(ax, series, label_prefix=label, marker="." if self._short(series) else None)
            ax.set_title(panel, fontsize="medium")
            ax.set_xlabel("step")
            ax.grid(True, alpha=0.3)
            if 1 < count <= 12:
                ax.legend(fontsize="x-small")
        for ax in list(axes.flat)[n:]:
            ax.set_visible(False)
        fig.suptitle(title)
        fig.tight_layout()
        self.save(fig, name)

    @staticmethod
    def _short(series):
        return max((len(v) for _, _, v in series.curves()), default=0) <= 30

    @staticmethod
    def _all_positive(series):
        vals = [v for _, _, vs in series.curves() for v in vs if not math.isnan(v)]
        return bool(vals) and min(vals) > 0


def element_panel(name):
    """'load[3]' -> ('load', 'load[3]'); 'cov' -> ('cov', '')."""
    if name.endswith("]") and "[" in name:
        return name.split("[", 1)[0], name
    return name, ""


def plot_all(records, out_dir):
    standard, extra, groups, skipped = collect(records)
    p = Plotter(out_dir)
    train = standard.get("train", {})
    for key in TRAIN_STANDARD:
        if key in train:
            title, ylabel = TRAIN_TITLES[key]
            p.single(f"{key}.png", train[key], title, ylabel,
                     skipped=skipped if key == "loss" else None, log_y=key == "grad_norm")
    evals = standard.get("eval", {})
    if evals:
        p.panels("eval.png", "evaluation", [(k, [("", s)]) for k, s in evals.items()])
    for event, keys in extra.items():
        if keys:
            p.panels(f"{safe_name(event)}_other.png", f"other {event} metrics", [(k, [("", s)]) for k, s in keys.items()])
    for group, members in groups.items():
        events = {e for (_, e) in members}
        panels = OrderedDict()
        for (name, event), series in members.items():
            panel, element = element_panel(name)
            label = element if element else ""
            if len(events) > 1:
                label = f"{label} [{event}]".strip()
            panels.setdefault(panel, []).append((label, series))
        p.panels(f"{safe_name(group.replace('/', '_'))}.png", group, list(panels.items()))
    return p.written


def read_eval_report(path):
    """The parsed eval_report.json (a dict), or None when it is absent or does not parse (noted)."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            report = json.load(f)
    except ValueError as e:
        print(f"plot_metrics: {path}: skipping the evaluation report that does not parse ({e})", file=sys.stderr)
        return None
    if not isinstance(report, dict):
        print(f"plot_metrics: {path}: skipping the evaluation report that is not a JSON object", file=sys.stderr)
        return None
    return report


EVAL_MODELS = ("dense", "moe")
# The per-block measures of eval_specialisation.png: (report key, panel title).
SPECIALISATION = (
    ("weight_cosine", "expert weight cosine"),
    ("output_cosine", "expert output cosine"),
    ("entropy", "routing entropy (nats)"),
    ("entropy_norm", "routing entropy / log E"),
    ("load_cov", "load CoV"),
    ("expert_mean_prob_mean", "mean expert probability"),
    ("relative_compactness", "relative compactness (lower = more disentangled)"),
)


def few_shot_points(model):
    """[(k, mean, std)] sorted by k from a model's "few_shot" object (entries that are not numbers are skipped)."""
    points = []
    few_shot = model.get("few_shot")
    if not isinstance(few_shot, dict):
        return points
    for k, entry in few_shot.items():
        try:
            shots = int(k)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        mean, std = to_number(entry.get("mean")), to_number(entry.get("std"))
        if mean is None or math.isnan(mean):
            continue
        points.append((shots, mean, 0.0 if std is None or math.isnan(std) else std))
    return sorted(points)


def plot_eval_report(report, out_dir):
    """eval_few_shot.png and eval_specialisation.png from an eval_report.json; returns the paths written."""
    p = Plotter(out_dir)
    models = [(name, report[name]) for name in EVAL_MODELS if isinstance(report.get(name), dict)]

    curves = [(name, model, few_shot_points(model)) for name, model in models]
    curves = [c for c in curves if c[2]]
    if curves:
        fig, ax = p.plt.subplots(figsize=(7, 4.2))
        for i, (name, model, points) in enumerate(curves):
            color = f"C{i}"
            ks = [k for k, _, _ in points]
            ax.errorbar(ks, [m for _, m, _ in points], yerr=[s for _, _, s in points], marker="o", capsize=4,
                        color=color, label=f"{name} few-shot probe")
            test = model.get("test")
            full = to_number(test.get("accuracy")) if isinstance(test, dict) else None
            if full is not None and not math.isnan(full):
                ax.axhline(full, linestyle="--", linewidth=1, color=color, label=f"{name} test accuracy (full head)")
        all_k = sorted({k for _, _, points in curves for k, _, _ in points})
        if len(all_k) > 1 and all_k[0] > 0:
            ax.set_xscale("log")
        ax.set_xticks(all_k)
        ax.set_xticklabels([str(k) for k in all_k])
        ax.set_xlabel("labelled training images per class (k)")
        ax.set_ylabel("test accuracy")
        ax.set_title("few-shot ridge probe on frozen features (error bars: std over draws)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        p.save(fig, "eval_few_shot.png")

    blocks = []
    for name, model in models:
        if isinstance(model.get("blocks"), dict):
            blocks += [(f"{name} {block}", values) for block, values in model["blocks"].items()
                       if isinstance(values, dict)]
    measures = [(key, title) for key, title in SPECIALISATION
                if any(to_number(values.get(key)) is not None for _, values in blocks)]
    if blocks and measures:
        n = len(measures)
        cols = 1 if n == 1 else 2 if n <= 4 else 3
        rows = (n + cols - 1) // cols
        fig, axes = p.plt.subplots(rows, cols, figsize=(5.2 * cols, 3.4 * rows), squeeze=False)
        labels = [label for label, _ in blocks]
        for ax, (key, title) in zip(axes.flat, measures):
            values = [to_number(v.get(key)) for _, v in blocks]
            heights = [0.0 if v is None or math.isnan(v) else v for v in values]
            bars = ax.bar(range(len(labels)), heights, color=[f"C{i}" for i in range(len(labels))])
            for bar, v in zip(bars, values):
                if v is None or math.isnan(v):
                    ax.annotate("n/a", (bar.get_x() + bar.get_width() / 2, 0), ha="center", va="bottom",
                                fontsize="small")
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels(labels, rotation=20, ha="right", fontsize="small")
            ax.set_title(title, fontsize="medium")
            ax.grid(True, axis="y", alpha=0.3)
        for ax in list(axes.flat)[n:]:
            ax.set_visible(False)
        fig.suptitle("expert specialisation per MoE block (test split)")
        fig.tight_layout()
        p.save(fig, "eval_specialisation.png")
    return p.written


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    metrics = os.path.join(args.run_dir, "metrics.jsonl")
    if not os.path.isdir(args.run_dir):
        print(f"plot_metrics: error: run directory '{args.run_dir}' does not exist", file=sys.stderr)
        return 2
    if not os.path.isfile(metrics):
        print(f"plot_metrics: error: '{metrics}' does not exist (has the run logged anything yet?)", file=sys.stderr)
        return 2
    records, _ = read_metrics(metrics)
    out_dir = args.out or os.path.join(args.run_dir, "plots")
    written = plot_all(records, out_dir)
    report = read_eval_report(os.path.join(args.run_dir, "eval_report.json"))
    if report is not None:
        written += plot_eval_report(report, out_dir)
    if not written:
        print(f"plot_metrics: {metrics}: nothing to plot ({len(records)} events)", file=sys.stderr)
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
