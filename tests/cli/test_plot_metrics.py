#!/usr/bin/python3
"""Test of launch/plot_metrics.py on metrics.jsonl files this test writes itself.

    /usr/bin/python3 test_plot_metrics.py PATH/TO/plot_metrics.py

Checks: the expected PNGs are written (and printed), each is a non-empty PNG (magic bytes and
an IHDR chunk); plots whose keys are absent are not written; a partially written last line and
NaN/Infinity tokens do not stop it; grouped keys ("moe/blocks/01/cov" and the same as nested
objects) give one figure per group; a missing run dir or metrics file exits 2. With an
eval_report.json (the eval stage's): eval_few_shot.png and eval_specialisation.png for an image run,
only the latter for a text run (no few-shot probes), neither for a report that does not parse.
"""

import json
import os
import subprocess
import sys
import tempfile

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def run(script, *args):
    p = subprocess.run([sys.executable, script, *args], capture_output=True, text=True,
                       env=dict(os.environ, MPLBACKEND="Agg"))
    return p.returncode, p.stdout, p.stderr


def is_png(path):
    if not os.path.isfile(path) or os.path.getsize(path) < 100:
        return False
    with open(path, "rb") as f:
        head = f.read(16)
    return head[:8] == PNG_MAGIC and head[12:16] == b"IHDR"


def write_full_run(run_dir):
    lines = []
    for stage, offset in (("dense", 0.0), ("moe", -0.5)):
        for step in range(1, 21):
            o = {"event": "train", "stage": stage, "step": step, "loss": 3.0 - 0.1 * step + offset,
                 "lr": 1e-3 * min(1.0, step / 5), "grad_norm": 1.0 / step, "tokens_per_s": 1000.0 + step}
            if stage == "moe":
                # Routing statistics in both spellings: flat "<group>/<name>" keys and a nested object,
                # plus a per-expert vector.
                o["moe/blocks/01/cov"] = 0.5 + 0.01 * step
                o["moe/blocks/01/load"] = [0.25, 0.25, 0.3, 0.2]
                o["moe"] = {"blocks": {"03": {"cov": 0.4, "entropy": 1.2 - 0.01 * step}}}
                o["lb_loss"] = 0.01 * step
            lines.append(json.dumps(o))
            if step % 10 == 0:
                lines.append(json.dumps({"event": "eval", "stage": stage, "step": step,
                                         "accuracy": 0.5 + step / 100, "val_loss": 2.0 - step / 50}))
        lines.append(json.dumps({"event": "skipped_step", "stage": stage, "step": 7}))
    # Non-finite numbers as upcycle_train writes them, and a repeated step (resume from an older
    # checkpoint): the later line wins.
    lines.append('{"event": "train", "stage": "dense", "step": 21, "loss": NaN, "lr": 0.001, '
                 '"grad_norm": Infinity, "tokens_per_s": -Infinity}')
    lines.append(json.dumps({"event": "train", "stage": "dense", "step": 20, "loss": 1.0, "lr": 1e-3,
                             "grad_norm": 0.1, "tokens_per_s": 999.0}))
    text = "\n".join(lines) + "\n"
    text += '{"event": "train", "stage": "dense", "step": 22, "loss": 0.9'  # killed mid-write
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
        f.write(text)


def eval_report(few_shot=True):
    """A synthetic eval_report.json in the layout of docs/training.md (NaN as the stage writes it)."""
    def model(acc, blocks):
        m = {"checkpoint": "checkpoints/x/latest.h5", "stage": "x", "step": 100, "test_examples": 500,
             "test": {"accuracy": acc, "loss": 0.5} if few_shot else {"bits_per_byte": 3.5, "loss": 2.4}}
        if few_shot:
            m["few_shot"] = {str(k): {"mean": acc - 0.3 / k, "std": 0.02, "draws": [acc - 0.3 / k] * 5}
                             for k in (1, 5, 10)}
        if blocks:
            m["blocks"] = {f"blocks/{b:02d}/moe": {
                "weight_cosine": 0.9, "output_cosine": 0.7, "entropy": 0.6, "entropy_norm": 0.45, "load_cov": 0.2,
                "expert_mean_prob": [0.5, 0.4, 0.45, 0.5], "expert_mean_prob_mean": 0.46,
                "relative_compactness": "NaN" if b == 3 else 4.0, "tokens": 8500, "output_tokens": 4096}
                for b in (1, 3)}
        return m
    text = json.dumps({"world_size": 2, "dense": model(0.8, False), "moe": model(0.82, True)})
    return text.replace('"NaN"', "NaN")


def write_train_lines(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
        for step in range(1, 4):
            f.write(json.dumps({"event": "train", "stage": "dense", "step": step, "loss": 1.0 / step, "lr": 0.1}) + "\n")
        # The eval stage's own event has no step: it is not a curve.
        f.write(json.dumps({"event": "eval_stage", "world_size": 2, "dense/test_accuracy": 0.8}) + "\n")


def main():
    script = sys.argv[1]
    with tempfile.TemporaryDirectory() as tmp:
        # 1. A run with every kind of key.
        full = os.path.join(tmp, "full")
        os.makedirs(full)
        write_full_run(full)
        rc, out, err = run(script, full)
        check(rc == 0, f"full run: exit {rc}, stderr: {err}")
        check("partially written last line" in err, f"full run: no note about the partial last line: {err!r}")
        plots = os.path.join(full, "plots")
        expected = ["loss.png", "lr.png", "tokens_per_s.png", "grad_norm.png", "eval.png", "train_other.png",
                    "moe_blocks_01.png", "moe_blocks_03.png"]
        printed = [os.path.basename(line) for line in out.split()]
        for name in expected:
            path = os.path.join(plots, name)
            check(is_png(path), f"full run: {path} is missing or not a PNG")
            check(name in printed, f"full run: {name} not printed; stdout: {out!r}")
        check(sorted(printed) == sorted(expected), f"full run: printed {printed}, expected {expected}")
        check(not [n for n in os.listdir(plots) if n.endswith(".tmp.png")], "full run: temporary files left")

        # 2. Only train events with loss and lr, written to --out: the other plots are skipped.
        sparse = os.path.join(tmp, "sparse")
        os.makedirs(sparse)
        with open(os.path.join(sparse, "metrics.jsonl"), "w") as f:
            for step in range(1, 4):
                f.write(json.dumps({"event": "train", "stage": "dense", "step": step, "loss": 1.0 / step,
                                    "lr": 0.1}) + "\n")
        out_dir = os.path.join(tmp, "elsewhere")
        rc, out, err = run(script, sparse, "--out", out_dir)
        check(rc == 0, f"sparse run: exit {rc}, stderr: {err}")
        got = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
        check(got == ["loss.png", "lr.png"], f"sparse run: wrote {got}, expected loss.png and lr.png only")
        for name in got:
            check(is_png(os.path.join(out_dir, name)), f"sparse run: {name} is not a PNG")
        check(not os.path.exists(os.path.join(sparse, "plots")), "sparse run: wrote to RUN_DIR/plots despite --out")

        # 3. An empty metrics file: nothing to plot, not an error.
        empty = os.path.join(tmp, "empty")
        os.makedirs(empty)
        open(os.path.join(empty, "metrics.jsonl"), "w").close()
        rc, out, err = run(script, empty)
        check(rc == 0 and out == "" and "nothing to plot" in err, f"empty run: exit {rc}, out {out!r}, err {err!r}")

        # 4. Usage errors.
        rc, _, err = run(script, os.path.join(tmp, "absent"))
        check(rc == 2 and "does not exist" in err, f"missing run dir: exit {rc}, err {err!r}")
        os.makedirs(os.path.join(tmp, "nometrics"))
        rc, _, err = run(script, os.path.join(tmp, "nometrics"))
        check(rc == 2 and "metrics.jsonl" in err, f"missing metrics.jsonl: exit {rc}, err {err!r}")

        # 5. An eval report of an image run: the two evaluation figures besides the metrics ones.
        for name, few_shot, report_text, want in (
                ("eval_images", True, None, ["eval_few_shot.png", "eval_specialisation.png"]),
                ("eval_text", False, None, ["eval_specialisation.png"]),
                ("eval_broken", True, '{"world_size": 2, "dense": {"test": ', [])):
            run_dir = os.path.join(tmp, name)
            os.makedirs(run_dir)
            write_train_lines(run_dir)
            with open(os.path.join(run_dir, "eval_report.json"), "w") as f:
                f.write(report_text if report_text is not None else eval_report(few_shot))
            rc, out, err = run(script, run_dir)
            check(rc == 0, f"{name}: exit {rc}, stderr: {err}")
            printed = sorted(os.path.basename(line) for line in out.split())
            expected = sorted(["loss.png", "lr.png"] + want)
            check(printed == expected, f"{name}: printed {printed}, expected {expected}")
            for png in want:
                check(is_png(os.path.join(run_dir, "plots", png)), f"{name}: {png} is missing or not a PNG")
            if report_text is not None:
                check("eval_report.json" in err and "does not parse" in err, f"{name}: no note on stderr: {err!r}")

    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("all plot_metrics checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
