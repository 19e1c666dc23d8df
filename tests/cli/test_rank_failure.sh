#!/usr/bin/env bash
# A failing rank ends the whole job within seconds, never a hang (tiny ViT, mpirun -np 2):
#   (a) kill -9 of one rank while both train (rank 1, then in a second run rank 0; the pids come
#       from the log.level = debug line each rank writes first): mpirun and the other rank end
#       within 15 s, mpirun with a non-zero status;
#   (b) an exception on rank 0 only: <run.dir>/checkpoints is a plain file, so rank 0's first
#       checkpoint save (step 5) throws while rank 1 waits in the barrier after it: the job ends
#       within 15 s with status 1 and rank 0's message naming the path.
# Usage: test_rank_failure.sh UPCYCLE_TRAIN_BINARY MPIEXEC SCRATCH_DIR
set -u
. "$(dirname "$0")/lib.sh"
cli_usage "UPCYCLE_TRAIN_BINARY MPIEXEC SCRATCH_DIR" "$@"
bin=$1
mpiexec=$2
limit=15
mpi_env
scratch_dir "$3"

# Training that would go on for a long time, each rank's pid in its first (debug) log line.
tiny_vit_ini "$scratch/tiny.ini" dense "" train.steps=1000000 train.batch_size=16 checkpoint.every=1000000 \
  log.level=debug log.every=5

now_ms() { echo $(($(date +%s%N) / 1000000)); }
# running PID: the process exists and is not a zombie (an orphaned rank waits to be reaped by
# whatever init this machine has).
running() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}
# still_running PID: running 3 s after mpirun ended (the ranks are mpirun's children; let them go).
still_running() {
  local i
  for ((i = 0; i < 30; i++)); do
    running "$1" || return 1
    sleep 0.1
  done
  return 0
}
# start NAME ARGS...: mpirun -np 2 upcycle_train in the background; sets job (mpirun's pid).
start() {
  local name=$1
  shift
  "$mpiexec" --oversubscribe -np 2 "$bin" "$scratch/tiny.ini" "$@" >"$scratch/$name.out" 2>&1 &
  job=$!
}
# pid_of NAME RANK: that rank's pid from its "rank R of 2 on host ..., pid P, ..." line (waits).
pid_of() {
  local i p
  for ((i = 0; i < 600; i++)); do
    p=$(sed -n "s/^rank $2 of 2 on host .*, pid \([0-9]*\),.*/\1/p" "$scratch/$1.out" | head -n 1)
    [ -n "$p" ] && { echo "$p"; return 0; }
    kill -0 "$job" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
# await_job [PID...]: waits up to 60 s for mpirun; sets status and ended_ms. A job still running
# then is a hang: it and the given rank pids are killed.
await_job() {
  local i
  for ((i = 0; i < 600; i++)); do
    kill -0 "$job" 2>/dev/null || break
    sleep 0.1
  done
  ended_ms=$(now_ms)
  if kill -0 "$job" 2>/dev/null; then
    kill -9 "$job" "$@" 2>/dev/null
    status=hang
  fi
  status_code=0
  wait "$job" || status_code=$?
  [ "${status:-}" = hang ] || status=$status_code
}

# --- (a) kill -9 of one rank ------------------------------------------------------------------------
for victim in 1 0; do
  other=$((1 - victim))
  name="kill_rank$victim"
  status=""
  start "$name" --run.dir="$scratch/$name"
  victim_pid=$(pid_of "$name" "$victim")
  other_pid=$(pid_of "$name" "$other")
  if [ -z "$victim_pid" ] || [ -z "$other_pid" ]; then
    fail "($name) no pid lines in the debug log"
    sed 's/^/    /' "$scratch/$name.out" | tail -n 20
    kill -9 "$job" 2>/dev/null
    continue
  fi
  # Both ranks are past start-up and in the training loop once a train event is written.
  for ((i = 0; i < 600; i++)); do
    grep -q '"event": "train"' "$scratch/$name/metrics.jsonl" 2>/dev/null && break
    sleep 0.1
  done
  killed_ms=$(now_ms)
  kill -9 "$victim_pid"
  await_job "$victim_pid" "$other_pid"
  took=$((ended_ms - killed_ms))
  if [ "$status" = hang ]; then
    fail "($name) mpirun still ran 60 s after rank $victim was killed"
  elif [ "$status" -eq 0 ]; then
    fail "($name) mpirun exited 0 after rank $victim was killed"
  elif [ "$took" -ge $((limit * 1000)) ]; then
    fail "($name) mpirun took ${took} ms to end after rank $victim was killed (limit ${limit} s)"
  fi
  if still_running "$other_pid"; then
    fail "($name) rank $other (pid $other_pid) still runs after mpirun ended"
    kill -9 "$other_pid" 2>/dev/null
  fi
  echo "($name) kill -9 of rank $victim: mpirun ended after ${took} ms with status $status"
done

# --- (b) an exception on rank 0 only ----------------------------------------------------------------
name=rank0_throws
run="$scratch/$name"
mkdir -p "$run"
: >"$run/checkpoints"
status=""
start "$name" --run.dir="$run" --checkpoint.every=5
pid0=$(pid_of "$name" 0)
pid1=$(pid_of "$name" 1)
# From rank 0's message (the exception reached main) to the end of the job.
for ((i = 0; i < 600; i++)); do
  grep -q "$run/checkpoints" "$scratch/$name.out" && break
  kill -0 "$job" 2>/dev/null || break
  sleep 0.1
done
thrown_ms=$(now_ms)
await_job "$pid0" "$pid1"
took=$((ended_ms - thrown_ms))
if [ "$status" = hang ]; then
  fail "($name) mpirun still ran 60 s after rank 0's checkpoint failed"
elif [ "$status" -ne 1 ]; then
  fail "($name) mpirun exited $status (expected 1)"
elif [ "$took" -ge $((limit * 1000)) ]; then
  fail "($name) the job took ${took} ms to end (limit ${limit} s)"
fi
grep -q "$run/checkpoints" "$scratch/$name.out" || fail "($name) no message naming $run/checkpoints"
for p in $pid0 $pid1; do
  still_running "$p" && { fail "($name) a rank (pid $p) still runs after mpirun ended"; kill -9 "$p"; }
done
[ "$failures" -eq 0 ] || sed 's/^/    /' "$scratch/$name.out" | tail -n 20
echo "($name) rank 0's failed checkpoint: the job ended after ${took} ms with status $status"

finish "all rank-failure checks passed"
