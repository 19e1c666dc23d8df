#!/usr/bin/env bash
# Sets up and builds upcycle, then runs the default main job with 2 MPI ranks and plots its metrics:
# a small ViT trained densely on Fashion-MNIST, upcycled by Cluster-aware Upcycling and trained on
# as an MoE (configs/fashion_vit_upcycle_tiny.ini: stages dense,upcycle,moe; a few minutes on 2 cores).
#   launch/main_job.sh [CONFIG] [--section.key=value ...]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/launch/setup.sh"
config="${1:-$root/configs/fashion_vit_upcycle_tiny.ini}"
shift || true
cd "$root"
exec env NP="${NP:-2}" "$root/launch/train_local.sh" "$config" "$@"
