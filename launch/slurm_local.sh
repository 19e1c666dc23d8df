#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the slurm test and for trying the batch scripts:
# munged, slurmctld and slurmd on localhost with slurm/local/slurm.conf.in (and two stand-in GPUs
# from slurm/local/gres.conf that Slurm only counts), everything (key, config, state, logs,
# sockets) under one scratch directory, nothing under /etc or /run.
#
#   launch/slurm_local.sh start [DIR]   start the daemons; prints the line to source for the clients
#   launch/slurm_local.sh stop [DIR]    cancel the cluster's jobs, stop exactly the daemons started
#   launch/slurm_local.sh status [DIR]  which of them run; exit 0 when all three do
#
# DIR defaults to $SLURM_LOCAL_DIR, else /tmp/upcycle-slurm-local. Clients (sbatch, srun, squeue,
# scancel, scontrol) reach this cluster with SLURM_CONF=DIR/slurm.conf (`source DIR/env`).
# Needs root (slurmd starts job steps as the submitting user) and the Debian packages slurm-wlm
# and munge (apt-get install -y slurm-wlm munge); it installs nothing.
# The ports are two free TCP ports chosen at start (SLURM_LOCAL_PORTS="CTLD SLURMD" fixes them),
# the CPU count is this machine's but at least 2 (SLURM_LOCAL_CPUS overrides), so two clusters in
# two directories can run side by side.
# The daemons run in the foreground of their own sessions, so their PIDs are the ones started
# here; `stop` signals those PIDs only (after checking each is still the program it was), never
# a process found by name.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
template="$root/slurm/local/slurm.conf.in"
gres="$root/slurm/local/gres.conf"

say() { echo "slurm_local: $*"; }
die() {
  echo "slurm_local: $*" >&2
  exit 1
}

usage() {
  echo "usage: $(basename "$0") start|stop|status [DIR]   (DIR default \$SLURM_LOCAL_DIR or /tmp/upcycle-slurm-local)" >&2
  exit 2
}
[[ $# -ge 1 && $# -le 2 ]] || usage
action=$1
dir=${2:-${SLURM_LOCAL_DIR:-/tmp/upcycle-slurm-local}}
pids_file="$dir/pids"

# The PIDs recorded at start, as "name pid" lines (munged, slurmctld, slurmd).
recorded() {
  if [[ -f "$pids_file" ]]; then cat "$pids_file"; fi
}
# Whether PID still runs the program NAME (a PID reused by another program does not count).
runs_as() {
  local name=$1 pid=$2
  [[ -r "/proc/$pid/comm" ]] && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]]
}

stop_cluster() {
  [[ -f "$pids_file" ]] || {
    say "nothing recorded in $pids_file: nothing to stop"
    return 0
  }
  # Jobs first, while slurmctld still runs: their steps are separate processes (slurmstepd) that
  # the daemons do not take down with them.
  if [[ -f "$dir/slurm.conf" ]] && command -v squeue >/dev/null; then
    local jobs=()
    mapfile -t jobs < <(SLURM_CONF="$dir/slurm.conf" timeout 10 squeue -h -o %A 2>/dev/null || true)
    if [[ ${#jobs[@]} -gt 0 ]]; then
      say "cancelling job(s) ${jobs[*]}"
      SLURM_CONF="$dir/slurm.conf" timeout 10 scancel --signal=KILL --full "${jobs[@]}" 2>/dev/null || true
      SLURM_CONF="$dir/slurm.conf" timeout 10 scancel "${jobs[@]}" 2>/dev/null || true
      for _ in $(seq 1 30); do
        [[ -z "$(SLURM_CONF="$dir/slurm.conf" timeout 5 squeue -h -t R,CG -o %A 2>/dev/null || true)" ]] && break
        sleep 1
      done
    fi
  fi
  # Reverse order of start: slurmd, slurmctld, munged.
  local name pid
  while read -r name pid; do
    [[ -n "$pid" ]] || continue
    if runs_as "$name" "$pid"; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do
        runs_as "$name" "$pid" || break
        sleep 0.2
      done
      if runs_as "$name" "$pid"; then
        say "$name ($pid) did not stop on SIGTERM: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
      fi
      say "stopped $name ($pid)"
    fi
  done < <(recorded | tac)
  rm -f "$pids_file"
}

status_cluster() {
  local name pid up=0
  while read -r name pid; do
    if runs_as "$name" "$pid"; then
      say "$name runs ($pid)"
      up=$((up + 1))
    else
      say "$name ($pid) is not running"
    fi
  done < <(recorded)
  [[ $up -eq 3 ]]
}

# Two free TCP ports on localhost, held open together so they differ.
free_ports() {
  /usr/bin/python3 - <<'EOF'
import socket
held = []
for _ in range(2):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    held.append(s)
print(" ".join(str(s.getsockname()[1]) for s in held))
EOF
}

# Waits until COMMAND succeeds (up to SECONDS), else fails with WHAT and the log to read.
wait_for() {
  local seconds=$1 what=$2 log=$3
  shift 3
  local i
  for ((i = 0; i < seconds * 5; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "slurm_local: $what did not come up within ${seconds}s; last lines of $log:" >&2
  tail -n 20 "$log" >&2 || true
  stop_cluster
  exit 1
}

# Starts a daemon in the foreground of its own session, output to LOG, and records NAME PID.
start_daemon() {
  local name=$1 log=$2
  shift 2
  setsid "$@" </dev/null >>"$log" 2>&1 &
  echo "$name $!" >>"$pids_file"
}

start_cluster() {
  [[ $(id -u) -eq 0 ]] || die "needs root (slurmd starts job steps as the submitting user)"
  local p
  for p in munged munge unmunge slurmctld slurmd sinfo scontrol; do
    command -v "$p" >/dev/null || die "$p not found: install the Debian packages slurm-wlm and munge"
  done
  [[ -f "$template" && -f "$gres" ]] || die "$template or $gres missing"
  if [[ -f "$pids_file" ]]; then
    if status_cluster >/dev/null; then die "a cluster already runs from $dir (stop it first)"; fi
    stop_cluster
  fi
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  pids_file="$dir/pids"
  rm -rf "$dir/munge" "$dir/state"
  mkdir -p "$dir/munge" "$dir/state/ctld" "$dir/state/slurmd" "$dir/state/tmp"
  chmod 0700 "$dir/munge" "$dir/state"
  : >"$pids_file"

  local host cpus mem_mb ports ctld_port slurmd_port
  host=$(hostname -s)
  cpus=${SLURM_LOCAL_CPUS:-$(nproc)}
  ((cpus >= 2)) || cpus=2
  mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  ports=${SLURM_LOCAL_PORTS:-$(free_ports)}
  read -r ctld_port slurmd_port <<<"$ports"
  [[ "$ctld_port" =~ ^[0-9]+$ && "$slurmd_port" =~ ^[0-9]+$ ]] || die "SLURM_LOCAL_PORTS must be two port numbers, got '$ports'"

  # munge: a fresh key and a socket of this cluster's own.
  local socket="$dir/munge/munge.socket"
  head -c 1024 /dev/urandom >"$dir/munge/munge.key"
  chmod 0400 "$dir/munge/munge.key"
  start_daemon munged "$dir/munge/munged.out" munged --foreground --force --socket="$socket" \
    --key-file="$dir/munge/munge.key" --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
    --seed-file="$dir/munge/munged.seed"
  wait_for 15 munged "$dir/munge/munged.log" bash -c "munge --socket='$socket' -n | unmunge --socket='$socket'"

  sed -e "s|@HOST@|$host|g" -e "s|@CPUS@|$cpus|g" -e "s|@MEMORY_MB@|$mem_mb|g" -e "s|@CTLD_PORT@|$ctld_port|g" \
    -e "s|@SLURMD_PORT@|$slurmd_port|g" -e "s|@MUNGE_SOCKET@|$socket|g" -e "s|@STATE@|$dir/state|g" \
    "$template" >"$dir/slurm.conf"
  cp "$gres" "$dir/gres.conf"  # slurmd reads it from the directory of slurm.conf
  export SLURM_CONF="$dir/slurm.conf"
  echo "export SLURM_CONF=$dir/slurm.conf" >"$dir/env"

  start_daemon slurmctld "$dir/state/slurmctld.out" slurmctld -D -c -f "$SLURM_CONF"
  wait_for 30 slurmctld "$dir/state/slurmctld.log" scontrol ping
  start_daemon slurmd "$dir/state/slurmd.out" slurmd -D -f "$SLURM_CONF"
  wait_for 30 "the node $host" "$dir/state/slurmd.log" bash -c "sinfo -h -n '$host' -o %t | grep -qx idle"
  say "cluster up: node $host, $cpus CPUs, ${mem_mb} MB, slurmctld port $ctld_port, slurmd port $slurmd_port"
  say "clients: source $dir/env   (export SLURM_CONF=$dir/slurm.conf)"
}

case "$action" in
  start) start_cluster ;;
  stop) stop_cluster ;;
  status) status_cluster ;;
  *) usage ;;
esac
