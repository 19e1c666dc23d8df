#!/usr/bin/env bash
# End-to-end contract of upcycle_train's command line (README.md "Command line", docs/training.md):
# exit status 2 and a message naming file, line, key and allowed values for config errors; 0 for
# --help and --print-config (whose output parses back to itself); 2 for a stage or key value this
# version lacks (parallel.backend = nccl on the CPU), 1 for run.device = cuda without a usable GPU;
# neither writes to the run directory. A run-time error prints its message without the build's
# source path (with log.level = debug the source location too), and under mpirun -np 2 exactly
# once, whether it is a run-time error (exit 1) or a config error (exit 2).
# Usage: test_cli_errors.sh UPCYCLE_TRAIN_BINARY EXAMPLE_INI [MPIEXEC]
set -u
. "$(dirname "$0")/lib.sh"
cli_usage "UPCYCLE_TRAIN_BINARY EXAMPLE_INI [MPIEXEC]" "$@"
bin=$1
example=$2
mpiexec=${3:-}
mpi_env
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# expect STATUS NEEDLE... -- ARGS...: runs the binary with ARGS, checks its exit status and that
# stderr (for STATUS != 0) or stdout (for 0) holds every NEEDLE.
expect() {
  local want=$1
  shift
  split_needles "$@"
  "$bin" "${args[@]}" >"$tmp/out" 2>"$tmp/err"
  local got=$?
  local text="$tmp/err"
  [ "$want" = 0 ] && text="$tmp/out"
  if [ "$got" != "$want" ]; then
    fail "upcycle_train ${args[*]}: exit $got, expected $want; stderr:"; cat "$tmp/err"
    return
  fi
  holds_all "$text" "upcycle_train ${args[*]}: output" "${needles[@]}"
}

printf '[train]\nlr = 0.01\nstpes = 5\n' >"$tmp/typo.ini"
expect 2 "typo.ini:3: unknown key 'train.stpes'; did you mean 'train.steps'?" -- "$tmp/typo.ini"

printf '[model]\nffn_activation = relu\n' >"$tmp/value.ini"
expect 2 "value.ini:2: bad value for model.ffn_activation: 'relu' is not one of: gelu, gelu_erf, swiglu" \
  -- "$tmp/value.ini"

printf '[train]\nlr = -1\n' >"$tmp/range.ini"
expect 2 "range.ini:2: bad value for train.lr: -1 is out of range (allowed: > 0)" -- "$tmp/range.ini"

printf '[moe]\nnum_experts = 4\ntop_k = 8\n' >"$tmp/rule.ini"
expect 2 "inconsistent config: moe.top_k = 8" "[rule: moe.top_k <= moe.num_experts]" -- "$tmp/rule.ini"

printf '[train]\nsteps 5\n' >"$tmp/malformed.ini"
expect 2 "malformed.ini:2: malformed line 'steps 5'" -- "$tmp/malformed.ini"

expect 2 "config file '$tmp/missing.ini' does not exist" -- "$tmp/missing.ini"
expect 2 "command line --moe.topk=2: unknown key 'moe.topk'; did you mean 'moe.top_k'?" -- "$example" --moe.topk=2
expect 2 "no CONFIG.ini given" --
expect 2 "unknown option '--bogus'" -- "$example" --bogus

expect 0 "[moe]" "top_k = 2" "[one of {sparse, drop, drop_svd, granular, cluster}]" -- --help

# --print-config: the resolved config, which reads back to the same text.
expect 0 "[train]" "steps = 42" -- "$example" --train.steps=42 --run.dir="$tmp/run" --print-config
cp "$tmp/out" "$tmp/resolved.ini"
expect 0 "steps = 42" -- "$tmp/resolved.ini" --print-config
cmp -s "$tmp/out" "$tmp/resolved.ini" || fail "--print-config output does not read back to itself"

# The eval stage with nothing to score (exit 2): it names both checkpoints it looked for, or the
# key of an explicitly given path that does not exist.
expect 2 "eval: no checkpoint to evaluate" "$tmp/evalrun/checkpoints/dense/latest.h5" \
  "$tmp/evalrun/checkpoints/moe/latest.h5" -- "$example" --run.dir="$tmp/evalrun" --run.stages=eval
expect 2 "eval.moe_checkpoint = $tmp/absent.h5 (command line): the checkpoint does not exist" -- "$example" \
  --run.dir="$tmp/evalrun" --run.stages=eval --eval.moe_checkpoint="$tmp/absent.h5"
[ ! -e "$tmp/evalrun/config.ini" ] || fail "a refused eval run wrote run.dir/config.ini"

# A valid config asking for what this version cannot run (a stage, a key's value not built yet, a
# GPU that is not there) is refused before anything runs or is written: the run directory of an
# earlier run keeps the config.ini that describes its checkpoints.
mkdir -p "$tmp/run"
echo "earlier run" >"$tmp/run/config.ini"
expect 2 "eesd.enabled = true (command line)" "run.stages has no moe stage" -- "$tmp/resolved.ini" --run.dir="$tmp/run" \
  --run.stages=dense --eesd.enabled=true
# parallel.backend = nccl moves GPU memory: on the CPU it is a config error in every build. With
# run.device = auto on a machine without a GPU the device resolves to cpu (a build with NCCL says so,
# quoting why there is no GPU; one without NCCL names the build) -- both before anything is written.
expect 2 "parallel.backend = nccl needs run.device = cuda" "run.device = cpu" "set parallel.backend = mpi" -- \
  "$tmp/resolved.ini" --run.dir="$tmp/run" --run.stages=dense --parallel.backend=nccl --run.device=cpu
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "note: this machine has a GPU; the run.device = auto case of parallel.backend = nccl is not checked"
else
  expect 2 "parallel.backend = nccl" -- "$tmp/resolved.ini" --run.dir="$tmp/run" --run.stages=dense \
    --parallel.backend=nccl --run.device=auto
  grep -qE "needs run.device = cuda: .*run.device = auto: training on the CPU|this build has no NCCL communicator" \
    "$tmp/err" || { fail "nccl with run.device = auto on the CPU: unexpected message:"; cat "$tmp/err"; }
fi
# cuda without a usable GPU (or in a build without CUDA) is a run-time failure naming why.
expect 1 "run.device = cuda" "no usable GPU" -- "$tmp/resolved.ini" --run.dir="$tmp/run" --run.stages=dense \
  --run.device=cuda
[ "$(cat "$tmp/run/config.ini")" = "earlier run" ] || fail "a refused run rewrote run.dir/config.ini"

expect 2 "run.dir is empty" -- "$example" --run.dir=

# A run-time error (a missing data.path) names what is missing and not the source file that
# noticed it; log.level = debug adds the source location for a bug report.
nodata="$tmp/no-such-data"
expect 1 "$nodata" "file not found" -- "$tmp/resolved.ini" --run.dir="$tmp/nodata_run" --run.stages=dense \
  --data.path="$nodata" --train.steps=1
if grep -qE '\.(cpp|hpp|cu):[0-9]+' "$tmp/err"; then
  fail "the error shows a source location:"; cat "$tmp/err"
fi
expect 1 "$nodata" "file not found" -- "$tmp/resolved.ini" --run.dir="$tmp/nodata_run" --run.stages=dense \
  --data.path="$nodata" --train.steps=1 --log.level=debug
if ! grep -qE '\[[^]]*src/[^]]*\.cpp:[0-9]+\]' "$tmp/err"; then
  fail "with log.level = debug the error lacks its source location:"; cat "$tmp/err"
fi

# Under mpirun every rank fails alike, and the message is printed once (rank 0 speaks and ends
# the job; the others wait for that), with the exit status of the failure.
# mpi_once STATUS NEEDLE -- ARGS...: runs upcycle_train on 2 ranks; NEEDLE must occur exactly once.
mpi_once() {
  local want=$1 needle=$2
  shift 3
  "$mpiexec" --oversubscribe -np 2 "$bin" "$@" >"$tmp/out" 2>"$tmp/err"
  local got=$?
  local count
  count=$(cat "$tmp/out" "$tmp/err" | grep -cF -- "$needle")
  if [ "$got" != "$want" ] || [ "$count" != 1 ]; then
    fail "mpirun -np 2 upcycle_train $*: exit $got (expected $want)," \
      "'$needle' printed $count time(s) (expected once); output:"
    cat "$tmp/out" "$tmp/err"
  fi
  if grep -qE '\.(cpp|hpp|cu):[0-9]+' "$tmp/err"; then
    fail "mpirun -np 2 upcycle_train $*: the error shows a source location:"; cat "$tmp/err"
  fi
}
if [ -n "$mpiexec" ]; then
  mpi_once 1 "$nodata/train-images-idx3-ubyte.gz: file not found" -- "$tmp/resolved.ini" --run.dir="$tmp/mpi_run" \
    --run.stages=dense --data.path="$nodata" --train.steps=1
  mpi_once 2 "did you mean 'train.steps'?" -- "$example" --train.stpes=1
else
  echo "note: no mpiexec given (a build without MPI): the once-per-job checks under mpirun are not run"
fi

finish "all command-line checks passed"
