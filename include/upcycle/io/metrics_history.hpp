#pragma once
// Keeping metrics.jsonl one line per step across restarts. A run killed at step 150 after its
// checkpoint of step 100 logged steps 101..150; the resumed run logs them again. Before a stage
// (re)starts, the killed run's tail is cut, so that a plot or any reader sees each step once.
#include <cstdint>
#include <string>

namespace upcycle {

// Cuts `path` (a metrics.jsonl written by MetricsWriter) before its first line whose "stage" is
// `stage` and whose "step" is greater than `after_step` (after_step < 0: the first line of the
// stage at all), and everything after it: those lines were written by a run that went past the
// point the stage restarts from. Rewrites the file atomically (a temporary file and a rename).
// Returns the number of lines removed (0: the file is left as it is; a missing file is 0).
std::int64_t cut_metrics_after(const std::string& path, const std::string& stage, std::int64_t after_step);

}  // namespace upcycle
