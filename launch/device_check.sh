#!/usr/bin/env bash
# The GPU device check: runs on a machine with one NVIDIA GPU (H100/H200, CUDA 13 driver, nvcc,
# python3 with PyTorch for the GPU, compute-sanitizer) and no Debian -dev packages, no MPI, no
# network. It uses the bundle that launch/device_bundle.sh built on a development machine (carry
# build-device-bundle.tar.xz, or the unpacked build-device-bundle/, to the GPU machine with the
# working tree), and within about 8 minutes:
#   1. records the GPU, driver, toolkit and PyTorch;
#   2. runs the gpu tests (the cross-backend op suite, autograd on CUDA vs CPU, 5-step training
#      parity, warm-step allocations and host waits, cluster-aware upcycling on the GPU vs the CPU);
#   2b. the NCCL communicator, with this machine's libnccl.so.2 (the bundle carries none: it is
#      200 MB; programs load it at run time, from UPCYCLE_NCCL_LIBRARY set below): its one-rank gpu
#      test, bench_alltoall --backend nccl, and an attempt at two ranks on the one GPU with
#      NCCL_MULTI_RANK_GPU_ENABLE=1. There is no mpirun here, so the two ranks are two processes that
#      test_nccl_communicator --two-ranks forks itself (NCCL's unique id goes through a pipe). Its
#      outcome -- works, "Duplicate GPU detected" (NCCL before 2.30 refuses two ranks on one GPU), or
#      another error -- is reported (status "reported"), never counted as a failure;
#   3. runs them again under compute-sanitizer: memcheck for all, racecheck for the op suite (the
#      kernels that use shared memory are all in it);
#   4. runs bench_train --device cuda against PyTorch on the same GPU (the main-job ViT and the
#      ViT-B/16 shape) and bench_ops --device cuda.
# It writes OUTDIR/device_check.log (everything printed) and OUTDIR/device_check.json (one record
# per step: name, status, exit code, seconds, the last lines of output). Statuses: passed, failed,
# timeout, skipped (exit 77, or a precondition missing here: no NCCL library), not_run (the time
# budget was spent), reported (an outcome to read, not a verdict).
#   launch/device_check.sh OUTDIR        BUNDLE=path overrides build-device-bundle; PYTHON=path the
#                                        python3 with PyTorch (default: python3 on the PATH)
# Exit status: 0 when every step passed, 1 when one failed, 77 when there is no usable GPU (the
# JSON says why), 2 for a usage error (no OUTDIR, no bundle).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-}"
[[ -n "$out" ]] || { echo "usage: launch/device_check.sh OUTDIR" >&2; exit 2; }
mkdir -p "$out"
bundle="${BUNDLE:-$root/build-device-bundle}"
# The packed bundle (launch/device_bundle.sh writes both): unpacked beside itself when the folder is
# missing.
if [[ ! -d "$bundle" && -f "$bundle.tar.xz" ]]; then
  tar -C "$(dirname "$bundle")" -xJf "$bundle.tar.xz" || { echo "device_check: cannot unpack $bundle.tar.xz" >&2; exit 2; }
fi
log="$out/device_check.log"
results="$out/.results.tsv"
: >"$log"
: >"$results"
start=$(date +%s)
say() { echo "$*" | tee -a "$log"; }

# One JSON document from the TSV of step records (python3 is on the GPU machine: PyTorch needs it).
write_json() {
  python3 - "$results" "$out/device_check.json" "$1" "$2" <<'PY'
import json, sys
rows = []
for line in open(sys.argv[1]):
    name, status, code, secs, tail = line.rstrip("\n").split("\t", 4)
    rows.append({"name": name, "status": status, "exit_code": int(code), "seconds": float(secs),
                 "tail": tail.replace("\\n", "\n")})
doc = {"status": sys.argv[3], "reason": sys.argv[4], "steps": rows}
json.dump(doc, open(sys.argv[2], "w"), indent=2)
PY
}

finish() {  # status reason exit-code
  write_json "$1" "$2"
  say "device_check: $1${2:+ ($2)}; $(($(date +%s) - start)) s; log $log, results $out/device_check.json"
  exit "$3"
}

say "device_check: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv >>"$log" 2>&1
else
  say "device_check: nvidia-smi is not installed"
fi
{ nvcc --version | tail -n 2; compute-sanitizer --version | head -n 2; } >>"$log" 2>&1
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' >>"$log" 2>&1

[[ -x "$bundle/bin/test_backend_ops" ]] ||
  { say "device_check: no bundle at $bundle: run launch/device_bundle.sh on a build machine and carry it"; finish error "no bundle" 2; }
cat "$bundle/BUILD_INFO" >>"$log" 2>&1

# The bundle's programs run under the bundle's own loader and C/C++ runtimes; cuBLAS and the CUDA
# driver come from this machine (its toolkit, or the nvidia-* wheels PyTorch installed).
libdirs="$bundle/lib"
add_dir_of() {  # the directory of the first file matching $1 (a path or glob), if any
  [[ -n "$1" ]] || return 0
  local f
  f=$(ls -d $1 2>/dev/null | head -n 1)
  if [[ -n "$f" ]]; then libdirs="$libdirs:$(dirname "$f")"; fi
}
add_dir_of "$(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 / {print $NF; exit}')"
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64; do
  add_dir_of "$d/libcublas.so.13"
done
add_dir_of "$(ldconfig -p 2>/dev/null | awk '/libcublas\.so\.13 / {print $NF; exit}')"
wheel=$(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null)
[[ -n "$wheel" ]] && add_dir_of "$wheel/libcublas.so.1*"
# cuSOLVER 12 for test_cluster_upcycling_cuda (with the cuSPARSE and nvJitLink it loads, which lie
# beside it): the toolkit's or the system's, whichever is found.
add_dir_of "/usr/local/cuda/lib64/libcusolver.so.12 /usr/local/cuda/targets/x86_64-linux/lib/libcusolver.so.12 \
/usr/local/cuda-13*/lib64/libcusolver.so.12 $(ldconfig -p 2>/dev/null | awk '/libcusolver\.so\.12 / {print $NF; exit}')"
# NCCL for the NCCL steps: the toolkit's, the system's, or the nvidia-nccl wheel PyTorch installed.
nccl_lib=""
for f in "$(ldconfig -p 2>/dev/null | awk '/libnccl\.so\.2 / {print $NF; exit}')" /usr/local/cuda/lib64/libnccl.so.2 \
  /usr/local/cuda/targets/x86_64-linux/lib/libnccl.so.2 /usr/lib/x86_64-linux-gnu/libnccl.so.2 \
  "$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib", "libnccl.so.2"))' 2>/dev/null)"; do
  if [[ -n "$f" && -f "$f" ]]; then nccl_lib=$f; break; fi
done
if [[ -n "$nccl_lib" ]]; then
  export UPCYCLE_NCCL_LIBRARY="$nccl_lib"
  say "device_check: NCCL library $nccl_lib"
else
  say "device_check: no libnccl.so.2 found (toolkit, ldconfig, nvidia-nccl wheel): the NCCL steps are skipped"
fi
say "device_check: library path $libdirs"
# A bundle program through the bundle's loader: "${run[@]}" NAME ARGS... (an array, not a function,
# so that `timeout` and compute-sanitizer can start it).
run=("$bundle/lib/ld-linux-x86-64.so.2" --library-path "$libdirs")
bin() { local p=$1; shift; "${run[@]}" "$bundle/bin/$p" "$@"; }

# step NAME TIMEOUT COMMAND...: runs, records status (passed / failed / timeout / skipped /
# not_run). The whole check keeps within BUDGET seconds (default 450: 8 minutes with margin).
budget="${BUDGET:-450}"
failed=0
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((budget - ($(date +%s) - start)))
  ((limit > left)) && limit=$left
  if ((limit < 15)); then
    say "=== $name: not run (the time budget of ${budget}s is spent)"
    printf '%s\tnot_run\t0\t0\t\n' "$name" >>"$results"
    failed=1
    return
  fi
  say "=== $name (limit ${limit}s)"
  local t0=$(date +%s) code
  timeout --kill-after=10 "$limit" "$@" >"$out/$name.out" 2>&1
  code=$?
  cat "$out/$name.out" >>"$log"
  local status=passed
  if ((code == 124 || code == 137)); then status=timeout; elif ((code == 77)); then status=skipped; elif ((code != 0)); then status=failed; fi
  [[ $status == passed || $status == skipped ]] || failed=1
  local tail
  tail=$(tail -n 15 "$out/$name.out" | tr '\t' ' ' | awk '{printf "%s\\n", $0}')
  printf '%s\t%s\t%d\t%d\t%s\n' "$name" "$status" "$code" "$(($(date +%s) - t0))" "$tail" >>"$results"
  say "=== $name: $status (exit $code, $(($(date +%s) - t0)) s)"
}

# note NAME STATUS TEXT: a record for a step that is not run as such (a missing precondition, or an
# outcome to report); only status "failed" fails the check.
note() {
  say "=== $1: $2${3:+ ($3)}"
  printf '%s\t%s\t0\t0\t%s\n' "$1" "$2" "$3" >>"$results"
  [[ $2 != failed ]] || failed=1
}

# Two NCCL ranks on this one GPU, with NCCL's multi-rank sharing asked for: the outcome is reported.
nccl_two_ranks_one_gpu() {
  local name=nccl_two_ranks_one_gpu t0 code outcome
  say "=== $name (limit 120s; reported, never a failure)"
  t0=$(date +%s)
  timeout --kill-after=10 120 env NCCL_MULTI_RANK_GPU_ENABLE=1 NCCL_DEBUG=WARN "${run[@]}" \
    "$bundle/bin/test_nccl_communicator" --two-ranks --attempt --limit-s=90 >"$out/$name.out" 2>&1
  code=$?
  cat "$out/$name.out" >>"$log"
  if ((code == 0)); then outcome="works: two ranks on one GPU passed every check"
  elif ((code == 3)) || grep -q "Duplicate GPU" "$out/$name.out"; then outcome="Duplicate GPU detected"
  elif ((code == 124 || code == 137)); then outcome="timed out"
  else outcome="other error (exit $code): $(grep -m1 -E 'error|FAILED' "$out/$name.out" | tr '\t' ' ')"
  fi
  say "=== $name: np=2 on one GPU with NCCL_MULTI_RANK_GPU_ENABLE=1: $outcome ($(($(date +%s) - t0)) s)"
  local tail
  tail=$( { echo "outcome: $outcome"; tail -n 14 "$out/$name.out"; } | tr '\t' ' ' | awk '{printf "%s\\n", $0}')
  printf '%s\treported\t%d\t%d\t%s\n' "$name" "$code" "$(($(date +%s) - t0))" "$tail" >>"$results"
}

# The bundle must start here, and see a GPU (the gpu tests exit 77, naming the CUDA error, when
# they do not).
bin test_backend_ops --gtest_list_tests >"$out/probe.out" 2>&1
probe=$?
cat "$out/probe.out" >>"$log"
if ((probe != 0 && probe != 77)); then
  say "device_check: the bundle's programs do not start on this machine (see $out/probe.out)"
  finish error "bundle does not start" 1
fi
step gpu_tests_probe 60 "${run[@]}" "$bundle/bin/test_step_allocations_cuda" --gtest_filter='*Dense*'
if grep -q $'^gpu_tests_probe\tskipped' "$results"; then
  finish no_gpu "$(head -n 1 "$out/gpu_tests_probe.out")" 77
fi

# 2. The gpu tests.
for t in test_backend_ops:150 test_autograd_cuda:90 test_training_parity_cuda:90 test_step_allocations_cuda:60 \
  test_cluster_upcycling_cuda:120; do
  step "${t%%:*}" "${t##*:}" "${run[@]}" "$bundle/bin/${t%%:*}"
done
# 2b. The NCCL communicator on this GPU (see the top): one rank against SelfCommunicator, the
# all-to-all bandwidth (nccl-tests' algbw and busbw; busbw is 0 with one rank, so the ratio to the
# raw ncclSend/ncclRecv peer is the number to read), and two ranks on the one GPU.
if [[ -n "$nccl_lib" ]]; then
  step test_nccl_communicator 120 "${run[@]}" "$bundle/bin/test_nccl_communicator"
  step bench_alltoall_nccl 60 "${run[@]}" "$bundle/bin/bench_alltoall" --backend nccl --max 16777216 --iters 50 \
    --min-iters 5
  nccl_two_ranks_one_gpu
else
  for s in test_nccl_communicator bench_alltoall_nccl nccl_two_ranks_one_gpu; do
    note "$s" skipped "no libnccl.so.2 on this machine"
  done
fi
# 3. Under compute-sanitizer. racecheck instruments every shared-memory access and is slow: it runs
# on the kernels that use shared memory (block-wide reductions, the tiled transpose, block sorts).
step memcheck_backend_ops 150 compute-sanitizer --error-exitcode 9 --tool memcheck \
  "${run[@]}" "$bundle/bin/test_backend_ops"
shared_memory_kernels='softmax*,log_softmax*,layernorm*,rmsnorm*,reduce,sum_squares,permute,cross_entropy*,topk,argsort'
shared_memory_kernels+=',normalize_rows'
step racecheck_backend_ops 120 env UPCYCLE_OP_FILTER="$shared_memory_kernels" compute-sanitizer --error-exitcode 9 \
  --tool racecheck "${run[@]}" "$bundle/bin/test_backend_ops" --gtest_filter='BackendOps.EveryKernel*'
step memcheck_autograd 90 compute-sanitizer --error-exitcode 9 --tool memcheck "${run[@]}" "$bundle/bin/test_autograd_cuda"
step memcheck_training_parity 90 compute-sanitizer --error-exitcode 9 --tool memcheck "${run[@]}" \
  "$bundle/bin/test_training_parity_cuda"
# 4. Benchmarks against PyTorch on the same GPU (TF32 off, so both compute in f32).
py="${PYTHON:-$(command -v python3)}"
# Peak dense f32 (non-tensor-core) TFLOP/s for the model FLOP utilisation: H100/H200 SXM 67.
peak="${PEAK_TFLOPS:-67}"
step bench_train_cuda 90 "${run[@]}" "$bundle/bin/bench_train" --device cuda --python "$py" --torch-script "$bundle/src/bench/bench_train_torch.py" \
  --steps 30 --warmup 5 --rounds 2 --peak-tflops "$peak"
step bench_train_cuda_vit_b16 120 "${run[@]}" "$bundle/bin/bench_train" --device cuda --shape vit-b16 --python "$py" \
  --torch-script "$bundle/src/bench/bench_train_torch.py" --steps 10 --warmup 3 --rounds 1 --peak-tflops "$peak"
step bench_ops_cuda 90 "${run[@]}" "$bundle/bin/bench_ops" --device cuda --python "$py" --torch-script "$bundle/src/bench/bench_ops_torch.py" --iters 20

((failed)) && finish failed "a step failed (see the log)" 1
finish passed "" 0
