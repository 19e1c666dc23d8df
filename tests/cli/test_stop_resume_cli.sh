#!/usr/bin/env bash
# Stopping on a signal and resuming with checkpoint.resume = auto, under mpirun -np 2:
#   (a) a dense,moe chain (P = 2) trained in one go: its final loss is the reference;
#   (b) the same chain, SIGUSR1 sent to mpirun (which forwards it to the ranks) during stage moe:
#       exit 75, a "stopped" event, and a checkpoint of stage moe at exactly the stopped step;
#   (c) the same command line again with checkpoint.resume = auto: the dense stage is found complete,
#       stage moe resumes from the stopped step, and the final loss equals (a)'s bit for bit; every
#       train step appears once in metrics.jsonl;
#   (d) SIGTERM sent to every rank (what Slurm does on scancel or preemption) during a dense run:
#       exit 75 and a checkpoint at the stopped step; auto resumes to the same losses as (a)'s dense
#       stage.
# Usage: test_stop_resume_cli.sh UPCYCLE_TRAIN_BINARY MPIEXEC SCRATCH_DIR
set -u
. "$(dirname "$0")/lib.sh"
cli_usage "UPCYCLE_TRAIN_BINARY MPIEXEC SCRATCH_DIR" "$@"
bin=$1
mpiexec=$2
mpi_env
scratch_dir "$3"

# A randomly initialised MoE after the dense stage, long enough to be stopped in either stage;
# gradients clipped at the default norm of 1, a metrics event every 50 steps.
tiny_vit_ini "$scratch/chain.ini" dense,moe "" moe.num_experts=4 moe.top_k=2 moe.init=random train.steps=1500 \
  train.moe_steps=3000 train.grad_clip=1 checkpoint.every=100000 log.every=50

# The value of `key` in report.json of run dir $1.
report() { "$py" -c "import json,sys; print(repr(json.load(open(sys.argv[1]))[sys.argv[2]]))" "$1/report.json" "$2"; }
# Waits until metrics.jsonl of run dir $1 has a train event of stage $2 at a step >= $3 (60 s at most).
wait_for_step() {
  for _ in $(seq 600); do
    if [ -f "$1/metrics.jsonl" ] && "$py" - "$1/metrics.jsonl" "$2" "$3" <<'PY'
import json, sys
steps = [e["step"] for e in map(json.loads, open(sys.argv[1])) if e.get("event") == "train" and e.get("stage") == sys.argv[2]]
sys.exit(0 if steps and max(steps) >= int(sys.argv[3]) else 1)
PY
    then
      return 0
    fi
    sleep 0.1
  done
  return 1
}
# The step of the last "stopped" event of stage $2 in run dir $1.
stopped_step() {
  "$py" -c "import json,sys; print([e['step'] for e in map(json.loads, open(sys.argv[1])) if e.get('event') == 'stopped' and e['stage'] == sys.argv[2]][-1])" "$1/metrics.jsonl" "$2"
}
# The step of the newest step checkpoint of stage $2 in run dir $1.
newest_step_file() { ls "$1/checkpoints/$2" | grep '^step-.*\.h5$' | sort | tail -1 | sed 's/step-0*\([0-9][0-9]*\)\.h5/\1/'; }
# Every train step of every stage appears once.
steps_once() {
  "$py" - "$1/metrics.jsonl" <<'PY'
import collections, json, sys
seen = collections.Counter((e["stage"], e["step"]) for e in map(json.loads, open(sys.argv[1])) if e.get("event") == "train")
twice = [k for k, n in seen.items() if n > 1]
if twice:
    print("logged more than once:", twice[:5])
    sys.exit(1)
PY
}

# (a) the reference
"$mpiexec" --oversubscribe -np 2 "$bin" "$scratch/chain.ini" --run.dir="$scratch/ref" >"$scratch/ref.log" 2>&1 ||
  { fail "(a) the uninterrupted chain failed"; cat "$scratch/ref.log"; }
ref_loss=$(report "$scratch/ref" final_train_loss)

# (b) SIGUSR1 to mpirun during stage moe
run="$scratch/usr1"
"$mpiexec" --oversubscribe -np 2 "$bin" "$scratch/chain.ini" --run.dir="$run" --checkpoint.resume=auto \
  >"$scratch/usr1.log" 2>&1 &
launcher=$!
if wait_for_step "$run" moe 500; then
  kill -USR1 "$launcher"
else
  fail "(b) stage moe never reached step 500"
fi
wait "$launcher"
status=$?
[ "$status" -eq 75 ] || { fail "(b) exit status $status after SIGUSR1, expected 75"; tail -20 "$scratch/usr1.log"; }
grep -q "stopping after step .* on SIGUSR1: checkpoint saved" "$scratch/usr1.log" || fail "(b) no stop message in the log"
stopped=$(stopped_step "$run" moe)
[ "$stopped" = "$(newest_step_file "$run" moe)" ] ||
  fail "(b) stopped at step $stopped but the newest moe checkpoint is step $(newest_step_file "$run" moe)"
[ "${stopped:-3000}" -lt 3000 ] || fail "(b) the run was not stopped early (step $stopped)"

# (c) the same command line resumes
"$mpiexec" --oversubscribe -np 2 "$bin" "$scratch/chain.ini" --run.dir="$run" --checkpoint.resume=auto \
  >"$scratch/resume.log" 2>&1 || { fail "(c) the resumed chain failed"; tail -20 "$scratch/resume.log"; }
grep -q "\[dense\] already complete at step 1500" "$scratch/resume.log" || fail "(c) the dense stage was not found complete"
grep -q "\[moe\] resumed from .*step-0*$stopped.h5 at step $stopped" "$scratch/resume.log" ||
  fail "(c) stage moe did not resume from step $stopped"
[ "$(report "$run" final_train_loss)" = "$ref_loss" ] ||
  fail "(c) final loss $(report "$run" final_train_loss) after the resume, $ref_loss uninterrupted"
steps_once "$run" || fail "(c) metrics.jsonl repeats steps"

# (d) SIGTERM to every rank during a dense run (as slurmstepd delivers it)
run="$scratch/term"
"$mpiexec" --oversubscribe -np 2 "$bin" "$scratch/chain.ini" --run.stages=dense --run.dir="$run" \
  --checkpoint.resume=auto >"$scratch/term.log" 2>&1 &
launcher=$!
if wait_for_step "$run" dense 300; then
  pkill -TERM -P "$launcher" -f upcycle_train || fail "(d) no rank found to signal"
else
  fail "(d) the dense stage never reached step 300"
fi
wait "$launcher"
status=$?
[ "$status" -eq 75 ] || { fail "(d) exit status $status after SIGTERM, expected 75"; tail -20 "$scratch/term.log"; }
stopped=$(stopped_step "$run" dense)
[ "$stopped" = "$(newest_step_file "$run" dense)" ] || fail "(d) stopped at step $stopped, newest checkpoint differs"
"$mpiexec" --oversubscribe -np 2 "$bin" "$scratch/chain.ini" --run.stages=dense --run.dir="$run" \
  --checkpoint.resume=auto >"$scratch/term2.log" 2>&1 || fail "(d) the resumed dense run failed"
# The logged mean loss of steps 1451..1500 (a full log window after the resume point).
window_loss() {
  "$py" -c "import json,sys; print(repr([e['loss'] for e in map(json.loads, open(sys.argv[1])) if e.get('event') == 'train' and e['stage'] == 'dense' and e['step'] == 1500][0]))" "$1/metrics.jsonl"
}
[ "$(window_loss "$run")" = "$(window_loss "$scratch/ref")" ] ||
  fail "(d) loss of the last 50 dense steps $(window_loss "$run") after the resume, $(window_loss "$scratch/ref") uninterrupted"

finish "stop and resume: all checks passed"
