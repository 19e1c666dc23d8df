#pragma once
// Who owns a run directory (docs/training.md "Run directory"): one run at a time holds
// <run.dir>/.upcycle.lock; a fresh run never mixes its files with another config's run or
// overwrites newer checkpoints with older steps; temporaries of killed saves are removed; and
// config.ini is written only once a stage has loaded its inputs, so a run that fails at start
// leaves the description of the directory's checkpoints as it was.
#include <memory>
#include <string>
#include <vector>

#include "upcycle/io/config.hpp"
#include "upcycle/train/run_directory_lock.hpp"

namespace upcycle {

// Removes what killed saves leave behind: the hidden `.<name>.tmp-<pid>` files and links of
// checkpoint writes anywhere under <dir>/checkpoints, and `<name>.json.tmp` and
// `config.ini.tmp.<pid>` in <dir>. Returns how many were removed. Call only while holding the lock.
std::size_t remove_leftover_temporaries(const std::string& dir);

// The keys whose values differ between two configs of one run directory, as
// "key (there: A, here: B)", in schema order. Keys that do not change what a run computes or
// where it starts are ignored: log.*, run.overwrite, checkpoint.resume, parallel.*, run.threads.
std::vector<std::string> differing_run_config_keys(const Config& existing, const Config& wanted);

// What rank 0 does before anything of a run is written: creates run.dir, takes its lock, removes
// leftover temporaries (logging how many) and, for a fresh run (checkpoint.resume empty), checks
// that the directory holds no other run: a config.ini of another config, or checkpoints (*.h5
// under checkpoints/) of this one, are a UsageError that says what differs or how far the
// checkpoints go, and how to go on (another run.dir, a resume, or run.overwrite = true).
// run.overwrite = true removes the earlier run's files first (logged). A run of stage eval alone
// reads the directory's checkpoints and writes none, so it is not refused for holding them.
// Returns the lock, to be held until the run ends.
std::unique_ptr<RunDirectoryLock> prepare_run_directory(const Config& cfg);

// Writes <run.dir>/config.ini atomically the first time it is called in this process (later
// calls do nothing). Call on rank 0 once a stage has its inputs loaded.
void record_run_config(const Config& cfg);

}  // namespace upcycle
