#pragma once
// The JSON of upcycle_inspect's --json views. JSON has no NaN or Infinity, so a non-finite number is
// written as null (the text views print nan / inf instead); finite doubles are written with 17
// significant digits, so a reader gets back the double the tool computed.
#include <cstdint>
#include <string>
#include <vector>

namespace upcycle::inspect {

std::string json_number(double v);
std::string json_number(std::int64_t v);
std::string json_string(const std::string& s);
std::string json_array(const std::vector<double>& values);
std::string json_array(const std::vector<std::int64_t>& values);
std::string json_string_array(const std::vector<std::string>& values);
// Items that are JSON already (objects, arrays).
std::string json_raw_array(const std::vector<std::string>& items);

// One JSON object, its fields in the order they were added.
class Json {
 public:
  Json& add(const std::string& key, double value);
  Json& add(const std::string& key, std::int64_t value);
  Json& add(const std::string& key, int value) { return add(key, static_cast<std::int64_t>(value)); }
  Json& add(const std::string& key, bool value);
  Json& add(const std::string& key, const std::string& value);
  Json& add(const std::string& key, const char* value) { return add(key, std::string(value)); }
  Json& add_null(const std::string& key);
  Json& add_raw(const std::string& key, const std::string& json);  // a nested object or array
  std::string str() const { return "{" + body_ + "}"; }

 private:
  std::string body_;
};

}  // namespace upcycle::inspect
