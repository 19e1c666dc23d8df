#!/usr/bin/env bash
# Sets up and builds upcycle, then runs the default main job with 2 MPI ranks and plots its metrics:
# a small ViT trained densely on Fashion-MNIST, upcycled by Cluster-aware Upcycling, trained on
# as an MoE with EESD and evaluated on the test split (configs/fashion_vit_upcycle_tiny.ini: stages
# dense,upcycle,moe,eval; a few minutes on 2 cores).
#   launch/main_job.sh [CONFIG] [--section.key=value ...]   (CONFIG defaults to the main job)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/launch/setup.sh"
# The first argument is the config unless it is an override (--section.key=value).
config="$root/configs/fashion_vit_upcycle_tiny.ini"
if [[ $# -gt 0 && "$1" != --* ]]; then
  config="$1"
  shift
fi
cd "$root"
# Running the main job again starts it over in its run directory (run.overwrite = true), unless
# the arguments say otherwise: --checkpoint.resume=auto continues it, --run.overwrite=false keeps
# upcycle_train's refusal of a fresh run over existing checkpoints.
start_over=(--run.overwrite=true)
for a in "$@"; do
  case "$a" in --checkpoint.resume=* | --run.overwrite=*) start_over=() ;; esac
done
exec env NP="${NP:-2}" "$root/launch/train_local.sh" "$config" "${start_over[@]}" "$@"
