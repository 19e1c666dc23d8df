# shellcheck shell=bash
# shellcheck disable=SC2154,SC2034  # variables set by the batch script, and set here for it
# What slurm/upcycle.sbatch (CPU nodes) and slurm/upcycle_gpu.sbatch (GPU nodes) share: sourced by
# them, not run. A batch script sets `script` (its name, for messages) and `root` (the repository),
# sources this file, and calls
#   job_layout                                     nodes, tasks per node, CPUs per task, GPUs
#   job_prepare CONFIG [--section.key=value ...]  checks, run directory, checkpoint.resume default
#   job_launcher                                   builds `launch` for srun or mpirun
#   job_run                                        runs the ranks; requeues, or exits with their status
# with `variant_defaults` (overrides put before the user's), `srun_options` and `mpirun_options`
# (the variant's own launch options) set in between. The statuses and signals are described in the
# scripts' headers and README.md "Slurm".

say() { echo "$script: $*"; }
die() {
  local code=$1
  shift
  echo "$script: $*" >&2
  exit "$code"
}

# The value of `section.key` in the resolved config (upcycle_train --print-config).
ini_value() {
  sed -n "/^\[$1\]/,/^\[/{s/^$2 = //p}" <<<"$resolved" | head -n 1
}

# Sets nodes, tasks_per_node, ntasks, cpus_per_task and gpus_per_node from the allocation; the
# ranks are nodes x tasks per node, so a job given --ntasks that does not fill its nodes evenly
# is refused.
job_layout() {
  count_of() { # "8", "h200:8" or "8(x2)" -> 8
    local v=${1##*:}
    echo "${v%%(*}"
  }
  nodes=${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}
  tasks_per_node=$(count_of "${SLURM_NTASKS_PER_NODE:-${SLURM_TASKS_PER_NODE:-1}}")
  gpus_per_node=$(count_of "${SLURM_GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-0}}")
  ntasks=${SLURM_NTASKS:-$((nodes * tasks_per_node))}
  cpus_per_task=${SLURM_CPUS_PER_TASK:-1}
  local v
  for v in nodes tasks_per_node gpus_per_node ntasks cpus_per_task; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die 2 "cannot read the layout from Slurm: $v = '${!v}'"
  done
  if ((ntasks != nodes * tasks_per_node)); then
    die 2 "layout mismatch: SLURM_NTASKS = $ntasks but $nodes node(s) x $tasks_per_node task(s) per node = $((nodes * tasks_per_node)); submit with --nodes and --ntasks-per-node (no --ntasks)"
  fi
}

# Sets config, user_overrides, bin, launcher, max_requeues, job_id, restarts, run_dir, resume and
# resolved; fails with 2 on a usage or config error, 1 when the program is missing.
job_prepare() {
  [[ $# -ge 1 ]] || die 2 "usage: sbatch [options] slurm/$script CONFIG.ini [--section.key=value ...]"
  config=$1
  shift
  user_overrides=("$@")
  submit_dir=${SLURM_SUBMIT_DIR:-$PWD}
  cd "$submit_dir" || die 1 "cannot enter the submit directory $submit_dir"
  bin=${UPCYCLE_BIN:-$root/build/src/upcycle_train}
  [[ -x "$bin" ]] || die 1 "$bin not found or not executable: build first (launch/setup.sh) or set UPCYCLE_BIN"
  [[ -f "$config" ]] || die 2 "config '$config' not found (a relative path is relative to the submit directory $submit_dir)"
  launcher=${LAUNCHER:-srun}
  [[ "$launcher" == srun || "$launcher" == mpirun ]] || die 2 "LAUNCHER must be srun or mpirun, got '$launcher'"
  max_requeues=${MAX_REQUEUES:-20}
  [[ "$max_requeues" =~ ^[0-9]+$ ]] || die 2 "MAX_REQUEUES must be a non-negative integer, got '$max_requeues'"
  job_id=${SLURM_JOB_ID:-local-$$}
  restarts=${SLURM_RESTART_COUNT:-0}

  # The run directory is runs/<job id> under the submit directory unless the command line names
  # one; a requeued job keeps its id, hence its directory.
  resolved=$("$bin" "$config" "${variant_defaults[@]}" "--run.dir=$submit_dir/runs/$job_id" "${user_overrides[@]}" \
    --print-config) || die 2 "the config does not resolve (upcycle_train --print-config failed; its message is above)"
  run_dir=$(ini_value run dir)
  [[ -n "$run_dir" ]] || die 2 "run.dir is empty"
  [[ "$run_dir" == /* ]] || run_dir="$submit_dir/$run_dir"
  # The first attempt of a job finds its default directory empty; one with files belongs to an
  # earlier job of the same id (the cluster's job ids started again) and must not be resumed.
  local named=0 a
  for a in "${user_overrides[@]}"; do [[ "$a" == --run.dir=* ]] && named=1; done
  if ((restarts == 0 && !named)) && [[ -d "$run_dir" && -n "$(ls -A "$run_dir")" ]]; then
    die 2 "$run_dir already holds files of an earlier job $job_id: move it away, or pass --run.dir=$run_dir to continue that run"
  fi
  # checkpoint.resume = auto: each training stage continues from its newest checkpoint in the run
  # directory and starts fresh without one, so a first attempt and a requeued one run the same
  # command. A value from the config or the command line wins.
  resume=()
  local chosen
  chosen=$(ini_value checkpoint resume)
  if [[ -z "$chosen" ]]; then
    resume=(--checkpoint.resume=auto)
  elif [[ "$chosen" != auto ]]; then
    say "checkpoint.resume = $chosen (config or command line): every attempt of this job starts from it, a requeued one too; auto would continue from the run's own checkpoints"
  fi
}

# Sets `launch`: srun with Slurm's PMIx plugin, or Open MPI's mpirun on the allocated nodes.
job_launcher() {
  if [[ "$launcher" == srun ]]; then
    # --mpi=pmix whatever the site's MpiDefault: Debian's Open MPI 4.1 starts under srun's PMIx
    # plugin, not under pmi2, and srun without a plugin starts independent single-rank copies
    # (upcycle_train refuses to train as one: exit 1, "srun started N tasks but ...").
    # --kill-on-bad-exit ends all ranks when one fails instead of leaving them in a collective.
    local plugins
    plugins=$(srun --mpi=list 2>&1 || true)
    grep -qw pmix <<<"$plugins" ||
      die 1 "this srun has no pmix plugin (srun --mpi=list): submit with LAUNCHER=mpirun to start the ranks with Open MPI's mpirun"
    launch=(srun --mpi=pmix --kill-on-bad-exit=1 "${srun_options[@]}")
  else
    command -v mpirun >/dev/null || die 1 "LAUNCHER=mpirun but mpirun is not on the PATH"
    command -v scontrol >/dev/null || die 1 "LAUNCHER=mpirun needs scontrol to list the nodes"
    hostfile="$run_dir/.hosts.$job_id"
    mkdir -p "$run_dir"
    scontrol show hostnames "${SLURM_JOB_NODELIST:?LAUNCHER=mpirun runs inside a Slurm job}" |
      sed "s/\$/ slots=$tasks_per_node/" >"$hostfile"
    # Open MPI passes a rank only the variables named with -x; it refuses root unless told twice.
    local forward=(-x OMP_NUM_THREADS -x OMP_PROC_BIND -x OMP_PLACES -x PATH)
    [[ -n "${LD_LIBRARY_PATH:-}" ]] && forward+=(-x LD_LIBRARY_PATH)
    if [[ $(id -u) -eq 0 ]]; then
      export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    fi
    launch=(mpirun -np "$ntasks" --hostfile "$hostfile" --map-by "ppr:$tasks_per_node:node:PE=$cpus_per_task"
      --bind-to core "${forward[@]}" "${mpirun_options[@]}")
  fi
}

# The stop requests this shell sees. Under srun the ranks get the time-limit warning (SIGUSR1,
# --signal without B:) from Slurm themselves and this shell sees nothing; SIGTERM (scancel,
# preemption, the time limit itself) reaches this shell, srun and the ranks alike, and srun waits
# for the ranks to end. Under mpirun this shell gets the warning (--signal=B:USR1@...) and
# forwards it; mpirun ends its ranks itself on SIGTERM (see the scripts' headers).
stop_signal=""
requeueing=0
launch_pid=""
# shellcheck disable=SC2317  # called by the traps
on_signal() {
  ((requeueing)) && return 0  # `scontrol requeue` ends this shell with SIGTERM: expected
  stop_signal=$1
  if [[ "$1" == TERM && "$launcher" == mpirun ]]; then
    say "SIGTERM: mpirun ends the ranks itself (SIGTERM, SIGKILL a second later); they keep a checkpoint only if their step and its write fit in that second"
  else
    say "SIG$1: the ranks finish their step, save a checkpoint and stop"
  fi
  # A SIGUSR1 for this shell (--signal=B:USR1@..., scancel --batch --signal=USR1) goes on to the
  # launcher: srun and mpirun both forward it to the ranks.
  if [[ "$1" == USR1 && -n "$launch_pid" ]]; then
    kill -USR1 "$launch_pid" 2>/dev/null || true
  fi
}

job_requeue() {
  if [[ "$job_id" == local-* ]]; then
    say "not under Slurm: no requeue; run the same command again to continue"
  elif ((restarts >= max_requeues)); then
    say "requeued $restarts time(s) already (MAX_REQUEUES = $max_requeues): not requeueing; resubmit with --run.dir=$run_dir to continue"
  else
    say "requeueing job $job_id: attempt $((restarts + 2)) continues from the checkpoints in $run_dir (Slurm holds a requeued job for about 2 minutes before it may start again)"
    requeueing=1
    scontrol requeue "$job_id" || {
      requeueing=0
      say "scontrol requeue failed (was the job submitted with --no-requeue?): resubmit with --run.dir=$run_dir to continue"
    }
  fi
}

job_run() {
  args=("$config" "${variant_defaults[@]}" "${resume[@]}" "${user_overrides[@]}" "--run.dir=$run_dir")
  trap 'on_signal TERM' TERM
  trap 'on_signal USR1' USR1
  say "attempt $((restarts + 1)): ${launch[*]} $bin ${args[*]}"
  local program=("$bin")
  if [[ "$launcher" == srun ]]; then
    # srun exits 0 when its step fails to launch ("task N launch failed", e.g. a step of the same
    # id still ending on a node), so each task leaves a mark before it becomes upcycle_train
    # (exec: same process, same signals, same exit status) and the marks are counted below.
    started="$run_dir/.tasks-started"
    rm -rf "$started"
    mkdir -p "$started"
    # shellcheck disable=SC2016  # expanded by each task's shell
    program=(bash -c ': >"$0/${SLURM_PROCID:-0}" && exec "$@"' "$started" "$bin")
  fi
  "${launch[@]}" "${program[@]}" "${args[@]}" &
  launch_pid=$!
  # A trapped signal interrupts `wait` (status > 128) while the ranks go on: wait again while the
  # launcher runs, then collect its status (127: the last wait in the loop collected it already).
  local status=0 rc=0
  while kill -0 "$launch_pid" 2>/dev/null; do
    wait "$launch_pid" && status=0 || status=$?
  done
  wait "$launch_pid" || rc=$?
  ((rc == 127)) || status=$rc
  [[ -z "${hostfile:-}" ]] || rm -f "$hostfile"
  if [[ -n "${started:-}" ]]; then
    local count
    count=$(find "$started" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    rm -rf "$started"
    if ((status == 0 && count != ntasks)); then
      say "srun exited 0 but only $count of $ntasks task(s) started: the step did not launch (srun's messages above); exit 1"
      exit 1
    fi
  fi

  case $status in
    0)
      if [[ -x /usr/bin/python3 ]]; then
        /usr/bin/python3 "$root/launch/plot_metrics.py" "$run_dir" >/dev/null || say "plotting failed (the run is fine)"
      fi
      say "done: exit 0, outputs in $run_dir"
      ;;
    75)
      # Stopped on request with a checkpoint at the step where it stopped.
      if [[ "$stop_signal" == TERM ]]; then
        say "stopped on SIGTERM (scancel, preemption or the time limit) with a checkpoint in $run_dir/checkpoints: not requeued by this script; resubmit with --run.dir=$run_dir to continue"
      else
        job_requeue
      fi
      ;;
    1)
      if [[ "$stop_signal" == TERM && "$launcher" == mpirun ]]; then
        say "mpirun ended the ranks on SIGTERM (exit 1); a resubmission with --run.dir=$run_dir continues from the newest checkpoint there (under mpirun, stop with scancel --batch --signal=USR1 to get one at the current step)"
      else
        say "upcycle_train failed at run time (exit 1; its message is above)"
      fi
      ;;
    2) say "upcycle_train refused the command line or the config (exit 2; its message is above)" ;;
    *)
      if ((status > 128)); then
        say "the ranks ended by signal $((status - 128)) (exit $status) before they could stop on their own; the newest checkpoint in $run_dir/checkpoints is where a resubmission continues"
      else
        say "exit $status"
      fi
      ;;
  esac
  exit "$status"
}
