#!/usr/bin/env bash
# The chain dense,upcycle,moe,eval with EESD on, through upcycle_train (tiny ViT, block 1 of 2
# becomes MoE, E = 4):
#   (a) on mpirun -np 2 it exits 0; metrics.jsonl has a finite, non-zero EESD loss for the MoE block
#       at every logged MoE step; the MoE checkpoint holds the teacher (/teacher/..., experts [E, ...]
#       by global id), different from the student; eval_report.json has the test accuracy of both
#       models, the few-shot results and every specialisation measure;
#   (b) the MoE stage resumed on 1 rank from the 2-rank run's step checkpoint continues with the
#       losses of the uninterrupted run (to float rounding: the expert-parallel size changed);
#   (c) eesd.enabled without a moe stage exits 2 naming the key, before anything is written.
# Usage: test_eesd_eval_cli.sh UPCYCLE_TRAIN_BINARY MPIEXEC SCRATCH_DIR
set -u
. "$(dirname "$0")/lib.sh"
cli_usage "UPCYCLE_TRAIN_BINARY MPIEXEC SCRATCH_DIR" "$@"
bin=$1
mpiexec=$2
mpi_env
scratch_dir "$3"
run="$scratch/run"

tiny_upcycled_ini "$scratch/tiny.ini" dense,upcycle,moe,eval "$run" eesd.enabled=true eesd.ema=0.9 eesd.weight=0.5 \
  eval.test_limit=400 eval.few_shot_k=1,5 eval.few_shot_draws=3 eval.tokens=256 train.moe_steps=6 checkpoint.every=3 \
  checkpoint.keep=0

# (a) the chain on 2 ranks.
record chain "$mpiexec" --oversubscribe -np 2 "$bin" "$scratch/tiny.ini"
[ $status -eq 0 ] || { fail "the chain exited $status"; cat "$scratch/chain.err"; }
grep -q "\[eval\] moe" "$scratch/chain.out" || fail "no eval summary of the MoE model in the output"

"$py" - "$run" <<'PY' || fail "the run directory of the EESD chain is not as expected"
import json, math, sys
import h5py, numpy as np
run = sys.argv[1]
ok = True
def check(cond, what):
    global ok
    if not cond:
        print("  not so:", what)
        ok = False
events = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
moe = [e for e in events if e.get("event") == "train" and e.get("stage") == "moe"]
check(len(moe) == 6, f"6 MoE train events, got {len(moe)}")
for e in moe:
    v = e.get("moe/blocks/01/eesd_loss")
    check(isinstance(v, float) and math.isfinite(v) and v > 0, f"step {e.get('step')}: eesd_loss {v}")
dense = [e for e in events if e.get("event") == "train" and e.get("stage") == "dense"]
check(all("moe/blocks/01/eesd_loss" not in e for e in dense), "the dense stage logs no EESD loss")
with h5py.File(f"{run}/checkpoints/moe/latest.h5", "r") as f:
    t = f["/teacher/blocks/01/moe/experts/w1"][()]
    s = f["/model/blocks/01/moe/experts/w1"][()]
    check(t.shape == (4, 32, 16), f"teacher experts stored [E, F, D], got {t.shape}")
    check(np.all(np.isfinite(t)) and not np.array_equal(t, s), "the teacher is finite and differs from the student")
    check("/teacher/head/weight" in f, "replicated teacher parameters stored")
with h5py.File(f"{run}/checkpoints/upcycle/upcycled.h5", "r") as f:
    check("teacher" not in f, "the upcycled checkpoint has no teacher")
rep = json.load(open(f"{run}/eval_report.json"))
check(rep["world_size"] == 2, "eval on 2 ranks")
for m in ("dense", "moe"):
    check(m in rep, f"{m} in the report")
    if m not in rep:
        continue
    acc = rep[m]["test"]["accuracy"]
    check(0.0 < acc <= 1.0, f"{m} test accuracy {acc}")
    check(set(rep[m]["few_shot"]) == {"1", "5"}, f"{m} few-shot k")
    for k, v in rep[m]["few_shot"].items():
        check(len(v["draws"]) == 3 and 0 < v["mean"] <= 1, f"{m} {k}-shot {v}")
b = rep.get("moe", {}).get("blocks", {}).get("blocks/01/moe", {})
for key in ("weight_cosine", "output_cosine", "entropy", "entropy_norm", "load_cov", "expert_mean_prob",
            "relative_compactness", "prob_std"):
    check(key in b, f"specialisation measure {key}")
check(not rep.get("dense", {}).get("blocks"), "the dense model has no MoE blocks")
sys.exit(0 if ok else 1)
PY

# (b) resume the MoE stage on 1 rank from the 2-rank checkpoint at MoE step 3.
record resume "$bin" "$scratch/tiny.ini" --run.stages=moe --run.dir="$scratch/resumed" \
  --checkpoint.resume="$run/checkpoints/moe/step-0000003.h5"
[ $status -eq 0 ] || { fail "the resume on 1 rank exited $status"; cat "$scratch/resume.err"; }
"$py" - "$run" "$scratch/resumed" <<'PY' || fail "the resumed run's losses differ from the uninterrupted run"
import json, sys
def losses(d):
    return {e["step"]: e["loss"] for e in map(json.loads, open(f"{d}/metrics.jsonl"))
            if e.get("event") == "train" and e.get("stage") == "moe"}
full, resumed = losses(sys.argv[1]), losses(sys.argv[2])
ok = sorted(resumed) == [4, 5, 6]
for s in sorted(resumed):
    rel = abs(resumed[s] - full[s]) / abs(full[s])
    print(f"  step {s}: uninterrupted {full[s]:.9f} resumed on 1 rank {resumed[s]:.9f} rel {rel:.2e}")
    # The expert-parallel size went from 2 to 1: float sums in another order (~1e-8).
    ok = ok and rel < 1e-6
sys.exit(0 if ok else 1)
PY

# (c) EESD without a moe stage: a config error, nothing written.
record nomoe "$bin" "$scratch/tiny.ini" --run.stages=dense --run.dir="$scratch/nomoe"
[ $status -eq 2 ] || fail "eesd.enabled without stage moe exited $status, expected 2"
grep -q "eesd.enabled = true" "$scratch/nomoe.err" || fail "the error does not name eesd.enabled: $(cat "$scratch/nomoe.err")"
[ ! -e "$scratch/nomoe" ] || fail "a refused run created its run directory"

finish "all EESD chain checks passed"
