#!/usr/bin/env bash
# The Slurm batch scripts on a real Slurm: launch/slurm_local.sh starts munged, slurmctld and slurmd
# on this machine (MpiDefault=none, as Slurm ships), and slurm/upcycle.sbatch trains the tiny ViT
# (dense, STEPS steps, checkpoint.every far beyond them, a metrics event every step) as 1 node x 2
# tasks x 1 CPU:
#   (a) an uninterrupted run: COMPLETED, exit 0, ONE 2-rank job (report.json world_size 2, every
#       step in metrics.jsonl once, in order); its final_train_loss is the reference;
#   (b) the same run as another job, scancel'ed once metrics.jsonl is past a few steps: the job
#       ends CANCELLED with exit 75, and the newest step-N.h5 (and latest.h5) is at the last step
#       of metrics.jsonl, 0 < N < STEPS (the only mid-run checkpoint: it came from the signal);
#   (c1) resubmitted with --run.dir of (b): resumes at N (a resume event, or a log line naming the
#       step), every step once overall, and exactly the final loss of (a);
#   (c2) the time-limit path: SIGUSR1 to the ranks (scancel --signal=USR1, what --signal=USR1@120
#       does before the time limit) -> exit 75, the script requeues the job itself (Restarts=1,
#       same job id and run directory), the second attempt resumes and ends with the loss of (a);
#   (d) a bare srun (no --mpi, MpiDefault=none) of upcycle_train on 2 tasks: both tasks fail with
#       "srun started 2 tasks but this process is one of 1 MPI rank", nothing is trained;
#   (e) LAUNCHER=mpirun, MAX_REQUEUES=0: a 2-rank run stopped by `scancel --batch --signal=USR1`
#       (the script forwards it to mpirun) ends with exit 75 and a checkpoint at its last step;
#   (f) slurm/upcycle_gpu.sbatch on the cluster's two stand-in GPUs (training on the CPU): a
#       2-rank run launched with srun --mpi=pmix ... --gpu-bind=none completes; 2 tasks on 1 GPU
#       are refused with exit 2.
# Skipped (exit 77) without root or without the slurm-wlm and munge packages. The cluster and its
# jobs are removed at exit, also when the test fails; the scratch directory is kept after a failure.
# Usage: test_slurm.sh UPCYCLE_TRAIN_BINARY SCRATCH_DIR   (STEPS=1000 by default)
set -u
. "$(dirname "$0")/lib.sh"
cli_usage "UPCYCLE_TRAIN_BINARY SCRATCH_DIR" "$@"
bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
root=$(cd "$cli_dir/../.." && pwd)
steps=${STEPS:-1000}
skip() {
  echo "SKIP: $*"
  exit 77
}

[ "$(id -u)" -eq 0 ] || skip "needs root (slurmd starts the job steps)"
for p in munged munge slurmctld slurmd sbatch srun scancel scontrol squeue; do
  command -v "$p" >/dev/null || skip "$p not found: apt-get install slurm-wlm munge"
done
[ -x "$bin" ] || { echo "no program at $bin"; exit 1; }

# A job of an enclosing allocation must not leak into this cluster's commands.
for v in $(compgen -e | grep '^SLURM_'); do unset "$v"; done
unset UPCYCLE_ROOT LAUNCHER MAX_REQUEUES
export UPCYCLE_BIN=$bin

scratch_dir "$2"
# The cluster lives in a short path of its own: munged's socket path must fit in 108 bytes.
cluster=$(mktemp -d /tmp/upcycle-slurm-test.XXXXXX)

# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  bash "$root/launch/slurm_local.sh" stop "$cluster" >/dev/null 2>&1
  rm -rf "$cluster"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
# Should the test itself be killed (a ctest timeout sends SIGKILL), a watchdog in its own session
# stops the cluster once this process is gone.
setsid bash -c 'while kill -0 '"$$"' 2>/dev/null; do sleep 5; done
  bash "$0" stop "$1" >/dev/null 2>&1; rm -rf "$1"' "$root/launch/slurm_local.sh" "$cluster" \
  </dev/null >/dev/null 2>&1 &

if ! bash "$root/launch/slurm_local.sh" start "$cluster"; then
  fail "the local Slurm cluster did not start"
  give_up "no job runs without it"
fi
export SLURM_CONF="$cluster/slurm.conf"

# Dense training of STEPS steps, batch 16; no mid-run checkpoint but the one a stop writes.
tiny_vit_ini "$scratch/tiny.ini" dense "" train.steps="$steps" train.batch_size=16 checkpoint.every=100000

# submit NAME [sbatch options] -- [script arguments]: submits slurm/upcycle.sbatch from the
# scratch directory as 1 node x 2 tasks x 1 CPU; prints the job id.
submit() {
  local name=$1
  shift
  local opts=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do
    opts+=("$1")
    shift
  done
  shift
  (cd "$scratch" && sbatch --parsable --job-name="$name" --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 \
    --time=20 "${opts[@]}" "$root/slurm/upcycle.sbatch" tiny.ini "$@")
}
field() { scontrol show job "$1" 2>/dev/null | grep -o "$2=[^ ]*" | head -n 1 | cut -d= -f2; }
# wait_end ID SECONDS: waits until the job has ended (a final state, processes gone); prints it.
wait_end() {
  local id=$1 limit=$2 start=$SECONDS state
  while :; do
    state=$(field "$id" JobState)
    case $state in
      COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | PREEMPTED | BOOT_FAIL | DEADLINE)
        echo "$state"
        return 0
        ;;
    esac
    if ((SECONDS - start > limit)); then
      scancel --signal=KILL --full "$id" 2>/dev/null
      echo "NOT_ENDED($state)"
      return 1
    fi
    sleep 1
  done
}
# train_steps RUN_DIR: the steps of metrics.jsonl's train events in file order (a line still being
# written is skipped).
train_steps() {
  [ -f "$1/metrics.jsonl" ] || return 0
  "$py" - "$1/metrics.jsonl" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("event") == "train":
        print(e["step"])
EOF
}
# wait_past ID RUN_DIR STEP SECONDS: until metrics.jsonl has a train event past STEP; fails when
# the job ends (or leaves RUNNING and PENDING) first.
wait_past() {
  local start=$SECONDS last
  while ((SECONDS - start < $4)); do
    last=$(train_steps "$2" | tail -n 1)
    [ -n "$last" ] && [ "$last" -gt "$3" ] && return 0
    case $(field "$1" JobState) in
      PENDING | RUNNING | CONFIGURING) ;;
      *) return 1 ;;
    esac
    sleep 0.2
  done
  return 1
}
# steps_once RUN_DIR LAST: every step 1..LAST exactly once and in order.
steps_once() {
  [ "$(train_steps "$1" | tr '\n' ' ')" = "$(seq -s ' ' 1 "$2") " ]
}
json_value() { "$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2" 2>/dev/null; }
# same_loss A B: two finite floats, equal.
same_loss() { "$py" -c 'import math,sys; a,b=float(sys.argv[1]),float(sys.argv[2]); sys.exit(0 if math.isfinite(a) and a==b else 1)' "$1" "$2" 2>/dev/null; }
# newest_step RUN_DIR: N of the newest checkpoints/dense/step-N.h5 (empty without one).
newest_step() {
  local f newest=""
  for f in "$1"/checkpoints/dense/step-*.h5; do
    [[ "$f" =~ /step-([0-9]+)\.h5$ ]] && newest=${BASH_REMATCH[1]}  # the glob sorts them
  done
  [ -n "$newest" ] && echo $((10#$newest))
}
# check_stop_checkpoint NAME RUN_DIR: the newest checkpoint is at the last logged step, mid-run;
# sets stop_step to it.
check_stop_checkpoint() {
  local last
  last=$(train_steps "$2" | tail -n 1)
  stop_step=$(newest_step "$2")
  if [ -z "$stop_step" ] || [ -z "$last" ] || [ "$stop_step" != "$last" ] || [ "$stop_step" -le 0 ] ||
    [ "$stop_step" -ge "$steps" ]; then
    fail "$1: the newest checkpoint is at step '${stop_step:-none}', the last logged step is '${last:-none}' (expected equal, 0 < N < $steps)"
  elif [ "$(readlink -f "$2/checkpoints/dense/latest.h5")" != \
    "$(readlink -f "$2/checkpoints/dense/step-$(printf %07d "$stop_step").h5")" ]; then
    fail "$1: latest.h5 does not name step-$(printf %07d "$stop_step").h5"
  fi
  [ -n "$last" ] && steps_once "$2" "$last" || fail "$1: metrics.jsonl does not have every step 1..${last:-?} once"
}
# resumed_at RUN_DIR JOB_OUTPUT N: a resume at step N in metrics.jsonl or in the job's output.
resumed_at() {
  "$py" - "$1/metrics.jsonl" "$3" <<'EOF' && return 0
import json, sys
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("event") == "resume" and str(e.get("step")) == sys.argv[2]:
        sys.exit(0)
sys.exit(1)
EOF
  grep -qiE "resum.*(step[ =:]+$3([^0-9]|\$)|step-0*$3\.h5)" "$2"
}
show() { # the job output, indented, after a failure
  echo "--- $1"
  sed 's/^/    /' "$1" 2>/dev/null | tail -n 40
}

# --- (a) uninterrupted -------------------------------------------------------------------------
a=$(submit uninterrupted --)
state=$(wait_end "$a" 900)
out_a="$scratch/uninterrupted-$a.out"
run_a="$scratch/runs/$a"
if [ "$state" != COMPLETED ] || [ "$(field "$a" ExitCode)" != 0:0 ]; then
  fail "(a) job $a ended $state, exit $(field "$a" ExitCode) (expected COMPLETED, 0:0)"
  show "$out_a"
fi
[ "$(json_value "$run_a/report.json" world_size)" = 2 ] || fail "(a) report.json world_size is not 2: one 2-rank job expected"
steps_once "$run_a" "$steps" || fail "(a) metrics.jsonl does not have each step 1..$steps exactly once: $(train_steps "$run_a" | wc -l) train events"
grep -q "srun --mpi=pmix" "$out_a" || fail "(a) the script did not launch with srun --mpi=pmix"
loss_a=$(json_value "$run_a/report.json" final_train_loss)
same_loss "$loss_a" "$loss_a" || fail "(a) no finite final_train_loss in report.json ('$loss_a')"
echo "(a) job $a: $state, $steps steps on 2 ranks, final_train_loss $loss_a"

# --- (b) scancel mid-run -----------------------------------------------------------------------
b=$(submit stopped --)
run_b="$scratch/runs/$b"
out_b="$scratch/stopped-$b.out"
if wait_past "$b" "$run_b" 30 600; then
  scancel "$b"
  state=$(wait_end "$b" 300)
  [ "$state" = CANCELLED ] && [ "$(field "$b" ExitCode)" = 75:0 ] ||
    { fail "(b) job $b ended $state, exit $(field "$b" ExitCode) after scancel (expected CANCELLED, 75:0)"; show "$out_b"; }
  check_stop_checkpoint "(b)" "$run_b"
  n_b=$stop_step
  grep -q "not requeued" "$out_b" || fail "(b) the script requeued or did not say it stopped without a requeue"
  echo "(b) job $b: $state after scancel, checkpoint at step ${n_b:-?}"

  # --- (c1) resubmission into the run directory of (b) -----------------------------------------
  c=$(submit resubmitted -- "--run.dir=runs/$b")
  state=$(wait_end "$c" 900)
  out_c="$scratch/resubmitted-$c.out"
  [ "$state" = COMPLETED ] || { fail "(c1) job $c ended $state (expected COMPLETED)"; show "$out_c"; }
  resumed_at "$run_b" "$out_c" "$n_b" || { fail "(c1) no resume at step $n_b in metrics.jsonl or the job output"; show "$out_c"; }
  steps_once "$run_b" "$steps" || fail "(c1) metrics.jsonl of the two jobs does not have each step 1..$steps once"
  loss_c=$(json_value "$run_b/report.json" final_train_loss)
  same_loss "$loss_c" "$loss_a" || fail "(c1) final_train_loss $loss_c after the resume differs from the uninterrupted $loss_a"
  echo "(c1) job $c: $state, resumed at step $n_b, final_train_loss $loss_c"
else
  fail "(b) job $b ended ($(field "$b" JobState), exit $(field "$b" ExitCode)) or never logged past step 30"
  show "$out_b"
fi

# --- (c2) SIGUSR1 to the ranks -> the script requeues the job, which resumes ----------------------
e=$(MAX_REQUEUES=1 submit requeued --)
run_e="$scratch/runs/$e"
out_e="$scratch/requeued-$e.out"
if wait_past "$e" "$run_e" 30 600; then
  scancel --signal=USR1 "$e"
  start=$SECONDS
  until [ "$(field "$e" Restarts)" = 1 ] || ((SECONDS - start > 120)); do sleep 0.5; done
  if [ "$(field "$e" Restarts)" = 1 ]; then
    # The first attempt has ended (its ranks, then the script that requeued the job).
    check_stop_checkpoint "(c2)" "$run_e"
    n_e=$stop_step
    grep -q "requeueing job $e" "$out_e" || fail "(c2) the script did not say it requeued job $e"
    # Slurm holds a requeued job for about 2 minutes (BeginTime), time for the nodes to finish
    # the old steps: a new step 0 whose PMIx socket is still taken fails to launch. Release the
    # job as soon as slurmd has no file of the old steps left.
    start=$SECONDS
    while compgen -G "$cluster/state/slurmd/*[._]$e.[0-9]*" >/dev/null && ((SECONDS - start < 120)); do sleep 0.5; done
    scontrol update JobId="$e" StartTime=now
    state=$(wait_end "$e" 900)
    [ "$state" = COMPLETED ] || { fail "(c2) job $e ended $state after its requeue (expected COMPLETED)"; show "$out_e"; }
    grep -q "attempt 2:" "$out_e" || fail "(c2) no second attempt in the job output"
    resumed_at "$run_e" "$out_e" "$n_e" || { fail "(c2) the second attempt did not resume at step $n_e"; show "$out_e"; }
    steps_once "$run_e" "$steps" || fail "(c2) metrics.jsonl of the two attempts does not have each step 1..$steps once"
    loss_e=$(json_value "$run_e/report.json" final_train_loss)
    same_loss "$loss_e" "$loss_a" || fail "(c2) final_train_loss $loss_e after the requeue differs from the uninterrupted $loss_a"
    echo "(c2) job $e: requeued by the script after SIGUSR1, $state, final_train_loss $loss_e"
  else
    fail "(c2) job $e was not requeued after SIGUSR1 (state $(field "$e" JobState), exit $(field "$e" ExitCode))"
    show "$out_e"
    scancel "$e" 2>/dev/null
  fi
else
  fail "(c2) job $e ended ($(field "$e" JobState), exit $(field "$e" ExitCode)) or never logged past step 30"
  show "$out_e"
fi

# --- (d) bare srun: 2 copies refuse to train -----------------------------------------------------
(cd "$scratch" && timeout 300 srun --job-name=bare -n 2 --time=5 "$bin" tiny.ini --run.dir="$scratch/runs/bare" \
  >"$scratch/bare.out" 2>"$scratch/bare.err")
status=$?
copies=$(grep -c "srun started 2 tasks but this process is one of 1 MPI rank: srun is not starting MPI" "$scratch/bare.err")
if [ "$status" -eq 0 ] || [ "$copies" -ne 2 ] || [ -e "$scratch/runs/bare/metrics.jsonl" ]; then
  fail "(d) bare srun: exit $status, $copies of 2 tasks refused, metrics.jsonl $([ -e "$scratch/runs/bare/metrics.jsonl" ] && echo written || echo absent)"
  show "$scratch/bare.err"
fi
echo "(d) bare srun -n 2: exit $status, both tasks refused to train"

# --- (e) the mpirun fallback, stopped by SIGUSR1 through the batch shell ---------------------------
m=$(LAUNCHER=mpirun MAX_REQUEUES=0 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 submit mpirun --)
run_m="$scratch/runs/$m"
out_m="$scratch/mpirun-$m.out"
if wait_past "$m" "$run_m" 30 600; then
  scancel --batch --signal=USR1 "$m"
  state=$(wait_end "$m" 300)
  [ "$(field "$m" ExitCode)" = 75:0 ] || { fail "(e) job $m ended $state, exit $(field "$m" ExitCode) (expected 75:0)"; show "$out_m"; }
  grep -q "2 rank(s) x" "$out_m" || fail "(e) upcycle_train under mpirun did not run as 2 ranks"
  grep -q "not requeueing" "$out_m" || fail "(e) with MAX_REQUEUES=0 the script did not decline the requeue"
  check_stop_checkpoint "(e)" "$run_m"
  n_m=$stop_step
  echo "(e) job $m under mpirun: stopped by SIGUSR1 at step ${n_m:-?}, exit $(field "$m" ExitCode)"
else
  fail "(e) job $m ended ($(field "$m" JobState), exit $(field "$m" ExitCode)) or never logged past step 30"
  show "$out_m"
fi

# --- (f) the GPU script on the cluster's two stand-in GPUs, training on the CPU ---------------------
g=$(cd "$scratch" && sbatch --parsable --job-name=gpu --nodes=1 --ntasks-per-node=2 --gpus-per-node=2 \
  --cpus-per-task=1 --time=20 "$root/slurm/upcycle_gpu.sbatch" tiny.ini --train.steps=200 --run.device=cpu \
  --parallel.backend=mpi)
state_g=$(wait_end "$g" 600)
out_g="$scratch/gpu-$g.out"
if [ "$state_g" != COMPLETED ] || [ "$(json_value "$scratch/runs/$g/report.json" world_size)" != 2 ] ||
  ! steps_once "$scratch/runs/$g" 200 || ! grep -q "srun --mpi=pmix .*--gpu-bind=none" "$out_g"; then
  fail "(f) upcycle_gpu.sbatch: job $g ended $state_g (expected COMPLETED, srun --mpi=pmix ... --gpu-bind=none, world_size 2, each of 200 steps once)"
  show "$out_g"
fi
# One task per GPU is the rule: 2 tasks on 1 GPU is refused before anything starts.
g2=$(cd "$scratch" && sbatch --parsable --job-name=gpu_layout --nodes=1 --ntasks-per-node=2 --gpus-per-node=1 \
  --cpus-per-task=1 --time=20 "$root/slurm/upcycle_gpu.sbatch" tiny.ini --run.device=cpu --parallel.backend=mpi)
wait_end "$g2" 300 >/dev/null
if [ "$(field "$g2" ExitCode)" != 2:0 ] || ! grep -q "layout mismatch: 2 task(s) per node on 1 GPU(s)" "$scratch/gpu_layout-$g2.out"; then
  fail "(f) upcycle_gpu.sbatch with 2 tasks on 1 GPU: exit $(field "$g2" ExitCode), expected 2 and a layout message"
  show "$scratch/gpu_layout-$g2.out"
fi
echo "(f) job $g of upcycle_gpu.sbatch: $state_g on 2 ranks; 2 tasks on 1 GPU refused (exit $(field "$g2" ExitCode))"

if [ "$failures" -ne 0 ]; then
  echo "--- slurmctld log"
  tail -n 20 "$cluster/state/slurmctld.log" 2>/dev/null | sed 's/^/    /'
fi
finish "all Slurm checks passed"
