#!/usr/bin/env bash
# Runs a program on this machine as N MPI ranks:
#   launch/mpirun_local.sh N PROGRAM [ARGS...]
#   e.g. launch/mpirun_local.sh 2 build/src/upcycle_train configs/smoke.ini
# --oversubscribe lets N exceed the number of cores (CI boxes have 2). Open MPI refuses to run
# as root unless told twice, which containers and CI runners usually are, so the two variables
# are set only in that case. Every rank gets OMP_NUM_THREADS=1 unless the caller chose a value,
# since N ranks with one OpenMP thread per core each would oversubscribe the cores N times.
# --quiet (Open MPI's orte_execute_quiet) drops mpirun's own help and error banners, among them
# the "MPI_ABORT was invoked ..." block after a program that reports its error and aborts the
# job, like upcycle_train; the exit status stays the program's. Since it also silences mpirun's
# complaint about a program it cannot start (exit 132 without a word), the program is checked here.
set -euo pipefail

if [[ $# -lt 2 || ! "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $(basename "$0") N PROGRAM [ARGS...]   (N = number of ranks, >= 1)" >&2
  exit 2
fi
ranks="$1"
shift

if [[ $(id -u) -eq 0 ]]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

if ! command -v "$1" >/dev/null 2>&1; then
  echo "$(basename "$0"): program '$1' not found or not executable" >&2
  exit 2
fi

exec mpirun --quiet --oversubscribe -np "$ranks" "$@"
