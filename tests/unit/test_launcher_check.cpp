// The launch check of MpiSession (src/dist/launcher.hpp): a process that srun started as one of N
// tasks must be one of N MPI ranks. The environments below are what each launcher was observed to
// leave in a rank's environment (Slurm 22.05, Open MPI 4.1.4, MPICH 4.0 hydra).
#include <gtest/gtest.h>

#include <cstdlib>

#include "dist/launcher.hpp"

namespace {

using upcycle::detail::LaunchEnvironment;
using upcycle::detail::launch_environment;
using upcycle::detail::slurm_launch_problem;
using upcycle::detail::srun_step_tasks;

// srun -n TASKS without an MPI plugin (MpiDefault=none): only Slurm's variables.
LaunchEnvironment bare_srun(const std::string& tasks) {
  return {{"SLURM_STEP_ID", "0"}, {"SLURM_STEP_NUM_TASKS", tasks}};
}

TEST(LauncherCheck, SrunWithoutMpiPluginIsRefusedWithTheFix) {
  const auto problem = slurm_launch_problem(bare_srun("2"), 1);
  ASSERT_TRUE(problem.has_value());
  EXPECT_NE(problem->find("srun started 2 tasks but this process is one of 1 MPI rank: srun is not starting MPI"),
            std::string::npos)
      << *problem;
  EXPECT_NE(problem->find("srun --mpi=pmix"), std::string::npos) << *problem;
  EXPECT_NE(problem->find("LAUNCHER=mpirun"), std::string::npos) << *problem;
  EXPECT_EQ(srun_step_tasks(bare_srun("2")), 2);
}

TEST(LauncherCheck, SrunWithPmixFormingOneWorldPasses) {
  LaunchEnvironment env = bare_srun("4");
  env["PMIX_RANK"] = "3";
  EXPECT_FALSE(slurm_launch_problem(env, 4).has_value());
  // The same step whose tasks formed smaller worlds is refused, naming both counts.
  const auto problem = slurm_launch_problem(env, 2);
  ASSERT_TRUE(problem.has_value());
  EXPECT_NE(problem->find("srun started 4 tasks but this process is one of 2 MPI ranks: srun's tasks do not form "
                          "one MPI world"),
            std::string::npos)
      << *problem;
}

TEST(LauncherCheck, OneTaskStepAndNoStepPass) {
  EXPECT_FALSE(slurm_launch_problem(bare_srun("1"), 1).has_value());  // srun -n 1, or srun --pty bash
  EXPECT_FALSE(slurm_launch_problem({}, 1).has_value());              // no Slurm at all
  EXPECT_FALSE(slurm_launch_problem({}, 8).has_value());              // plain mpirun
  // The batch shell of a job has no SLURM_STEP_ID: a program it runs directly is not an srun task.
  EXPECT_FALSE(slurm_launch_problem({{"SLURM_STEP_NUM_TASKS", "2"}}, 1).has_value());
  EXPECT_FALSE(slurm_launch_problem({{"SLURM_STEP_ID", "0"}}, 1).has_value());
}

TEST(LauncherCheck, MpirunUnderAnSrunStepIsNotJudgedByTheStep) {
  // mpirun run inside `srun -n 1` (like the ranks under an orted that srun started on another
  // node): they inherit the step's task count, 1, but are 2 ranks of mpirun's own world.
  LaunchEnvironment env = {{"SLURM_STEP_ID", "1"},
                           {"SLURM_STEP_NUM_TASKS", "1"},
                           {"PMIX_RANK", "0"},
                           {"OMPI_COMM_WORLD_SIZE", "2"},
                           {"OMPI_MCA_orte_hnp_uri", "572129280.0;tcp://192.0.2.2:38301"}};
  EXPECT_FALSE(srun_step_tasks(env).has_value());
  EXPECT_FALSE(slurm_launch_problem(env, 2).has_value());
  // Either of Open MPI's variables alone marks mpirun; without both the same numbers are refused.
  env.erase("OMPI_COMM_WORLD_SIZE");
  EXPECT_FALSE(slurm_launch_problem(env, 2).has_value());
  env.erase("OMPI_MCA_orte_hnp_uri");
  EXPECT_TRUE(slurm_launch_problem(env, 2).has_value());
}

TEST(LauncherCheck, HydraProxiesUnderSrunAreNotJudgedByTheStep) {
  LaunchEnvironment env = {{"SLURM_STEP_ID", "0"},
                           {"SLURM_STEP_NUM_TASKS", "1"},
                           {"PMI_SIZE", "2"},
                           {"MPI_LOCALNRANKS", "2"}};
  EXPECT_FALSE(slurm_launch_problem(env, 2).has_value());
  env.erase("MPI_LOCALNRANKS");
  EXPECT_TRUE(slurm_launch_problem(env, 2).has_value());
}

TEST(LauncherCheck, UnreadableTaskCountsAndHeterogeneousStepsAreNotJudged) {
  for (const char* tasks : {"", "two", "2x", "0", "-2", "99999999999"})
    EXPECT_FALSE(slurm_launch_problem(bare_srun(tasks), 1).has_value()) << "'" << tasks << "'";
  LaunchEnvironment het = bare_srun("2");
  het["SLURM_HET_SIZE"] = "2";
  EXPECT_FALSE(slurm_launch_problem(het, 1).has_value());
}

TEST(LauncherCheck, ReadsThisProcessEnvironment) {
  ::setenv("SLURM_STEP_NUM_TASKS", "3", 1);
  ::setenv("SLURM_STEP_ID", "7", 1);
  LaunchEnvironment env = launch_environment();
  EXPECT_EQ(env.at("SLURM_STEP_NUM_TASKS"), "3");
  EXPECT_EQ(env.at("SLURM_STEP_ID"), "7");
  EXPECT_EQ(srun_step_tasks(env), 3);
  ::unsetenv("SLURM_STEP_NUM_TASKS");
  ::unsetenv("SLURM_STEP_ID");
  env = launch_environment();
  EXPECT_EQ(env.count("SLURM_STEP_NUM_TASKS"), 0u);
  EXPECT_EQ(env.count("SLURM_STEP_ID"), 0u);
}

}  // namespace
