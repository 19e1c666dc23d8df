#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite (unit, golden, mpi; gpu tests skip without a GPU).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/launch/setup.sh"
cd "${BUILD_DIR:-$root/build}"
# MPI ranks and OpenMP threads share 2 cores in CI: one thread per process keeps runs predictable.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
ctest --output-on-failure -j "${CTEST_JOBS:-1}" "$@"
