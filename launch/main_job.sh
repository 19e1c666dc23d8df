#!/usr/bin/env bash
# Sets up and builds upcycle, then runs the default main job: a small ViT trained densely on
# Fashion-MNIST with 2 MPI ranks (about 5 minutes on 2 cores), and plots its metrics.
#   launch/main_job.sh [CONFIG] [--section.key=value ...]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/launch/setup.sh"
config="${1:-$root/configs/fashion_vit_tiny.ini}"
shift || true
cd "$root"
exec env NP="${NP:-2}" "$root/launch/train_local.sh" "$config" "$@"
