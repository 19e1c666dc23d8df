#!/usr/bin/env bash
# The upcycle stage end to end through upcycle_train (tiny ViT, block 1 of 2 becomes MoE, E = 4):
#   (a) run.stages = dense,upcycle,moe with method = cluster under mpirun -np 2 exits 0 and leaves
#       checkpoints/{dense,upcycle,moe}/, upcycle_report.json (method, calibration, per block the
#       k-means history, cluster sizes, SVD ranks, phase times) and an "upcycle" metrics event;
#       h5py reads the upcycled file: experts [E, ...] by global id, /upcycle/blocks/01/..., stage;
#   (b) every other method upcycles the same dense checkpoint (stage upcycle alone);
#   (c) bad input exits 2 (usage) or 1 (damaged file) naming the file or key, never a crash:
#       no dense checkpoint yet, a dense checkpoint of another model, an MoE checkpoint given as the
#       dense one, moe.init = upcycled without the file, a truncated dense checkpoint.
# Usage: test_upcycle_cli.sh UPCYCLE_TRAIN_BINARY MPIEXEC SCRATCH_DIR
set -u
. "$(dirname "$0")/lib.sh"
cli_usage "UPCYCLE_TRAIN_BINARY MPIEXEC SCRATCH_DIR" "$@"
bin=$1
mpiexec=$2
mpi_env
scratch_dir "$3"
run="$scratch/run"

tiny_upcycled_ini "$scratch/tiny.ini" dense,upcycle,moe "$run"

# run NAME [mpirun -np N | -] ARGS...: runs upcycle_train, status in $status, output in NAME.out/.err
run_train() {
  local name=$1 np=$2
  shift 2
  if [ "$np" = 1 ]; then
    record "$name" "$bin" "$scratch/tiny.ini" "$@"
  else
    record "$name" "$mpiexec" --oversubscribe -np "$np" "$bin" "$scratch/tiny.ini" "$@"
  fi
}
# expect_fail NAME STATUS NEEDLE... -- ARGS...: exit STATUS and every NEEDLE in stderr.
expect_fail() {
  local name=$1 want=$2
  shift 2
  split_needles "$@"
  run_train "$name" 1 "${args[@]}"
  [ "$status" = "$want" ] || fail "$name: exit $status, expected $want; stderr: $(cat "$scratch/$name.err")"
  holds_all "$scratch/$name.err" "$name: stderr" "${needles[@]}"
}

# (a) The chain with cluster upcycling on 2 ranks.
run_train chain 2
if [ "$status" != 0 ]; then
  fail "chain: exit $status; stderr:"; cat "$scratch/chain.err"
  give_up "cannot go on without the chain's checkpoints"
fi
for f in checkpoints/dense/step-0000003.h5 checkpoints/upcycle/upcycled.h5 checkpoints/moe/step-0000002.h5 \
         checkpoints/latest.h5 upcycle_report.json metrics.jsonl report.json; do
  [ -s "$run/$f" ] || fail "chain: $run/$f is missing or empty"
done
grep -qF "[upcycle] block 1: k-means" "$scratch/chain.out" || fail "chain: no k-means line in the log"
grep -qF "[moe] initialised from $run/checkpoints/upcycle/upcycled.h5" "$scratch/chain.out" \
  || fail "chain: stage moe did not start from the upcycled checkpoint"
"$py" - "$run" <<'PY' || fail "chain: report or checkpoint content (above)"
import json, sys, h5py
run = sys.argv[1]
r = json.load(open(run + "/upcycle_report.json"))
assert r["method"] == "cluster" and r["num_experts"] == 4, r
assert r["parameters"]["tau"] == 0.9 and r["parameters"]["calib_tokens"] == 3000, r["parameters"]
cal = r["calibration"]
assert cal["tokens"] >= 3000 and cal["bytes_per_rank_max"] > 0, cal
(b,) = r["blocks"]
assert b["block"] == 1 and len(b["cluster_sizes"]) == 4 and sum(b["cluster_sizes"]) == cal["tokens"], b
assert len(b["kmeans_objective"]) >= 1 and len(b["kmeans_sizes"]) == len(b["kmeans_objective"]), b
assert all(8 <= k <= 16 for k in b["svd_ranks"]), b["svd_ranks"]
for phase in ("calibration", "kmeans", "second_moment", "svd", "write", "total"):
    assert phase in r["seconds"], (phase, r["seconds"])
events = [json.loads(l) for l in open(run + "/metrics.jsonl")]
assert any(e.get("event") == "upcycle" for e in events), "no upcycle event in metrics.jsonl"
assert {e.get("stage") for e in events if e.get("event") == "train"} == {"dense", "moe"}
with h5py.File(run + "/checkpoints/upcycle/upcycled.h5", "r") as f:
    assert f.attrs["stage"] == "upcycle" and f.attrs["step"] == 0
    assert "method = cluster" in f.attrs["config"]
    assert f["/model/blocks/01/moe/experts/w1"].shape == (4, 32, 16)
    assert f["/model/blocks/01/moe/router/weight"].shape == (4, 16)
    assert "/model/blocks/00/mlp/fc1/weight" in f and "/model/blocks/01/mlp/fc1/weight" not in f
    assert list(f["/upcycle/blocks/01/cluster_sizes"][()]) == b["cluster_sizes"]
    assert list(f["/upcycle/blocks/01/svd_ranks"][()]) == b["svd_ranks"]
    assert "optimizer" not in f
    with h5py.File(run + "/checkpoints/dense/step-0000003.h5", "r") as d:
        # Non-MoE parameters are copied unchanged.
        assert (f["/model/blocks/01/attn/qkv/weight"][()] == d["/model/blocks/01/attn/qkv/weight"][()]).all()
        assert (f["/model/head/weight"][()] == d["/model/head/weight"][()]).all()
PY

# (b) The other methods, each from the same dense checkpoint, on one rank.
for m in sparse drop drop_svd granular; do
  run_train "method_$m" 1 --run.stages=upcycle --upcycle.method=$m --run.dir="$scratch/m_$m" \
    --upcycle.dense_checkpoint="$run/checkpoints/dense/step-0000003.h5"
  [ "$status" = 0 ] || fail "method $m: exit $status; $(cat "$scratch/method_$m.err")"
  [ -s "$scratch/m_$m/checkpoints/upcycle/upcycled.h5" ] || fail "method $m: no upcycled checkpoint"
done
"$py" -c '
import h5py, sys
with h5py.File(sys.argv[1], "r") as f:
    assert f["/model/blocks/01/moe/experts/w1"].shape == (4, 16, 16), "granular experts are half wide"
' "$scratch/m_granular/checkpoints/upcycle/upcycled.h5" || fail "granular: expert shape"

# (c) Bad input.
expect_fail no_dense 2 "$scratch/empty/checkpoints/dense/latest.h5" "run the dense stage first" -- \
  --run.stages=upcycle,moe --run.dir="$scratch/empty"
[ -e "$scratch/empty/checkpoints/upcycle" ] && fail "no_dense: an upcycle folder was written"
expect_fail other_model 2 "model.width = 16" "model.width = 32" "$run/checkpoints/dense/latest.h5" -- \
  --run.stages=upcycle --run.dir="$scratch/other" --model.width=32 --upcycle.dense_checkpoint="$run/checkpoints/dense/latest.h5"
expect_fail moe_as_dense 2 "not of the dense stage" -- \
  --run.stages=upcycle --run.dir="$scratch/wrong" --upcycle.dense_checkpoint="$run/checkpoints/moe/latest.h5"
expect_fail no_upcycled 2 "moe.init = upcycled" "$scratch/none/checkpoints/upcycle/upcycled.h5" -- \
  --run.stages=moe --run.dir="$scratch/none" --moe.init=upcycled
head -c 2000 "$run/checkpoints/dense/step-0000003.h5" >"$scratch/truncated.h5"
expect_fail truncated 1 "$scratch/truncated.h5" -- \
  --run.stages=upcycle --run.dir="$scratch/t" --upcycle.dense_checkpoint="$scratch/truncated.h5"

finish "all upcycle command-line checks passed"
