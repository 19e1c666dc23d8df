#!/usr/bin/env bash
# Trains on this machine with mpirun, then plots the run's metrics.
#
#   launch/train_local.sh CONFIG.ini [--section.key=value ...]
#   NP=4 launch/train_local.sh configs/fortunes_gpt_tiny.ini --train.steps=50 --run.dir=runs/try
#
# Builds build/src/upcycle_train first when it is missing (BUILD_DIR overrides the build
# directory), runs `mpirun --oversubscribe -np ${NP:-2} upcycle_train CONFIG [overrides]`, and then
# launch/plot_metrics.py on the run directory (the config's [run] dir, or a --run.dir override),
# which writes RUN_DIR/plots/*.png. Exits with upcycle_train's status (0 ok, 1 run-time failure,
# 2 usage or config error); a plotting problem is reported but does not change it.
#
# Open MPI refuses to run as root unless told twice, so the two OMPI_ALLOW_RUN_AS_ROOT variables
# are set only when running as root. Each rank gets OMP_NUM_THREADS=1 unless the caller set it:
# NP ranks with a thread per core each would oversubscribe the cores NP times. mpirun runs with
# --quiet: upcycle_train prints its own error once and ends the job with MPI_Abort, and --quiet
# keeps Open MPI's "MPI_ABORT was invoked ..." banner from burying that message.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${BUILD_DIR:-$root/build}"
bin="$build_dir/src/upcycle_train"
np="${NP:-2}"

if [[ $# -lt 1 || "$1" == -h || "$1" == --help ]]; then
  echo "usage: [NP=2] [BUILD_DIR=build] $(basename "$0") CONFIG.ini [--section.key=value ...]" >&2
  exit 2
fi
if [[ ! "$np" =~ ^[1-9][0-9]*$ ]]; then
  echo "train_local.sh: NP must be a positive integer, got '$np'" >&2
  exit 2
fi
config="$1"
shift
if [[ ! -f "$config" ]]; then
  echo "train_local.sh: config '$config' not found" >&2
  exit 2
fi

if [[ ! -x "$bin" ]]; then
  echo "train_local.sh: building $bin"
  cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$build_dir" -j "$(nproc)" --target upcycle_train
fi

# The run directory upcycle_train will use: ask it (the resolved config honours the overrides).
run_dir="$("$bin" "$config" "$@" --print-config | sed -n '/^\[run\]/,/^\[/{s/^dir = //p}' | head -n 1)"

if [[ $(id -u) -eq 0 ]]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

status=0
mpirun --quiet --oversubscribe -np "$np" "$bin" "$config" "$@" || status=$?

if [[ -n "$run_dir" && -f "$run_dir/metrics.jsonl" ]]; then
  if [[ -x /usr/bin/python3 ]]; then
    /usr/bin/python3 "$root/launch/plot_metrics.py" "$run_dir" || echo "train_local.sh: plotting failed" >&2
  else
    echo "train_local.sh: /usr/bin/python3 not found: no plots" >&2
  fi
fi
exit "$status"
