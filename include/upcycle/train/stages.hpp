#pragma once
// The stages of upcycle_train ([run] stages chains them): one table maps each stage name to the
// function that runs it.
#include <memory>
#include <string>
#include <vector>

#include "upcycle/dist/communicator.hpp"
#include "upcycle/io/config.hpp"

namespace upcycle {

// Throws UsageError when cfg asks for what this build cannot run (a stage or a value of a key that
// is not built yet), before anything runs or is written.
void check_stages_runnable(const Config& cfg);

// Runs cfg's run.stages in order (collective over `world`). Throws UsageError for a stage this
// build cannot run, Error for run-time failures.
void run_stages(const Config& cfg, std::shared_ptr<Communicator> world);

// Names of the stages this build can run.
std::vector<std::string> available_stages();

}  // namespace upcycle
