#!/usr/bin/env bash
# End-to-end checkpoint contract of upcycle_train, through the real binary (docs/training.md "Checkpoints"
# and "Command line and run directory"), with the tiny ViT of tests/support/tiny_configs.hpp:
#   (a) a run exits 0 and leaves config.ini, metrics.jsonl (JSON lines with step, stage, loss, lr,
#       tokens_per_s), report.json, checkpoints/dense/step-0000003.h5 and checkpoints/latest.h5;
#   (b) h5py (check_checkpoint.py) finds the documented datasets and shapes, and h5ls lists them;
#   (c) resuming into a model that does not match exits 1 naming the file and the dataset, and
#       leaves the checkpoint byte-identical;
#   (d) a truncated copy, a non-HDF5 file, a foreign HDF5 file and a missing file exit 1 naming
#       the file;
#   (e) --checkpoint.resume=latest with train.steps 3 -> 5 continues the run: steps 4 and 5;
#   (f) resume is exact: 3 steps + save + resume + 2 steps logs the same losses as 5 steps.
# Usage: test_checkpoint_cli.sh UPCYCLE_TRAIN_BINARY SCRATCH_DIR
# SCRATCH_DIR is emptied and reused (kept after a failure for inspection).
set -u
. "$(dirname "$0")/lib.sh"
cli_usage "UPCYCLE_TRAIN_BINARY SCRATCH_DIR" "$@"
bin=$1
checker="$cli_dir/check_checkpoint.py"
scratch_dir "$2"
run="$scratch/run"

# The tiny ViT of tests/support/tiny_configs.hpp (tiny_vit_ini(3)), with a run directory.
tiny_vit_ini "$scratch/tiny.ini" dense "$run"

# One process and one thread: the test shares the machine with the rest of the suite.
export OMP_NUM_THREADS=1

# train NAME ARGS...: runs the binary, stdout/stderr to $scratch/NAME.{out,err}; sets $status.
train() {
  local name=$1
  shift
  record "$name" "$bin" "$scratch/tiny.ini" "$@"
}

# expect_fail NAME NEEDLE... -- ARGS...: the run must exit 1 with every NEEDLE in stderr.
expect_fail() {
  local name=$1
  shift
  split_needles "$@"
  train "$name" "${args[@]}"
  if [ "$status" != 1 ]; then
    fail "$name: exit $status, expected 1; stderr:"; cat "$scratch/$name.err"
    return
  fi
  holds_all "$scratch/$name.err" "$name: stderr" "${needles[@]}"
}

# metrics_check FILE STEPS...: every line is a JSON object; every train event has step, stage,
# loss, lr and tokens_per_s (finite); the train events' steps are exactly STEPS, in order.
metrics_check() {
  "$py" - "$@" <<'PY'
import json, math, sys
path, want = sys.argv[1], [int(s) for s in sys.argv[2:]]
steps, bad = [], []
with open(path) as f:
    for n, line in enumerate(f, 1):
        try:
            o = json.loads(line)
        except ValueError as e:
            bad.append(f"line {n} is not JSON ({e}): {line!r}")
            continue
        if not isinstance(o, dict):
            bad.append(f"line {n} is not an object")
            continue
        if o.get("event") != "train":
            continue
        for k in ("step", "stage", "loss", "lr", "tokens_per_s"):
            if k not in o:
                bad.append(f"line {n} lacks '{k}': {line.strip()}")
        for k in ("loss", "lr", "tokens_per_s"):
            if k in o and not (isinstance(o[k], (int, float)) and math.isfinite(o[k])):
                bad.append(f"line {n}: {k} = {o[k]!r}")
        if o.get("stage") != "dense":
            bad.append(f"line {n}: stage {o.get('stage')!r}")
        steps.append(o.get("step"))
if steps != want:
    bad.append(f"train steps {steps}, expected {want}")
for b in bad:
    print(f"{path}: {b}")
sys.exit(1 if bad else 0)
PY
}

# train_losses FILE: "step loss" per train event.
train_losses() {
  "$py" -c '
import json, sys
for line in open(sys.argv[1]):
    o = json.loads(line)
    if o.get("event") == "train":
        print(o["step"], repr(o["loss"]))' "$1"
}

ckpt="$run/checkpoints/dense/step-0000003.h5"

# (a) A fresh 3-step run.
train fresh
if [ "$status" != 0 ]; then
  fail "fresh run: exit $status, expected 0; stderr:"; cat "$scratch/fresh.err"
  give_up "cannot go on without the first run"
fi
for f in config.ini metrics.jsonl report.json checkpoints/dense/step-0000003.h5 checkpoints/latest.h5; do
  [ -s "$run/$f" ] || fail "fresh run: $run/$f is missing or empty"
done
grep -qF "width = 16" "$run/config.ini" || fail "fresh run: config.ini lacks 'width = 16'"
metrics_check "$run/metrics.jsonl" 1 2 3 || fail "fresh run: metrics.jsonl (above)"
"$py" -c '
import json, sys
r = json.load(open(sys.argv[1]))
assert r["stage"] == "dense" and r["steps"] == 3 and "final_train_loss" in r, r' "$run/report.json" \
  || fail "fresh run: report.json lacks stage/steps/final_train_loss or has the wrong values"
[ -z "$(find "$run/checkpoints" -name '*.tmp*')" ] || fail "fresh run: temporary files left in checkpoints/"
cmp -s "$run/checkpoints/dense/latest.h5" "$ckpt" || fail "fresh run: latest.h5 is not the step-3 checkpoint"

# (b) The layout, read by h5py and listed by h5ls.
"$py" "$checker" "$ckpt" --step 3 || fail "h5py layout check of $ckpt (above)"
"$py" "$checker" "$run/checkpoints/dense/latest.h5" --step 3 || fail "h5py layout check of latest.h5 (above)"
if command -v h5ls >/dev/null; then
  h5ls -r "$ckpt" >"$scratch/h5ls.out" 2>&1 || fail "h5ls -r $ckpt failed: $(cat "$scratch/h5ls.out")"
  for needle in "/model/patch_embed/weight Dataset {16, 49}" "/model/blocks/00/attn/qkv/weight Dataset {48, 16}" \
                "/model/head/weight       Dataset {10, 16}" "/optimizer/m/head/weight" "/optimizer/v/head/weight" \
                "/state/rng/dropout       Dataset {2}" "/state/data/cursor       Dataset {2}"; do
    grep -qF -- "$needle" "$scratch/h5ls.out" || fail "h5ls -r lacks '$needle'"
  done
else
  fail "h5ls not found (Debian package hdf5-tools; launch/setup.sh installs it)"
fi

# (c) A model that does not match the checkpoint: exit 1, the file and the dataset named, and
# nothing overwritten -- neither the checkpoint nor the other files of its run.
cp -p "$ckpt" "$scratch/original.h5"
ls -lR --time-style=full-iso "$run/checkpoints" >"$scratch/listing.before"
expect_fail mismatch "$ckpt" "dataset '/model/" "expected shape" -- \
  --run.dir="$scratch/mismatch" --model.width=32 --checkpoint.resume="$ckpt"
[ -e "$scratch/mismatch/checkpoints" ] && fail "mismatch: a checkpoint was written in $scratch/mismatch"
expect_fail mismatch_latest "$run/checkpoints/dense/latest.h5" "dataset '/model/" -- \
  --model.width=32 --checkpoint.resume=latest
cmp -s "$ckpt" "$scratch/original.h5" || fail "mismatch: $ckpt changed"
ls -lR --time-style=full-iso "$run/checkpoints" >"$scratch/listing.after"
cmp -s "$scratch/listing.before" "$scratch/listing.after" || fail "mismatch: $run/checkpoints changed: $(diff "$scratch/listing.before" "$scratch/listing.after")"
# config.ini is written only once a run has started, so a failed resume leaves it describing the
# checkpoints.
grep -qxF "width = 16" "$run/config.ini" || fail "a failed resume overwrote $run/config.ini with the rejected config"

# (d) Damaged and foreign files: exit 1 naming the file, never a crash.
head -c "$(($(stat -c %s "$ckpt") / 2))" "$ckpt" >"$scratch/truncated.h5"
expect_fail truncated "$scratch/truncated.h5" -- --run.dir="$scratch/d" --checkpoint.resume="$scratch/truncated.h5"
head -c 600 "$ckpt" >"$scratch/stub.h5"
expect_fail stub "$scratch/stub.h5" -- --run.dir="$scratch/d" --checkpoint.resume="$scratch/stub.h5"
printf 'this is not an HDF5 file\n' >"$scratch/text.h5"
expect_fail not_hdf5 "$scratch/text.h5" "not an HDF5 file" -- --run.dir="$scratch/d" --checkpoint.resume="$scratch/text.h5"
"$py" -c 'import h5py, sys; h5py.File(sys.argv[1], "w")["x"] = [1, 2, 3]' "$scratch/foreign.h5"
expect_fail foreign "$scratch/foreign.h5" "not an upcycle checkpoint" -- \
  --run.dir="$scratch/d" --checkpoint.resume="$scratch/foreign.h5"
expect_fail missing "$scratch/missing.h5" -- --run.dir="$scratch/d" --checkpoint.resume="$scratch/missing.h5"
cmp -s "$ckpt" "$scratch/original.h5" || fail "damaged files: $ckpt changed"

# (e) Continue the finished run: 3 -> 5 steps from latest.h5.
cp "$run/metrics.jsonl" "$scratch/metrics.before"
train resume --train.steps=5 --checkpoint.resume=latest
if [ "$status" != 0 ]; then
  fail "resume latest: exit $status, expected 0; stderr:"; cat "$scratch/resume.err"
else
  metrics_check "$run/metrics.jsonl" 1 2 3 4 5 || fail "resume latest: metrics.jsonl (above)"
  head -c "$(stat -c %s "$scratch/metrics.before")" "$run/metrics.jsonl" | cmp -s - "$scratch/metrics.before" \
    || fail "resume latest: the earlier metrics lines were not kept"
  [ -s "$run/checkpoints/dense/step-0000005.h5" ] || fail "resume latest: no step-0000005.h5"
  cmp -s "$run/checkpoints/dense/latest.h5" "$run/checkpoints/dense/step-0000005.h5" || fail "resume latest: latest.h5 is not step 5"
  "$py" "$checker" "$run/checkpoints/dense/latest.h5" --step 5 || fail "resume latest: layout of the step-5 checkpoint"
  "$py" -c 'import json, sys; r = json.load(open(sys.argv[1])); assert r["steps"] == 5, r' "$run/report.json" \
    || fail "resume latest: report.json does not say 5 steps"
fi

# (f) Exact resume: a 5-step run that saves at step 3, and a second run resumed from that file,
# log the same losses for steps 4 and 5 (same schedule: train.steps = 5 in both).
train straight --run.dir="$scratch/straight" --train.steps=5 --checkpoint.every=3 --checkpoint.keep=0
[ "$status" = 0 ] || { fail "straight 5-step run: exit $status"; cat "$scratch/straight.err"; }
train resumed --run.dir="$scratch/resumed" --train.steps=5 \
  --checkpoint.resume="$scratch/straight/checkpoints/dense/step-0000003.h5"
[ "$status" = 0 ] || { fail "resumed run: exit $status"; cat "$scratch/resumed.err"; }
if [ -s "$scratch/straight/metrics.jsonl" ] && [ -s "$scratch/resumed/metrics.jsonl" ]; then
  train_losses "$scratch/straight/metrics.jsonl" | tail -n 2 >"$scratch/losses.straight"
  train_losses "$scratch/resumed/metrics.jsonl" >"$scratch/losses.resumed"
  cmp -s "$scratch/losses.straight" "$scratch/losses.resumed" \
    || fail "exact resume: steps 4-5 losses differ: straight $(tr '\n' ' ' <"$scratch/losses.straight"), resumed $(tr '\n' ' ' <"$scratch/losses.resumed")"
fi

finish "all checkpoint command-line checks passed"
