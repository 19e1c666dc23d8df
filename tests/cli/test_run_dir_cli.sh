#!/usr/bin/env bash
# Who owns a run directory, through upcycle_train (docs/training.md "Run directory"; tiny ViT):
#   (a) two runs started at once into one run.dir: exactly one succeeds, the other exits 1 naming
#       the lock file, its host and pid; the lock is gone afterwards;
#   (b) a fresh run of this config over its own checkpoints exits 2 naming stage and step;
#   (c) runs that fail at start (a bad data.path: fresh with other options, resumed, and with
#       run.overwrite = true) leave the existing config.ini byte-identical;
#   (d) a fresh run of another config into a directory with checkpoints exits 2 listing the
#       differing keys, and with run.overwrite = true replaces the earlier run;
#   (e) a stale lock of a killed run is taken over with a warning, and the temporaries of killed
#       saves are removed (and counted in the log);
#   (f) a run with a non-finite value writes metrics.jsonl and report.json lines that a strict JSON
#       parser reads (null + "<key>_nonfinite");
#   (g) under mpirun with its output in a file the progress comes as plain lines: no carriage
#       returns, no escape codes.
# Usage: test_run_dir_cli.sh UPCYCLE_TRAIN_BINARY SCRATCH_DIR [MPIEXEC]
# SCRATCH_DIR is emptied and reused (kept after a failure for inspection).
set -u
. "$(dirname "$0")/lib.sh"
cli_usage "UPCYCLE_TRAIN_BINARY SCRATCH_DIR [MPIEXEC]" "$@"
bin=$1
mpiexec=${3:-}
mpi_env
scratch_dir "$2"

# The progress lines at their default (log.progress = auto): (g) checks them.
tiny_vit_ini "$scratch/tiny.ini" dense "$scratch/run" log.progress=auto

# train NAME ARGS...: runs the binary on one process, output in NAME.out/.err, status in $status.
train() {
  local name=$1
  shift
  record "$name" "$bin" "$scratch/tiny.ini" "$@"
}

# expect NAME STATUS NEEDLE... -- ARGS...: the run exits STATUS and its stderr holds every NEEDLE.
expect() {
  local name=$1 want=$2
  shift 2
  split_needles "$@"
  train "$name" "${args[@]}"
  if [ "$status" != "$want" ]; then
    fail "$name: exit $status, expected $want; stderr:"; cat "$scratch/$name.err"
    return
  fi
  holds_all "$scratch/$name.err" "$name: stderr" "${needles[@]}"
}

host=$(hostname)

# (a) Two runs at once into one directory. The run is long enough (a few seconds) that the
# second start meets the first one's lock.
run="$scratch/race"
long=(--run.dir="$run" --train.steps=3000 --log.every=1000)
"$bin" "$scratch/tiny.ini" "${long[@]}" >"$scratch/race1.out" 2>"$scratch/race1.err" &
pid1=$!
"$bin" "$scratch/tiny.ini" "${long[@]}" >"$scratch/race2.out" 2>"$scratch/race2.err" &
pid2=$!
wait $pid1; s1=$?
wait $pid2; s2=$?
if [ "$s1:$s2" = "0:1" ]; then loser=race2; winner_pid=$pid1
elif [ "$s1:$s2" = "1:0" ]; then loser=race1; winner_pid=$pid2
else
  fail "two runs at once: exits $s1 and $s2, expected one 0 and one 1"; cat "$scratch/race1.err" "$scratch/race2.err"
  loser=
fi
if [ -n "$loser" ]; then
  holds_all "$scratch/$loser.err" "the refused run's error" "$run/.upcycle.lock" "pid $winner_pid on host $host" \
    "is in use"
fi
[ ! -e "$run/.upcycle.lock" ] || fail "the lock outlived the runs: $(cat "$run/.upcycle.lock")"
[ -s "$run/config.ini" ] && [ -s "$run/checkpoints/dense/step-0003000.h5" ] \
  || fail "the winning run left no config.ini or checkpoint"

# (b) The same config again, fresh, over its own checkpoints.
expect again 2 "holds checkpoints up to stage dense step 3000" "of this config" "checkpoint.resume = auto" \
  "run.overwrite = true" -- --run.dir="$run" --train.steps=3000 --log.every=1000

# (c) Failed starts keep the config.ini that describes the directory's checkpoints.
cp "$run/config.ini" "$scratch/config.before"
expect bad_fresh 2 "differs in data.path" -- --run.dir="$run" --train.steps=3000 --log.every=1000 \
  --data.path="$scratch/no-such-data"
cmp -s "$run/config.ini" "$scratch/config.before" || fail "a refused fresh run changed config.ini"
expect bad_resume 1 "$scratch/no-such-data" -- --run.dir="$run" --train.steps=3000 --log.every=1000 \
  --data.path="$scratch/no-such-data" --checkpoint.resume=latest
cmp -s "$run/config.ini" "$scratch/config.before" || fail "a resume that failed at start changed config.ini"

# (d) Another config over checkpoints: refused, listing the keys; run.overwrite = true replaces it.
expect other 2 "model.width (there 16, here 24)" "train.steps (there 3000, here 3)" "run.overwrite = true" \
  "choose another run.dir" -- --run.dir="$run" --model.width=24
cmp -s "$run/config.ini" "$scratch/config.before" || fail "a refused run of another config changed config.ini"
expect overwrite_bad 1 "$scratch/no-such-data" -- --run.dir="$run" --model.width=24 --run.overwrite=true \
  --data.path="$scratch/no-such-data"
cmp -s "$run/config.ini" "$scratch/config.before" || fail "an overwriting run that failed at start changed config.ini"
[ ! -e "$run/checkpoints" ] || fail "run.overwrite = true left the earlier checkpoints"
grep -qF "run.overwrite = true: removed the earlier run's checkpoints/, metrics.jsonl, report.json" \
  "$scratch/overwrite_bad.out" || { fail "run.overwrite = true: removal not logged:"; cat "$scratch/overwrite_bad.out"; }
train overwrite --run.dir="$run" --model.width=24 --run.overwrite=true
[ "$status" = 0 ] || { fail "run.overwrite = true: exit $status"; cat "$scratch/overwrite.err"; }
grep -qxF "width = 24" "$run/config.ini" || fail "after run.overwrite = true config.ini is not the new config's"
[ "$(grep -c '"event": "train"' "$run/metrics.jsonl")" = 3 ] \
  || fail "after run.overwrite = true metrics.jsonl holds other than the new run's 3 train events"
[ -s "$run/checkpoints/dense/step-0000003.h5" ] && [ ! -e "$run/checkpoints/dense/step-0003000.h5" ] \
  || fail "after run.overwrite = true the checkpoints are not the new run's"

# (e) A killed run's leftovers: its lock (a pid that is gone) and the temporaries of its saves.
sh -c 'exit 0' & gone=$!
wait $gone
printf 'host=%s\npid=%s\nstarted=2020-01-01T00:00:00Z\n' "$host" "$gone" >"$run/.upcycle.lock"
touch "$run/checkpoints/dense/.step-0000004.h5.tmp-$gone" "$run/report.json.tmp"
ln -s step-0000004.h5 "$run/checkpoints/dense/.latest.h5.tmp-$gone"
train stale --run.dir="$run" --model.width=24 --train.steps=5 --checkpoint.resume=latest
[ "$status" = 0 ] || { fail "a run after a killed one: exit $status"; cat "$scratch/stale.err"; }
grep -qF "taking over the stale lock $run/.upcycle.lock of pid $gone on host $host" "$scratch/stale.err" \
  || { fail "no warning about the stale lock:"; cat "$scratch/stale.err"; }
grep -qF "removed 3 temporary file(s) left behind by interrupted saves" "$scratch/stale.out" \
  || { fail "the clean-up was not logged:"; cat "$scratch/stale.out"; }
left=$(find "$run" -name '*.tmp*' | wc -l)
[ "$left" = 0 ] || fail "temporaries left: $(find "$run" -name '*.tmp*')"
[ ! -e "$run/.upcycle.lock" ] || fail "the lock outlived the run"

# (f) Non-finite values: a learning rate that blows the weights up, non-finite steps skipped, so
# the final evaluation's loss is NaN; every line must parse strictly.
train nonfinite --run.dir="$scratch/nonfinite" --train.steps=4 --train.lr=1e30 --train.nan_policy=skip
[ "$status" = 0 ] || { fail "the non-finite run: exit $status"; cat "$scratch/nonfinite.err"; }
"$py" - "$scratch/nonfinite/metrics.jsonl" "$scratch/nonfinite/report.json" <<'PY' || fail "strict JSON (above)"
import json, sys
def refuse(c):
    raise ValueError(f"not JSON: {c}")
nonfinite = 0
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            o = json.loads(line, parse_constant=refuse)
            for k, v in o.items():
                if k.endswith("_nonfinite"):
                    base = k[: -len("_nonfinite")]
                    assert v in ("nan", "inf", "-inf"), (path, n, k, v)
                    assert base in o and o[base] is None, (path, n, k, o)
                    nonfinite += 1
if nonfinite == 0:
    sys.exit("no non-finite value was written: the run did not test what it should")
print(f"strict JSON: {nonfinite} non-finite value(s) written as null with their reason")
PY

# (f2) A skip run that keeps diverging stops with exit 1 once train.max_skipped_steps consecutive
# steps were skipped, naming the steps and the key; it writes no final report.
train diverged --run.dir="$scratch/diverged" --train.steps=40 --train.lr=1e30 --train.nan_policy=skip \
  --train.max_skipped_steps=3
[ "$status" = 1 ] || fail "a skip run that keeps diverging: exit $status, expected 1"
grep -qF "more than train.max_skipped_steps = 3: the run diverged" "$scratch/diverged.err" \
  || { fail "no message about train.max_skipped_steps:"; cat "$scratch/diverged.err"; }
[ ! -e "$scratch/diverged/report.json" ] || fail "a diverged run wrote report.json as if it had succeeded"

# (g) Progress under mpirun, its output going to a file (the ranks still get a pty from mpirun).
if [ -n "$mpiexec" ]; then
  record mpi "$mpiexec" --oversubscribe -np 2 "$bin" "$scratch/tiny.ini" --run.dir="$scratch/mpi" --train.steps=4
  [ "$status" = 0 ] || { fail "mpirun -np 2: exit $status"; cat "$scratch/mpi.err"; }
  grep -q '\[dense\] step 4/4' "$scratch/mpi.out" || { fail "mpirun -np 2: no progress for step 4:"; cat "$scratch/mpi.out"; }
  if grep -q $'[\r\033]' "$scratch/mpi.out"; then
    fail "mpirun -np 2 with its output in a file: the log holds carriage returns or escape codes:"
    cat -A "$scratch/mpi.out" | head -n 20
  fi
else
  echo "note: no mpiexec given (a build without MPI): the progress check under mpirun is not run"
fi

finish "all run-directory checks passed"
