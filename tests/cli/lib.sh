# Shared pieces of the command-line tests in this folder. Each test sources it first:
#   . "$(dirname "$0")/lib.sh"
# It sets failures (the count of failed checks, 0), py (the Python with Debian's numpy and h5py)
# and cli_dir (this folder, absolute), and defines the functions below. The pieces that differ
# from test to test stay in the tests.
# shellcheck shell=bash
# shellcheck disable=SC2034  # py, cli_dir, status and args are read by the tests

failures=0
py=/usr/bin/python3
cli_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# cli_usage "ARG... [OPTIONAL_ARG...]" "$@": exits 2 with "usage: SCRIPT ARG..." on stderr unless
# the script got one argument per word of the usage line (a bracketed word may be left out).
cli_usage() {
  local usage=$1 words word required=0
  shift
  read -ra words <<<"$usage"
  for word in "${words[@]}"; do
    [[ $word == "["* ]] || required=$((required + 1))
  done
  if [ $# -lt "$required" ] || [ $# -gt "${#words[@]}" ]; then
    echo "usage: $0 $usage" >&2
    exit 2
  fi
}

# mpi_env: every process of the test runs one OpenMP thread (the suite shares the machine), and
# Open MPI's mpirun may start as root (as in a container).
mpi_env() {
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
}

# scratch_dir DIR: empties DIR (creating it; the test's files of an earlier run go) and sets
# scratch to its absolute path.
scratch_dir() {
  rm -rf "$1"
  mkdir -p "$1" || { echo "cannot create $1"; exit 1; }
  scratch=$(cd "$1" && pwd)
}

# fail MESSAGE...: reports a failed check as "FAIL: MESSAGE" and counts it; the test goes on.
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}

# The end of the summary line after a failure: where the files are to look at.
kept_note() {
  [ -n "${scratch:-}" ] && echo "files kept in $scratch"
}

# finish PASS_MESSAGE: ends the test. After any failure it prints "N check(s) failed" and exits 1,
# keeping the scratch directory; otherwise it removes the scratch directory (if the test made
# one), prints PASS_MESSAGE and exits 0.
finish() {
  if [ "$failures" -ne 0 ]; then
    local note
    note=$(kept_note)
    echo "$failures check(s) failed${note:+ ($note)}"
    exit 1
  fi
  [ -z "${scratch:-}" ] || rm -rf "$scratch"
  echo "$1"
  exit 0
}

# give_up REASON: ends the test at once, with exit 1, after a failure that leaves nothing more to
# check (REASON says what is missing).
give_up() {
  local note
  note=$(kept_note)
  echo "$failures check(s) failed ($1${note:+; $note})"
  exit 1
}

# record NAME COMMAND...: runs COMMAND with its stdout in $scratch/NAME.out and its stderr in
# $scratch/NAME.err; sets status to its exit status.
record() {
  local name=$1
  shift
  "$@" >"$scratch/$name.out" 2>"$scratch/$name.err"
  status=$?
}

# split_needles NEEDLE... -- ARGS...: sets the arrays needles (the words before "--") and args (the
# words after it), for a test's expect-style functions.
split_needles() {
  needles=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do
    needles+=("$1")
    shift
  done
  if [ $# -eq 0 ]; then
    echo "split_needles: no '--' between the needles and the arguments" >&2
    exit 2
  fi
  shift
  args=("$@")
}

# holds_all FILE WHAT NEEDLE...: every NEEDLE occurs in FILE (as a fixed string); each one that
# does not is a failure "WHAT lacks 'NEEDLE'; it was:" followed by FILE.
holds_all() {
  local file=$1 what=$2 needle
  shift 2
  for needle in "$@"; do
    grep -qF -- "$needle" "$file" || { fail "$what lacks '$needle'; it was:"; cat "$file"; }
  done
}

# write_ini FILE SECTION.KEY=VALUE...: writes an INI file with one "[SECTION]" per section, in the
# order of their first setting, each with its "KEY = VALUE" lines. A later setting of a key
# replaces the earlier one where it stands (the config reader refuses a key set twice).
write_ini() {
  local file=$1 setting key i section
  local keys=() values=() sections=()
  shift
  for setting in "$@"; do
    key=${setting%%=*}
    if [ "$key" = "$setting" ] || [[ $key != ?*.?* ]]; then
      echo "write_ini: '$setting' is not SECTION.KEY=VALUE" >&2
      exit 2
    fi
    for i in "${!keys[@]}"; do
      if [ "${keys[i]}" = "$key" ]; then
        values[i]=${setting#*=}
        continue 2
      fi
    done
    keys+=("$key")
    values+=("${setting#*=}")
  done
  for key in "${keys[@]}"; do
    section=${key%%.*}
    [[ " ${sections[*]} " == *" $section "* ]] || sections+=("$section")
  done
  for section in "${sections[@]}"; do
    echo "[$section]"
    for i in "${!keys[@]}"; do
      [ "${keys[i]%%.*}" != "$section" ] || echo "${keys[i]#*.} = ${values[i]}"
    done
  done >"$file"
}

# tiny_vit_ini FILE STAGES RUN_DIR [SECTION.KEY=VALUE...]: writes the tiny ViT of
# tests/support/tiny_configs.hpp (tiny_vit_ini(3): 2 blocks of width 16, Fashion-MNIST in 7x7
# patches, 3 steps of batch 8, no warmup, no clipping, a checkpoint only at the end, a metrics event
# every step, no progress line) with run.stages = STAGES and run.dir = RUN_DIR (left at its
# default when RUN_DIR is empty). Each further setting replaces the value of its key or adds it.
tiny_vit_ini() {
  local file=$1 stages=$2 dir=$3
  shift 3
  local run_settings=(run.stages="$stages" run.seed=7)
  [ -z "$dir" ] || run_settings+=(run.dir="$dir")
  write_ini "$file" "${run_settings[@]}" model.kind=vit model.width=16 model.depth=2 model.heads=2 model.ffn_width=32 \
    model.patch_size=7 train.steps=3 train.batch_size=8 train.lr=0.003 train.min_lr=0.0003 train.warmup_steps=0 \
    train.grad_clip=0 train.eval_every=0 data.dataset=fashion_mnist checkpoint.every=0 log.progress=off log.every=1 \
    "$@"
}

# tiny_upcycled_ini FILE STAGES RUN_DIR [SECTION.KEY=VALUE...]: the tiny ViT above with block 1 of
# 2 upcycled by method cluster (3000 calibration tokens) into E = 4 experts, top-2, trained for 2
# MoE steps.
tiny_upcycled_ini() {
  local file=$1 stages=$2 dir=$3
  shift 3
  tiny_vit_ini "$file" "$stages" "$dir" moe.num_experts=4 moe.top_k=2 upcycle.method=cluster \
    upcycle.calib_tokens=3000 upcycle.kmeans_init_sample=512 train.moe_steps=2 "$@"
}
