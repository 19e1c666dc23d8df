// The Config object: typed read access, and its INI form.
#include "upcycle/io/config.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <unistd.h>

#include "upcycle/core/error.hpp"

#include "config_internal.hpp"

namespace upcycle {

std::size_t Config::index(std::string_view key) const {
  const std::size_t i = config_key_index(std::string(key));
  if (i == kNoConfigKey) UPCYCLE_THROW("Config has no key '", key, "': ", detail::unknown_key_message(std::string(key)));
  return i;
}

// t2 lets one getter serve two key types (String and Enum both hold a string).
template <class T>
const T& Config::get(std::string_view key, const char* getter, ConfigType t1, ConfigType t2) const {
  const std::size_t i = index(key);
  const ConfigKey& k = config_schema()[i];
  if (k.type != t1 && k.type != t2) UPCYCLE_THROW("Config key '", key, "' is ", describe_type(k), ": ", getter, " cannot read it");
  return std::get<T>(values_[i]);
}

std::int64_t Config::get_int(std::string_view key) const {
  return get<std::int64_t>(key, "get_int", ConfigType::Int, ConfigType::Int);
}
double Config::get_float(std::string_view key) const { return get<double>(key, "get_float", ConfigType::Float, ConfigType::Float); }
bool Config::get_bool(std::string_view key) const { return get<bool>(key, "get_bool", ConfigType::Bool, ConfigType::Bool); }
const std::string& Config::get_string(std::string_view key) const {
  return get<std::string>(key, "get_string", ConfigType::String, ConfigType::Enum);
}
const std::vector<std::int64_t>& Config::get_int_list(std::string_view key) const {
  return get<std::vector<std::int64_t>>(key, "get_int_list", ConfigType::IntList, ConfigType::IntList);
}
const std::vector<double>& Config::get_float_list(std::string_view key) const {
  return get<std::vector<double>>(key, "get_float_list", ConfigType::FloatList, ConfigType::FloatList);
}
const std::vector<std::string>& Config::get_string_list(std::string_view key) const {
  return get<std::vector<std::string>>(key, "get_string_list", ConfigType::StringList, ConfigType::StringList);
}

const std::string& Config::origin(std::string_view key) const { return origins_[index(key)]; }

std::string Config::value_text(std::string_view key) const {
  const std::size_t i = index(key);
  return detail::format_config_value(config_schema()[i], values_[i]);
}

std::string Config::to_ini() const {
  // No origins or help comments: two equal configs must dump to the same text.
  std::string out = "# resolved upcycle config: every key, defaults included\n";
  const auto& keys = config_schema();
  for (const auto& section : config_sections()) {
    out += std::string("\n[") + section.name + "]\n";
    for (std::size_t i = 0; i < keys.size(); ++i) {
      if (std::string(keys[i].section) != section.name) continue;
      const std::string text = detail::format_config_value(keys[i], values_[i]);
      out += std::string(keys[i].name) + (text.empty() ? " =" : " = " + text) + "\n";
    }
  }
  return out;
}

void write_config_file(const Config& cfg, const std::string& path) {
  // The pid keeps ranks that share the run directory from writing one temporary file together.
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::trunc);
    if (!f) UPCYCLE_THROW("cannot write '", tmp, "': ", std::strerror(errno));
    f << cfg.to_ini();
    f.flush();
    if (!f) UPCYCLE_THROW("writing '", tmp, "' failed: ", std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    UPCYCLE_THROW("cannot rename '", tmp, "' to '", path, "': ", std::strerror(err));
  }
}

}  // namespace upcycle
