#!/usr/bin/env bash
# Builds, on this machine, what the GPU device check (launch/device_check.sh) runs on a machine that
# has an NVIDIA GPU but no Debian -dev packages, no MPI and no network: the gpu test programs and the
# benchmarks, with every shared library they need except the CUDA driver, cuBLAS and cuSOLVER (which
# come with the GPU machine's toolkit), plus this machine's dynamic loader, so the programs run there
# with the C and C++ runtimes they were built against whatever that machine's glibc is.
#   launch/device_bundle.sh [OUT]      (default build-device-bundle)
# It also packs OUT into OUT.tar.xz, which is what a device run carries (it must stay under 64 MiB;
# the programs each link the CUDA kernels, so the unpacked folder is larger): launch/device_check.sh
# unpacks it when the folder is not there.
# Configuration: no MPI (one process), no OpenBLAS GEMMs (the CPU oracle uses plain loops; only
# test_cluster_upcycling_cuda loads OpenBLAS, for the LAPACK path it compares with: the packed
# bundle is 20 MiB with it), no -march=native (the GPU machine's CPU may differ), CUDA for sm_90 +
# PTX.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/build-device-bundle}"
build="${BUILD_DIR:-$root/build-device}"
jobs="${JOBS:-$(nproc)}"
programs=(test_backend_ops test_autograd_cuda test_training_parity_cuda test_step_allocations_cuda test_nccl_communicator
  test_cluster_upcycling_cuda bench_train bench_ops bench_alltoall)

command -v nvcc >/dev/null || { echo "device_bundle: nvcc is not on the PATH: the bundle needs the CUDA backend" >&2; exit 2; }
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DUPCYCLE_CUDA=ON -DUPCYCLE_WITH_MPI=OFF \
  -DUPCYCLE_OPENBLAS=OFF -DUPCYCLE_NATIVE=OFF >/dev/null
cmake --build "$build" -j "$jobs" --target "${programs[@]}"

rm -rf "$out"
mkdir -p "$out/bin" "$out/lib" "$out/src/bench"
for p in "${programs[@]}"; do
  f=$(find "$build" -type f -name "$p" -perm -u+x | head -n 1)
  [[ -n "$f" ]] || { echo "device_bundle: $p was not built" >&2; exit 1; }
  cp "$f" "$out/bin/"
  strip --strip-unneeded "$out/bin/$p"
done
# The PyTorch peers the benchmarks run (found next to the binary's source dir at run time).
cp "$root"/src/bench/*_torch.py "$out/src/bench/"

# Every library the programs load, except the CUDA driver and toolkit libraries (the GPU machine has
# its own, matching its driver; cuSOLVER and what it loads, cuSPARSE and nvJitLink, are 300 MB) --
# including glibc and the loader, used through the loader below.
# NCCL is not among them: the programs dlopen it at run time, and device_check.sh finds the GPU
# machine's own (its 200 MB would not fit).
for p in "${programs[@]}"; do ldd "$out/bin/$p"; done | awk '/=>/ {print $3} /ld-linux/ {print $1}' | sort -u |
  while read -r lib; do
    [[ -f "$lib" ]] || continue
    case "$(basename "$lib")" in
      libcuda.so* | libcublas* | libcudart* | libnvidia* | libnccl* | \
        libcusolver* | libcusparse* | libnvJitLink* ) continue ;;
    esac
    cp -L "$lib" "$out/lib/"
  done
loader=$(ls "$out"/lib/ld-linux-x86-64.so.* 2>/dev/null | head -n 1)
[[ -n "$loader" ]] || { echo "device_bundle: no dynamic loader found among the libraries" >&2; exit 1; }
[[ "$loader" == "$out/lib/ld-linux-x86-64.so.2" ]] || mv "$loader" "$out/lib/ld-linux-x86-64.so.2"
{
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) from $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "nvcc: $(nvcc --version | tail -n 1)"
  echo "glibc: $(ldd --version | head -n 1)"
} >"$out/BUILD_INFO"
size=$(du -sm "$out" | cut -f1)
echo "device_bundle: $out ($size MiB): ${programs[*]}"
archive="$out.tar.xz"
tar -C "$(dirname "$out")" -cJf "$archive" "$(basename "$out")"
packed=$(( ($(stat -c %s "$archive") + 1048575) / 1048576 ))
echo "device_bundle: $archive ($packed MiB): carry it to the GPU machine"
if ((packed > 64)); then
  echo "device_bundle: the packed bundle is over the 64 MiB a device run can carry" >&2
  exit 1
fi
