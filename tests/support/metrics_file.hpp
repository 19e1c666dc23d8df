#pragma once
// Reading back what a run wrote to <run dir>/metrics.jsonl, for tests.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace upcycle::testing {

// The "grad_norm" of every train event of <dir>/metrics.jsonl (the global norm before clipping).
inline std::vector<double> logged_grad_norms(const std::filesystem::path& dir) {
  std::vector<double> out;
  std::ifstream in(dir / "metrics.jsonl");
  std::string line;
  const std::string key = "\"grad_norm\":";
  while (std::getline(in, line)) {
    const auto at = line.find(key);
    if (at != std::string::npos) out.push_back(std::strtod(line.c_str() + at + key.size(), nullptr));
  }
  return out;
}

}  // namespace upcycle::testing
