#!/usr/bin/env bash
# Sets up a Debian machine for upcycle and builds it (release). Idempotent: packages already
# present are skipped by apt, and the build directory is reused.
#   launch/setup.sh            install + configure + build
#   BUILD_DIR=... launch/setup.sh
#   UPCYCLE_SKIP_APT=1 launch/setup.sh   build only (packages already installed)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${BUILD_DIR:-$root/build}"
jobs="${JOBS:-$(nproc)}"

packages=(
  build-essential cmake pkg-config
  libopenmpi-dev openmpi-bin
  libhdf5-dev hdf5-tools
  libboost-program-options-dev libboost-math-dev
  libopenblas-dev liblapacke-dev libfaiss-dev
  libgtest-dev zlib1g-dev
  dataset-fashion-mnist fortunes
  python3-torch python3-h5py python3-numpy python3-scipy python3-matplotlib
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ "${UPCYCLE_SKIP_APT:-0}" != 1 && ${#missing[@]} -gt 0 ]]; then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The CUDA backend is built whenever the toolkit is here (it compiles and links without a GPU), so
# that a CUDA compile error fails the build like any other.
cuda_args=()
nvcc_path="$(command -v nvcc || true)"
[[ -z "$nvcc_path" && -x /usr/local/cuda/bin/nvcc ]] && nvcc_path=/usr/local/cuda/bin/nvcc
[[ -n "$nvcc_path" ]] && cuda_args=(-DCMAKE_CUDA_COMPILER="$nvcc_path")

cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release "${cuda_args[@]}"
cmake --build "$build_dir" -j "$jobs"
echo "setup: built in $build_dir"
