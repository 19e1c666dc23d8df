#!/usr/bin/env bash
# upcycle_inspect end to end (docs/inspect.md), on checkpoints of a real run of the tiny ViT:
# run.stages = dense,upcycle,moe on one process (block 1 of 2 upcycled by cluster into E = 4, k = 2,
# with a shared expert, the aux-free bias and EESD, so the MoE checkpoint has /teacher and
# /state/moe), about 2 seconds.
#   (a) every --json view against h5py + numpy (check_inspect.py): the summary of the dense, upcycled
#       and MoE checkpoints, --tensors (also of a copy with NaN and Inf written in), --experts,
#       --diff (MoE vs upcycled, X vs X, a copy with a dataset removed, added and reshaped), --verify;
#   (b) the text views say what they must;
#   (c) --diff X X reports zeros;
#   (d) --verify: 0 on a good file, 1 on a truncated copy and on one with a flipped data byte (the
#       last needs per-dataset checksums in upcycle::check_checkpoint);
#   (e) bad input: a missing file, a non-HDF5 file, a foreign HDF5 file -> exit 1, one line naming
#       the file, nothing on stdout; command-line misuse -> exit 2; --help -> 0.
# Usage: test_inspect_cli.sh UPCYCLE_INSPECT UPCYCLE_TRAIN SCRATCH_DIR
# SCRATCH_DIR is emptied and reused (kept after a failure for inspection).
set -u
. "$(dirname "$0")/lib.sh"
cli_usage "UPCYCLE_INSPECT UPCYCLE_TRAIN SCRATCH_DIR" "$@"
inspect=$1
train=$2
checker="$cli_dir/check_inspect.py"
export OMP_NUM_THREADS=1
scratch_dir "$3"
run="$scratch/run"

tiny_upcycled_ini "$scratch/tiny.ini" dense,upcycle,moe "$run" moe.shared_expert=true moe.aux_free_rate=0.001 \
  eesd.enabled=true
: >"$scratch/empty.ini"
"$train" "$scratch/empty.ini" --print-config >"$scratch/defaults.ini" 2>"$scratch/defaults.err" \
  || { fail "upcycle_train --print-config of an empty config: $(cat "$scratch/defaults.err")"; }
record train "$train" "$scratch/tiny.ini"
dense="$run/checkpoints/dense/step-0000003.h5"
upcycled="$run/checkpoints/upcycle/upcycled.h5"
moe="$run/checkpoints/moe/step-0000002.h5"
if [ "$status" != 0 ] || [ ! -s "$dense" ] || [ ! -s "$upcycled" ] || [ ! -s "$moe" ]; then
  fail "the training run: exit $status; stderr:"; cat "$scratch/train.err"
  give_up "cannot go on without checkpoints"
fi

# view NAME ARGS...: runs upcycle_inspect, output in NAME.out / NAME.err, exit status in $status.
view() {
  local name=$1
  shift
  record "$name" "$inspect" "$@"
}
# json_view NAME CHECK CHECK_ARGS -- ARGS...: a --json view that must exit 0 and pass the checker.
json_view() {
  local name=$1 what=$2
  shift 2
  split_needles "$@"
  local check_args=("${needles[@]}")
  view "$name" --json "${args[@]}"
  if [ "$status" != 0 ]; then
    fail "$name: exit $status, expected 0; stderr: $(cat "$scratch/$name.err")"
    return
  fi
  "$py" "$checker" "$what" "$scratch/$name.out" "${check_args[@]}" \
    || fail "$name: --json ${args[*]} against h5py/numpy (above)"
}
# expect_text NAME NEEDLE...: every NEEDLE in NAME.out.
expect_text() {
  local name=$1
  shift
  holds_all "$scratch/$name.out" "$name: the output" "$@"
}
# expect_error NAME STATUS NEEDLE... -- ARGS...: exit STATUS, nothing on stdout, every NEEDLE in stderr;
# for exit 1 the error is one line.
expect_error() {
  local name=$1 want=$2
  shift 2
  split_needles "$@"
  view "$name" "${args[@]}"
  [ "$status" = "$want" ] || fail "$name: exit $status, expected $want; stderr: $(cat "$scratch/$name.err")"
  [ -s "$scratch/$name.out" ] && fail "$name: wrote to stdout: $(head -c 300 "$scratch/$name.out")"
  if [ "$want" = 1 ] && [ "$(wc -l <"$scratch/$name.err")" != 1 ]; then
    fail "$name: expected a one-line error, got: $(cat "$scratch/$name.err")"
  fi
  holds_all "$scratch/$name.err" "$name: stderr" "${needles[@]}"
}

# Copies with h5py: NaN and Inf written into two tensors; a dataset removed, one added and one reshaped.
cp "$moe" "$scratch/nonfinite.h5"
cp "$moe" "$scratch/edited.h5"
"$py" - "$scratch/nonfinite.h5" "$scratch/edited.h5" <<'PY' || fail "preparing the edited copies"
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r+") as f:
    w = f["/model/blocks/00/attn/qkv/weight"]
    x = w[()]
    x[0, 0], x[1, 2], x[3, 4] = np.nan, np.inf, -np.inf
    w[...] = x
    f["/model/cls_token"][...] = np.full(f["/model/cls_token"].shape, np.nan, np.float32)
with h5py.File(sys.argv[2], "r+") as f:
    del f["/model/head/bias"]
    f["/model/head/bias"] = np.ones(11, np.float32)
    del f["/model/cls_token"]
    f["/extra/x"] = np.arange(3, dtype=np.int64)
PY

# (a) The JSON views against the oracle.
for c in dense upcycled moe; do
  json_view "summary_$c" summary "${!c}" "$scratch/defaults.ini" -- "${!c}"
  json_view "tensors_$c" tensors "${!c}" -- --tensors "${!c}"
  json_view "experts_$c" experts "${!c}" -- --experts "${!c}"
  json_view "verify_$c" verify "${!c}" -- --verify "${!c}"
done
json_view tensors_nonfinite tensors "$scratch/nonfinite.h5" -- --tensors "$scratch/nonfinite.h5"
json_view diff_moe_upcycled diff "$moe" "$upcycled" -- --diff "$moe" "$upcycled"
json_view diff_dense_moe diff "$dense" "$moe" -- --diff "$dense" "$moe"
json_view diff_edited diff "$moe" "$scratch/edited.h5" -- --diff "$moe" "$scratch/edited.h5"
json_view diff_same diff "$moe" "$moe" -- --diff "$moe" "$moe"
"$py" - "$scratch" <<'PY' || fail "content of the JSON views (above)"
import json, sys
s = sys.argv[1]
load = lambda n: json.load(open(f"{s}/{n}.out"))
# The test's own model: the oracle above computed the numbers, this pins that they are not trivial.
d, u, m = load("summary_dense"), load("summary_upcycled"), load("summary_moe")
assert (d["stage"], d["step"], u["stage"], u["step"], m["stage"], m["step"]) == ("dense", 3, "upcycle", 0, "moe", 2)
assert d["moe_blocks"] == [] and d["parameters"]["experts"] == 0 and d["parameters"]["dense_ffn"] > 0, d
assert m["moe_blocks"] == [{"block": "blocks/01", "num_experts": 4, "top_k": 2}], m["moe_blocks"]
# One expert of width 32 on width 16: w1 + b1 + w2 + b2; the shared expert is one more of them.
assert m["parameters"]["experts"] == 4 * (32 * 16 + 32 + 16 * 32 + 16), m["parameters"]
assert m["parameters"]["shared_expert"] == 32 * 16 + 32 + 16 * 32 + 16 and m["parameters"]["routers"] == 4 * 16
assert m["teacher"]["present"] and m["teacher"]["parameters"] == m["parameters"]["total"], m["teacher"]
assert m["optimizer"]["present"] and m["optimizer"]["steps"] == 2 and not u["optimizer"]["present"], m["optimizer"]
assert u["upcycle_record"] and not m["upcycle_record"] and u["config"]["upcycle.method"] == "cluster"
assert m["config"]["non_default"]["moe.aux_free_rate"] == "0.001", m["config"]["non_default"]
(bm,) = load("experts_moe")["blocks"]
assert bm["aux_free_bias"] is not None and len(bm["aux_free_bias"]) == 4 and bm["upcycle"] is None, bm
(bu,) = load("experts_upcycled")["blocks"]
assert sorted(bu["upcycle"]) == ["cluster_sizes", "kmeans_objective", "svd_energy", "svd_ranks"], bu["upcycle"]
assert len(bu["upcycle"]["cluster_sizes"]) == 4 and bu["aux_free_bias"] is None, bu
assert load("experts_dense")["blocks"] == []
t = {x["name"]: x for x in load("tensors_nonfinite")["tensors"]}
q = t["/model/blocks/00/attn/qkv/weight"]
assert (q["nan"], q["inf"]) == (1, 2) and q["norm"] is not None and q["norm"] > 0, q
c = t["/model/cls_token"]
assert c["nan"] == 16 and c["mean"] is None and c["std"] is None and c["norm"] == 0, c
assert load("tensors_nonfinite")["nonfinite_tensors"] == 2
# (c) X against X: zeros everywhere.
same = load("diff_same")
assert same["only_in_a"] == [] and same["only_in_b"] == [] and same["shape_mismatches"] == []
assert same["tensors_differing"] == 0 and same["tensors_compared"] == load("summary_moe")["datasets"], same
for x in same["tensors"]:
    assert x["max_abs_diff"] == 0 and x["norm_diff"] == 0 and x["rel_norm_diff"] == 0, x
assert [e["drift"] for e in same["experts"]] == [[0, 0, 0, 0]], same["experts"]
mu = load("diff_moe_upcycled")
assert len(mu["experts"]) == 1 and all(v > 0 for v in mu["experts"][0]["drift"]), mu["experts"]
assert "/upcycle/blocks/01/cluster_sizes" in mu["only_in_b"] and "/teacher/cls_token" in mu["only_in_a"]
e = load("diff_edited")
assert e["only_in_a"] == ["/model/cls_token"] and e["only_in_b"] == ["/extra/x"], e
assert e["shape_mismatches"] == [{"name": "/model/head/bias", "shape_a": [10], "shape_b": [11]}], e
PY

# (b) The text views.
view text_summary "$moe"
[ "$status" = 0 ] || fail "text summary: exit $status"
stored_version=$("$py" -c "import h5py,sys; print(int(h5py.File(sys.argv[1], 'r').attrs['version']))" "$moe")
expect_text text_summary "$moe" "moe, step 2" "version $stored_version" "$(stat -c %s "$moe") bytes" "model.kind" "vit" \
  "moe.num_experts" "upcycle.method" "cluster" "non-default keys" "moe.aux_free_rate = 0.001" "embeddings" \
  "attention" "dense_ffn" "experts" "shared_expert" "routers" "norms_other" "blocks/01: E 4, k 2" \
  "AdamW moments" "2 steps" "EMA teacher" "RNG state" "data cursor" "epoch 0, position 16"
view text_summary_upcycled "$upcycled"
expect_text text_summary_upcycled "upcycle, step 0" "record present"
grep -q "^optimizer *absent" "$scratch/text_summary_upcycled.out" \
  || fail "text summary of the upcycled file: optimizer not 'absent'"
view text_config "$moe" --config
"$py" -c '
import sys, h5py
want = h5py.File(sys.argv[1], "r").attrs["config"]
want = want.decode() if isinstance(want, bytes) else want
got = open(sys.argv[2]).read()
sys.exit(0 if got.rstrip("\n") == want.rstrip("\n") else 1)' "$moe" "$scratch/text_config.out" \
  || fail "--config does not print the checkpoint's INI text"
view text_tensors --tensors "$scratch/nonfinite.h5"
expect_text text_tensors "/model/blocks/00/attn/qkv/weight" "/optimizer/v/head/weight" "/teacher/pos_embed" \
  "/state/moe/blocks/01/aux_free_bias" "NON-FINITE" "2 with NaN or Inf"
[ "$(grep -c NON-FINITE "$scratch/text_tensors.out")" = 2 ] || fail "text tensors: expected 2 NON-FINITE rows"
view text_experts --experts "$upcycled"
expect_text text_experts "blocks/01: E 4, k 2" "|w1|" "|w2|" "router row" "weight cosine" "upcycling record" \
  "cluster_sizes" "kmeans_objective" "svd_ranks" "svd_energy"
view text_experts_moe --experts "$moe"
expect_text text_experts_moe "aux-free bias"
view text_dense_experts --experts "$dense"
expect_text text_dense_experts "no MoE blocks"
view text_diff --diff "$moe" "$scratch/edited.h5"
expect_text text_diff "only in A:" "/model/cls_token" "only in B:" "/extra/x" "shape mismatches:" \
  "/model/head/bias: [10] in A, [11] in B" "expert drift" "blocks/01"
view text_diff_same --diff "$moe" "$moe"
expect_text text_diff_same "0 differ; 0 only in A, 0 only in B, 0 shape mismatches" "blocks/01    0 0 0 0"

# (d) --verify.
view verify_good --verify "$moe"
[ "$status" = 0 ] || fail "verify of a good file: exit $status"
expect_text verify_good "ok:"
head -c "$(($(stat -c %s "$moe") / 2))" "$moe" >"$scratch/truncated.h5"
view verify_truncated --verify "$scratch/truncated.h5"
[ "$status" = 1 ] || fail "verify of a truncated file: exit $status, expected 1"
expect_text verify_truncated "FAILED" "$scratch/truncated.h5"
view verify_truncated_json --verify --json "$scratch/truncated.h5"
"$py" -c '
import json, sys
o = json.load(open(sys.argv[1]))
assert o["ok"] is False and o["problems"] and sys.argv[2] in o["problems"][0], o' \
  "$scratch/verify_truncated_json.out" "$scratch/truncated.h5" || fail "verify --json of a truncated file"
[ "$status" = 1 ] || fail "verify --json of a truncated file: exit $status, expected 1"
cp "$moe" "$scratch/flipped.h5"
"$py" - "$scratch/flipped.h5" <<'PY' || fail "flipping a byte of /model/head/weight"
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    d = f["/model/head/weight"]
    offset = d.id.get_offset()
    if offset is None:  # chunked storage: the first chunk
        offset = d.id.get_chunk_info(0).byte_offset
    size = d.id.get_storage_size()
pos = offset + (size // 8) * 4 + 3  # the sign-and-exponent byte of a middle element (little-endian f32)
with open(sys.argv[1], "r+b") as f:
    f.seek(pos)
    b = f.read(1)
    f.seek(pos)
    f.write(bytes([b[0] ^ 0x40]))
PY
view verify_flipped --verify "$scratch/flipped.h5"
[ "$status" = 1 ] \
  || fail "verify of a file with a flipped data byte: exit $status, expected 1 (needs per-dataset checksums)"

# (e) Bad input and misuse.
printf 'this is not an HDF5 file\n' >"$scratch/text.h5"
"$py" -c 'import h5py, sys; h5py.File(sys.argv[1], "w")["x"] = [1, 2, 3]' "$scratch/foreign.h5"
for v in "" --tensors --experts --config; do
  expect_error "missing$v" 1 "$scratch/missing.h5" "no such file" -- $v "$scratch/missing.h5"
  expect_error "text$v" 1 "$scratch/text.h5" "not an HDF5 file" -- $v "$scratch/text.h5"
  expect_error "foreign$v" 1 "$scratch/foreign.h5" "not an upcycle checkpoint" -- $v "$scratch/foreign.h5"
done
expect_error diff_missing 1 "$scratch/missing.h5" -- --diff "$moe" "$scratch/missing.h5"
expect_error diff_foreign 1 "$scratch/foreign.h5" -- --diff "$scratch/foreign.h5" "$moe"
expect_error json_missing 1 "$scratch/missing.h5" -- --json "$scratch/missing.h5"
expect_error truncated 1 "$scratch/truncated.h5" -- --tensors "$scratch/truncated.h5"
view verify_missing --verify "$scratch/missing.h5"
[ "$status" = 1 ] || fail "verify of a missing file: exit $status, expected 1"
expect_error usage_unknown 2 "unknown option '--frobnicate'" -- --frobnicate "$moe"
expect_error usage_none 2 "no checkpoint given" --
expect_error usage_json_only 2 "no checkpoint given" -- --json
expect_error usage_diff_one 2 "--diff needs two checkpoints" -- --diff "$moe"
expect_error usage_two_files 2 "one checkpoint expected" -- "$moe" "$dense"
expect_error usage_two_views 2 "two views" -- --tensors --experts "$moe"
view help --help
[ "$status" = 0 ] || fail "--help: exit $status"
expect_text help "--tensors" "--experts" "--diff A B" "--verify" "--config" "--json" "Exit status" \
  "2 command-line misuse"

finish "all upcycle_inspect checks passed"
