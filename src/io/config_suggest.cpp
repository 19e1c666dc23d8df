// "Did you mean ...?": the nearest valid name for a misspelt key, section or value.
#include <algorithm>

#include "config_internal.hpp"

namespace upcycle::detail {

namespace {

// Optimal string alignment distance: Levenshtein plus adjacent transpositions, the commonest typo.
std::size_t edit_distance(const std::string& a, const std::string& b) {
  const std::size_t n = a.size(), m = b.size();
  std::vector<std::vector<std::size_t>> d(n + 1, std::vector<std::size_t>(m + 1));
  for (std::size_t i = 0; i <= n; ++i) d[i][0] = i;
  for (std::size_t j = 0; j <= m; ++j) d[0][j] = j;
  for (std::size_t i = 1; i <= n; ++i) {
    for (std::size_t j = 1; j <= m; ++j) {
      const std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[n][m];
}

std::vector<std::string> all_key_names() {
  std::vector<std::string> names;
  for (const auto& k : config_schema()) names.push_back(k.full_name());
  return names;
}

// The schema key the user most likely meant by `name` ("section.key" or a bare "key").
std::string suggest_key(const std::string& name) {
  const auto dot = name.find('.');
  const std::string bare = dot == std::string::npos ? name : name.substr(dot + 1);
  // The right key under the wrong section ("[train] top_k") is a likelier slip than a typo.
  std::vector<std::string> same_bare;
  for (const auto& k : config_schema()) {
    if (bare == k.name) same_bare.push_back(k.full_name());
  }
  if (!same_bare.empty()) {
    const std::string near = closest_match(name, same_bare);
    return near.empty() ? same_bare.front() : near;
  }
  return closest_match(name, all_key_names());
}

}  // namespace

std::string closest_match(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  std::size_t best_d = std::max<std::size_t>(1, word.size() / 3) + 1;  // farther than this is not a typo
  for (const auto& c : candidates) {
    const std::size_t d = edit_distance(word, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  return best;
}

std::string unknown_key_message(const std::string& name) {
  const std::string near = suggest_key(name);
  const std::string hint = near.empty() ? "" : "; did you mean '" + near + "'?";
  const auto dot = name.find('.');
  if (dot == std::string::npos) {
    return "key '" + name + "' has no [section]" + hint;
  }
  const std::string section = name.substr(0, dot);
  std::vector<std::string> sections;
  for (const auto& s : config_sections()) sections.emplace_back(s.name);
  if (std::find(sections.begin(), sections.end(), section) == sections.end()) {
    std::string msg = "unknown section [" + section + "] (key '" + name + "')";
    if (!near.empty()) return msg + hint;
    const std::string near_section = closest_match(section, sections);
    if (!near_section.empty()) return msg + "; did you mean [" + near_section + "]?";
    msg += "; sections are:";
    for (const auto& s : sections) msg += " [" + s + "]";
    return msg;
  }
  std::string msg = "unknown key '" + name + "'";
  if (!near.empty()) return msg + hint;
  msg += "; keys in [" + section + "] are:";
  for (const auto& k : config_schema()) {
    if (section == k.section) msg += std::string(" ") + k.name;
  }
  return msg;
}

}  // namespace upcycle::detail
