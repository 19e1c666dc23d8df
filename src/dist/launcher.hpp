#pragma once
// What the launcher tells a process through its environment. Open MPI's mpirun sets
// OMPI_COMM_WORLD_*, MPICH's hydra and Slurm's PMI/PMI2 set PMI_*, PMIx launchers (srun
// --mpi=pmix, Open MPI 5) set PMIX_RANK. Deciding from the environment lets one binary run
// plainly as a single process, where initialising MPI would be slow or impossible.
#include <cstdlib>
#include <map>
#include <optional>
#include <string>

namespace upcycle::detail {

inline bool started_by_mpi_launcher() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMI_SIZE") || std::getenv("PMIX_RANK");
}

// The number of ranks the launcher announced, or 1 where it announces none.
inline int announced_world_size() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {
    if (const char* value = std::getenv(name)) return std::atoi(value);
  }
  return 1;
}

// --- Is this process one of the tasks srun started, and do they form one MPI world? ---------
//
// srun without an MPI plugin (a site's MpiDefault=none, or a plugin the MPI library cannot use)
// starts N independent processes; each finds no launcher, runs as a world of one and trains
// the whole job alone into the same run directory. The step's task count against the MPI world
// size tells that apart. What each launcher leaves in a rank's environment, as observed with
// Slurm 22.05, Open MPI 4.1.4 and MPICH 4.0 (hydra):
//   srun --mpi=pmix       SLURM_STEP_ID, SLURM_STEP_NUM_TASKS = N, PMIX_RANK; world = N
//   srun (mpi/none)       SLURM_STEP_ID, SLURM_STEP_NUM_TASKS = N, nothing of MPI; world = 1
//   srun --mpi=pmi2       SLURM_STEP_*, PMI_SIZE, PMI_RANK (Debian's Open MPI fails in MPI_Init)
//   mpirun in a job       the batch shell has no SLURM_STEP_ID, so ranks on its node have none;
//                         ranks under an orted that srun started (other nodes, or mpirun run
//                         inside an srun step) inherit that step's SLURM_STEP_NUM_TASKS = number
//                         of daemons, plus OMPI_COMM_WORLD_SIZE and OMPI_MCA_orte_hnp_uri
//   mpiexec.hydra         proxies started by srun: SLURM_STEP_NUM_TASKS = number of proxies,
//                         plus PMI_SIZE and MPI_LOCALNRANKS
// So the check applies where SLURM_STEP_ID and SLURM_STEP_NUM_TASKS are set and no launcher of
// its own sits between srun and the process.

// The environment variables the launch check reads (absent = unset).
using LaunchEnvironment = std::map<std::string, std::string>;

inline const char* const kLaunchVariables[] = {
    "SLURM_STEP_ID",        "SLURM_STEP_NUM_TASKS", "SLURM_HET_SIZE", "OMPI_COMM_WORLD_SIZE",
    "OMPI_MCA_orte_hnp_uri", "MPI_LOCALNRANKS",     "PMIX_RANK",      "PMI_SIZE",
};

// Those variables of this process.
inline LaunchEnvironment launch_environment() {
  LaunchEnvironment env;
  for (const char* name : kLaunchVariables) {
    if (const char* value = std::getenv(name)) env[name] = value;
  }
  return env;
}

// The number of tasks of the Slurm step when srun itself started this process, else nullopt:
// not in a step, or started by a launcher of its own (Open MPI's mpirun, MPICH's hydra) whose
// daemons or proxies are the step's tasks. A heterogeneous job is not judged: its step is made
// of components whose task counts Slurm reports per component.
inline std::optional<int> srun_step_tasks(const LaunchEnvironment& env) {
  const auto has = [&](const char* name) { return env.count(name) > 0; };
  if (!has("SLURM_STEP_ID") || !has("SLURM_STEP_NUM_TASKS")) return std::nullopt;
  if (has("OMPI_COMM_WORLD_SIZE") || has("OMPI_MCA_orte_hnp_uri") || has("MPI_LOCALNRANKS")) return std::nullopt;
  if (has("SLURM_HET_SIZE")) return std::nullopt;
  const std::string& text = env.at("SLURM_STEP_NUM_TASKS");
  char* end = nullptr;
  const long tasks = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || tasks < 1 || tasks > 1000000000L) return std::nullopt;
  return static_cast<int>(tasks);
}

// The error for a process that srun started as one of N tasks but that is one of `world_size`
// MPI ranks (1 when MPI was not started), N != world_size; nullopt when they agree or when the
// process is not an srun task (srun_step_tasks).
inline std::optional<std::string> slurm_launch_problem(const LaunchEnvironment& env, int world_size) {
  const std::optional<int> tasks = srun_step_tasks(env);
  if (!tasks || *tasks == world_size) return std::nullopt;
  const std::string ranks = std::to_string(world_size) + (world_size == 1 ? " MPI rank" : " MPI ranks");
  std::string what = "srun started " + std::to_string(*tasks) + " tasks but this process is one of " + ranks + ": ";
  what += world_size == 1 ? "srun is not starting MPI, so each task would train alone and all of them would write "
                            "the same run directory"
                          : "srun's tasks do not form one MPI world";
  return what +
         ". Use srun --mpi=pmix (Open MPI here starts under Slurm's PMIx plugin, not under pmi2; `srun --mpi=list` "
         "lists what the site has), set MpiDefault=pmix in slurm.conf, or start the ranks with mpirun inside the "
         "allocation (slurm/upcycle.sbatch: LAUNCHER=mpirun)";
}

}  // namespace upcycle::detail
