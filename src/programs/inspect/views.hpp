#pragma once
// The views of upcycle_inspect, one file each (docs/inspect.md). Each writes text, or one JSON
// document when `json` is set, to `out`, and throws Error naming the file when a checkpoint cannot
// be inspected; upcycle_inspect prints `out` only when the view completed.
#include <ostream>
#include <string>

namespace upcycle::inspect {

void summary_view(const std::string& path, bool json, std::ostream& out);   // summary_view.cpp
void config_view(const std::string& path, bool json, std::ostream& out);    // config_view.cpp
void tensors_view(const std::string& path, bool json, std::ostream& out);   // tensors_view.cpp
void experts_view(const std::string& path, bool json, std::ostream& out);   // experts_view.cpp
void diff_view(const std::string& a, const std::string& b, bool json, std::ostream& out);  // diff_view.cpp
// Returns whether the checkpoint is intact (verify_view.cpp).
bool verify_view(const std::string& path, bool json, std::ostream& out);

}  // namespace upcycle::inspect
