#include "upcycle/io/metrics_history.hpp"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <vector>

#include "upcycle/core/error.hpp"

namespace upcycle {

namespace {

// The value of a top-level "key": ... written by JsonObject ("key": "text" or "key": 123). Lines are
// this program's own output, so the first occurrence of the quoted key is the top-level one: the
// stage and step fields come before any nested object in every event.
bool find_field(const std::string& line, const std::string& key, std::string& value) {
  const std::string needle = "\"" + key + "\": ";
  const std::size_t at = line.find(needle);
  if (at == std::string::npos) return false;
  std::size_t i = at + needle.size();
  if (i < line.size() && line[i] == '"') {
    const std::size_t end = line.find('"', i + 1);
    if (end == std::string::npos) return false;
    value = line.substr(i + 1, end - i - 1);
    return true;
  }
  std::size_t end = i;
  while (end < line.size() && (line[end] == '-' || (line[end] >= '0' && line[end] <= '9'))) ++end;
  if (end == i) return false;
  value = line.substr(i, end - i);
  return true;
}

}  // namespace

std::int64_t cut_metrics_after(const std::string& path, const std::string& stage, std::int64_t after_step) {
  std::ifstream in(path);
  if (!in) return 0;
  std::vector<std::string> lines;
  std::size_t cut = std::string::npos;
  for (std::string line; std::getline(in, line);) {
    if (cut == std::string::npos) {
      std::string s, step;
      if (find_field(line, "stage", s) && s == stage &&
          (after_step < 0 || (find_field(line, "step", step) && std::atoll(step.c_str()) > after_step)))
        cut = lines.size();
    }
    lines.push_back(std::move(line));
  }
  in.close();
  if (cut == std::string::npos) return 0;
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    for (std::size_t i = 0; i < cut; ++i) out << lines[i] << '\n';
    out.flush();
    if (!out.good()) UPCYCLE_THROW(tmp, ": cannot write (rewriting ", path, " for a restart of stage ", stage, ")");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) UPCYCLE_THROW("cannot rename ", tmp, " to ", path);
  return static_cast<std::int64_t>(lines.size() - cut);
}

}  // namespace upcycle
