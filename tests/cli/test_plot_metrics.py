#!/usr/bin/python3
"""Test of launch/plot_metrics.py on metrics.jsonl files this test writes itself.

    /usr/bin/python3 test_plot_metrics.py PATH/TO/plot_metrics.py

Checks: the expected PNGs are written (and printed), each is a non-empty PNG (magic bytes and
an IHDR chunk); plots whose keys are absent are not written; a partially written last line and
NaN/Infinity tokens do not stop it; grouped keys ("moe/blocks/01/cov" and the same as nested
objects) give one figure per group; a missing run dir or metrics file exits 2.
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

    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("all plot_metrics checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
